//! Fuzz target: `shell::shell_split` (`service create --entrypoint`, a compose `command: "…"`,
//! fleet's `ExecStart=`). Arbitrary text never panics and a refusal names the line; words quoted
//! the POSIX way split back to the same words.

use proptest::prelude::*;
use shoal_types::shell::{shell_split, TrailingBackslash};

fn quote(word: &str, style: u8) -> String {
    match style {
        // Single quotes keep everything but a single quote: close, escape it, reopen.
        0 => format!("'{}'", word.replace('\'', "'\\''")),
        // Double quotes: escape the four characters that a backslash escapes there.
        1 => {
            let mut out = String::from("\"");
            for c in word.chars() {
                if matches!(c, '"' | '\\' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            out
        }
        // No quotes: a backslash before every character.
        _ => {
            if word.is_empty() {
                return "''".into();
            }
            word.chars().flat_map(|c| ['\\', c]).collect()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(s in "\\PC{0,80}", quotes in "['\"\\\\ a]{0,24}") {
        for text in [s.as_str(), quotes.as_str(), &format!("{s}{quotes}")] {
            for t in [TrailingBackslash::Error, TrailingBackslash::Ignore] {
                match shell_split(text, t) {
                    Ok(words) => prop_assert!(words.iter().map(String::len).sum::<usize>() <= text.len()),
                    Err(e) => prop_assert!(e.contains(&format!("{text:?}")), "the error names the line: {}", e),
                }
            }
        }
    }

    #[test]
    fn quoted_words_split_back(
        words in prop::collection::vec(("\\PC{0,12}", 0u8..3), 0..8),
        sep in prop::sample::select(&[" ", "  ", "\t", " \n "][..]),
    ) {
        let line: Vec<String> = words.iter().map(|(w, style)| quote(w, *style)).collect();
        let line = line.join(sep);
        let want: Vec<String> = words.into_iter().map(|(w, _)| w).collect();
        prop_assert_eq!(shell_split(&line, TrailingBackslash::Error), Ok(want.clone()), "{:?}", line);
        prop_assert_eq!(shell_split(&line, TrailingBackslash::Ignore), Ok(want), "{:?}", line);
    }
}

#[test]
fn long_lines_are_bounded() {
    let open = "'".repeat(100_001);
    assert!(shell_split(&open, TrailingBackslash::Error).is_err());
    let words = "a ".repeat(100_000);
    assert_eq!(shell_split(&words, TrailingBackslash::Error).map(|w| w.len()), Ok(100_000));
    let escapes = "\\".repeat(200_001);
    assert!(shell_split(&escapes, TrailingBackslash::Error).is_err());
    assert!(shell_split(&escapes, TrailingBackslash::Ignore).is_ok());
}
