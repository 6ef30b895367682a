//! Docker's `filters` query parameter: JSON `{"key": {"value": true}}` (or the older
//! `{"key": ["value"]}`), and its boolean query values.

use crate::error::{DockerError, DockerResult};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub(crate) struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// The `filters` parameter of `q`, checked against the keys the endpoint accepts.
    pub fn from_query(q: &HashMap<String, String>, accepted: &[&str]) -> DockerResult<Filters> {
        let f = match q.get("filters").map(String::as_str) {
            None | Some("") => Filters::default(),
            Some(raw) => Filters::parse(raw)?,
        };
        if let Some(k) = f.0.keys().find(|k| !accepted.contains(&k.as_str())) {
            return Err(DockerError::invalid(format!("invalid filter '{k}'")));
        }
        Ok(f)
    }

    fn parse(raw: &str) -> DockerResult<Filters> {
        let bad = |e: serde_json::Error| DockerError::invalid(format!("invalid filters {raw:?}: {e}"));
        let v: serde_json::Value = serde_json::from_str(raw).map_err(bad)?;
        let mut out = BTreeMap::new();
        let obj = v.as_object().ok_or_else(|| DockerError::invalid(format!("invalid filters {raw:?}")))?;
        for (k, vals) in obj {
            // A value of another type is refused (as Docker does), not dropped: a filter whose
            // values all vanished would match everything.
            let wrong =
                || DockerError::invalid(format!("invalid filters {raw:?}: {k} is not a list of strings"));
            let list: Vec<String> = match vals {
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter_map(|(v, on)| {
                        on.as_bool().map(|on| on.then(|| v.clone())).ok_or_else(wrong).transpose()
                    })
                    .collect::<DockerResult<_>>()?,
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(String::from).ok_or_else(wrong))
                    .collect::<DockerResult<_>>()?,
                _ => return Err(DockerError::invalid(format!("invalid filters {raw:?}: {k} is not a list"))),
            };
            out.insert(k.clone(), list);
        }
        Ok(Filters(out))
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// No values for `key`, or one that `f` accepts.
    pub fn any(&self, key: &str, f: impl Fn(&str) -> bool) -> bool {
        let v = self.get(key);
        v.is_empty() || v.iter().any(|x| f(x))
    }

    /// Docker's label filters: `key` (present) or `key=value` (equal), all of them.
    pub fn labels_match<'a>(&self, key: &str, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.get(key).iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels(k) == Some(v),
            None => labels(f).is_some(),
        })
    }
}

/// Docker's boolean query values: absent, "", "0", "no", "false" and "none" are false.
pub(crate) fn bool_param(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "no" | "false" | "none"))
}

#[cfg(test)]
#[path = "filters_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn q(f: &str) -> HashMap<String, String> {
        [("filters".to_string(), f.to_string())].into_iter().collect()
    }

    #[test]
    fn both_encodings_parse_and_unknown_keys_are_refused() {
        let f = Filters::from_query(
            &q(r#"{"service":{"web":true},"_up-to-date":{"true":true}}"#),
            &["service", "_up-to-date"],
        )
        .expect("parse");
        assert_eq!(f.get("service"), ["web"]);
        assert!(f.contains("_up-to-date"));
        let f = Filters::from_query(&q(r#"{"name":["a","b"]}"#), &["name"]).expect("legacy");
        assert_eq!(f.get("name"), ["a", "b"]);
        let e = Filters::from_query(&q(r#"{"color":{"red":true}}"#), &["name"]).expect_err("refused");
        assert_eq!(e.message, "invalid filter 'color'");
        assert!(Filters::from_query(&q("nope"), &["name"]).is_err());
    }

    #[test]
    fn labels_and_booleans() {
        let f = Filters::from_query(&q(r#"{"label":{"a":true,"b=2":true}}"#), &["label"]).expect("parse");
        let labels: BTreeMap<&str, &str> = [("a", "1"), ("b", "2")].into_iter().collect();
        assert!(f.labels_match("label", |k| labels.get(k).copied()));
        let other: BTreeMap<&str, &str> = [("a", "1"), ("b", "3")].into_iter().collect();
        assert!(!f.labels_match("label", |k| other.get(k).copied()));
        let m: HashMap<String, String> = [("force", "1"), ("a", "false"), ("b", "true")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(bool_param(&m, "force") && bool_param(&m, "b"));
        assert!(!bool_param(&m, "a") && !bool_param(&m, "missing"));
    }
}
