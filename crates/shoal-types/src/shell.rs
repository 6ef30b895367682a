//! Command lines split into words like a POSIX shell splits them: quotes and backslashes, no
//! expansion (`service create --entrypoint`, a compose file's `command: "…"`).

/// What a backslash at the very end of a command line makes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailingBackslash {
    /// The line is refused.
    Error,
    /// The backslash is dropped (the word it starts or ends is kept).
    Ignore,
}

/// Splits `s` into words: single quotes keep everything, double quotes keep all but `\"`, `\\`,
/// `\$` and `` \` ``, a backslash outside quotes keeps the next character. An unterminated quote
/// is an error, and so is a trailing backslash where `trailing` says so.
pub fn shell_split(s: &str, trailing: TrailingBackslash) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated single quote in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unterminated double quote in {s:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated double quote in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match (chars.next(), trailing) {
                    (Some(c), _) => cur.push(c),
                    (None, TrailingBackslash::Error) => return Err(format!("trailing backslash in {s:?}")),
                    (None, TrailingBackslash::Ignore) => {}
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_backslashes() {
        for t in [TrailingBackslash::Error, TrailingBackslash::Ignore] {
            assert_eq!(
                shell_split("a 'b c' \"d \\\"e\\\"\" f\\ g", t),
                Ok(vec!["a".into(), "b c".into(), "d \"e\"".into(), "f g".into()])
            );
            assert_eq!(shell_split("", t), Ok(vec![]));
            assert_eq!(shell_split("''", t), Ok(vec![String::new()]));
            assert!(shell_split("'open", t).is_err());
            assert!(shell_split("\"open", t).is_err());
        }
    }

    #[test]
    fn a_trailing_backslash_is_refused_or_dropped() {
        assert_eq!(
            shell_split("a b\\", TrailingBackslash::Error),
            Err("trailing backslash in \"a b\\\\\"".into())
        );
        assert_eq!(shell_split("a b\\", TrailingBackslash::Ignore), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(shell_split("a \\", TrailingBackslash::Ignore), Ok(vec!["a".into(), String::new()]));
    }
}
