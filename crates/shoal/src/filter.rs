//! `--filter KEY=VALUE` as docker takes it: values of one key are alternatives (any may match),
//! different keys must all match; a key the command does not know is refused with the keys it
//! does. Matching is docker's: `id` and `name` match a prefix, `label` matches a key (`label=k`)
//! or a key and value (`label=k=v`), the rest match exactly.

use anyhow::{bail, Result};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `--filter` values; `keys` are the ones this command knows.
    pub fn parse(args: &[String], keys: &[&str]) -> Result<Filters> {
        let mut f: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                bail!("bad format of filter {a:?} (expected name=value)");
            };
            if !keys.contains(&k) {
                bail!("invalid filter {k:?}: this command filters on {}", keys.join(", "));
            }
            f.entry(k.to_string()).or_default().push(v.to_string());
        }
        Ok(Filters(f))
    }

    /// The values given for `key` (empty when none).
    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// True when `key` was not given, or one of its values passes `ok`.
    pub fn any(&self, key: &str, ok: impl Fn(&str) -> bool) -> bool {
        self.0.get(key).is_none_or(|vs| vs.iter().any(|v| ok(v)))
    }

    /// `key` as a prefix of any of `candidates` (docker's id and name filters).
    pub fn prefix(&self, key: &str, candidates: &[&str]) -> bool {
        self.any(key, |v| candidates.iter().any(|c| c.starts_with(v)))
    }

    /// `key` exactly one of `candidates`.
    pub fn exact(&self, key: &str, candidates: &[&str]) -> bool {
        self.any(key, |v| candidates.contains(&v))
    }

    /// `key` (a label filter) matching `labels`: `k` (present) or `k=v`. Docker requires every
    /// label filter to match, not any.
    pub fn labels(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.values(key).iter().all(|v| match v.split_once('=') {
            Some((k, val)) => labels.get(k).is_some_and(|x| x == val),
            None => labels.contains_key(v.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(args: &[&str]) -> Filters {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Filters::parse(&args, &["id", "name", "label", "mode"]).expect("ok")
    }

    #[test]
    fn unknown_keys_and_bad_syntax_are_refused() {
        let e = Filters::parse(&["colour=red".into()], &["id", "name"]).expect_err("an error").to_string();
        assert!(e.contains("invalid filter \"colour\"") && e.contains("id, name"), "{e}");
        let e = Filters::parse(&["name".into()], &["name"]).expect_err("an error").to_string();
        assert!(e.contains("name=value"), "{e}");
    }

    #[test]
    fn one_keys_values_are_alternatives_keys_all_apply() {
        let x = f(&["name=we", "name=db", "mode=global"]);
        assert!(x.prefix("name", &["web"]) && x.prefix("name", &["db1"]) && !x.prefix("name", &["api"]));
        assert!(x.exact("mode", &["global"]) && !x.exact("mode", &["replicated"]));
        assert!(f(&[]).prefix("name", &["anything"]));
    }

    #[test]
    fn labels_by_key_or_key_and_value_all_required() {
        let labels =
            BTreeMap::from([("tier".to_string(), "web".to_string()), ("x".to_string(), String::new())]);
        assert!(f(&["label=tier"]).labels("label", &labels));
        assert!(f(&["label=tier=web", "label=x"]).labels("label", &labels));
        assert!(!f(&["label=tier=db"]).labels("label", &labels));
        assert!(!f(&["label=tier", "label=zone"]).labels("label", &labels));
    }
}
