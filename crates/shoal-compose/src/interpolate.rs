//! Variable interpolation in compose files, as the Compose specification defines it: `$VAR`,
//! `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset), `${VAR:?message}` and
//! `${VAR?message}` (required), `${VAR:+replacement}` and `${VAR+replacement}`, and `$$` for a
//! literal `$`. Defaults and replacements are interpolated too (`${A:-${B}}`). An unset variable
//! without a default becomes an empty string, with a warning (as compose does).

use std::collections::BTreeMap;

/// What interpolating one string found besides its result.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notes {
    /// Variables used without a value or a default.
    pub unset: Vec<String>,
}

/// Interpolates `s` with `env`; an error says what is wrong (a required variable, bad syntax).
pub fn interpolate(s: &str, env: &BTreeMap<String, String>, notes: &mut Notes) -> Result<String, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut p = Parser { chars: &chars, at: 0, env, notes, depth: 0 };
    let out = p.text(None)?;
    Ok(out)
}

struct Parser<'a> {
    chars: &'a [char],
    at: usize,
    env: &'a BTreeMap<String, String>,
    notes: &'a mut Notes,
    /// How many `${…}` enclose the text being read (bounded: each level is a stack frame).
    depth: usize,
}

/// The deepest nesting of `${A:-${B:-…}}` accepted.
const MAX_NESTING: usize = 32;

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    /// Text up to the end, or up to the `}` that closes the expression being read (`until`).
    fn text(&mut self, until: Option<char>) -> Result<String, String> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == until {
                return Ok(out);
            }
            self.at += 1;
            if c != '$' {
                out.push(c);
                continue;
            }
            match self.peek() {
                Some('$') => {
                    self.at += 1;
                    out.push('$');
                }
                Some('{') => {
                    self.at += 1;
                    out.push_str(&self.braced()?);
                }
                Some(c) if is_name_start(c) => {
                    let name = self.name();
                    out.push_str(&self.value_or_blank(&name));
                }
                // A lone `$` stays what it is.
                _ => out.push('$'),
            }
        }
        match until {
            Some(_) => {
                Err(format!("invalid interpolation format in {:?}: a ${{ is not closed", self.whole()))
            }
            None => Ok(out),
        }
    }

    fn whole(&self) -> String {
        self.chars.iter().collect()
    }

    fn name(&mut self) -> String {
        let start = self.at;
        while self.peek().is_some_and(is_name) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    fn value_or_blank(&mut self, name: &str) -> String {
        match self.env.get(name) {
            Some(v) => v.clone(),
            None => {
                if !self.notes.unset.iter().any(|n| n == name) {
                    self.notes.unset.push(name.to_string());
                }
                String::new()
            }
        }
    }

    /// After `${`: `NAME`, then `}` or an operator and a word, then `}`.
    fn braced(&mut self) -> Result<String, String> {
        let bad = |p: &Self| format!("invalid interpolation format in {:?}", p.whole());
        if !self.peek().is_some_and(is_name_start) {
            return Err(format!("{}: expected a variable name after ${{", bad(self)));
        }
        let name = self.name();
        let colon = self.peek() == Some(':');
        if colon {
            self.at += 1;
        }
        let op = match self.peek() {
            Some('}') if !colon => {
                self.at += 1;
                return Ok(self.value_or_blank(&name));
            }
            None => return Err(format!("{}: a ${{ is not closed", bad(self))),
            Some(c @ ('-' | '?' | '+')) => {
                self.at += 1;
                c
            }
            _ => return Err(format!("{}: unsupported modifier after ${{{name}", bad(self))),
        };
        if self.depth >= MAX_NESTING {
            return Err(format!("{}: nested deeper than {MAX_NESTING} levels", bad(self)));
        }
        self.depth += 1;
        let word = self.text(Some('}'));
        self.depth -= 1;
        let word = word?;
        self.at += 1; // the closing brace
        let value = self.env.get(&name);
        // With a colon an empty value counts as unset.
        let set = value.is_some_and(|v| !colon || !v.is_empty());
        Ok(match op {
            '-' if set => value.cloned().unwrap_or_default(),
            '-' => word,
            '+' if set => word,
            '+' => String::new(),
            _ if set => value.cloned().unwrap_or_default(),
            _ => {
                let why = if word.is_empty() { String::new() } else { format!(": {word}") };
                return Err(format!("required variable {name} is missing a value{why}"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("TAG", "1.2"), ("EMPTY", ""), ("PORT", "8080"), ("HOST", "db")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(s: &str) -> Result<(String, Vec<String>), String> {
        let mut notes = Notes::default();
        interpolate(s, &env(), &mut notes).map(|v| (v, notes.unset))
    }

    fn ok(s: &str) -> String {
        run(s).expect("interpolates").0
    }

    #[test]
    fn the_specifications_forms() {
        assert_eq!(ok("busybox:${TAG}"), "busybox:1.2");
        assert_eq!(ok("busybox:$TAG-x"), "busybox:1.2-x");
        assert_eq!(ok("${PORT}:80"), "8080:80");
        assert_eq!(ok("${NOPE:-9090}"), "9090");
        assert_eq!(ok("${EMPTY:-dflt}"), "dflt");
        assert_eq!(ok("${EMPTY-dflt}"), "", "without the colon, only unset counts");
        assert_eq!(ok("${NOPE-dflt}"), "dflt");
        assert_eq!(ok("${TAG:+on}/${NOPE:+on}/${EMPTY+on}"), "on//on");
        assert_eq!(ok("${NOPE:-${HOST}:${PORT}}"), "db:8080", "defaults are interpolated");
        assert_eq!(ok("${NOPE:-a-b c}"), "a-b c");
        assert_eq!(ok("cost $$5 and $${TAG}"), "cost $5 and ${TAG}");
        assert_eq!(ok("a $ b $1"), "a $ b $1", "a $ not followed by a name stays");
        assert_eq!(ok("no variables"), "no variables");
    }

    #[test]
    fn unset_variables_are_blank_and_noted_once() {
        assert_eq!(run("${A}-$A-${B}"), Ok(("--".to_string(), vec!["A".to_string(), "B".to_string()])));
        assert_eq!(run("${A:-x}"), Ok(("x".to_string(), vec![])));
    }

    #[test]
    fn required_variables_and_bad_syntax_are_errors() {
        assert_eq!(
            run("${NOPE:?set NOPE first}"),
            Err("required variable NOPE is missing a value: set NOPE first".into())
        );
        assert_eq!(run("${EMPTY:?}"), Err("required variable EMPTY is missing a value".into()));
        assert_eq!(ok("${EMPTY?}"), "");
        assert!(run("${TAG").expect_err("open").contains("is not closed"));
        assert!(run("${}").expect_err("no name").contains("expected a variable name"));
        assert!(run("${TAG/x/y}").expect_err("bash only").contains("unsupported modifier"));
    }
}
