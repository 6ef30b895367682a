//! Fuzz target: placement constraints (`--constraint`, compose `placement.constraints`, fleet
//! `MachineMetadata=`). Arbitrary strings and mutated valid constraints never panic; every refusal
//! names the constraint; what parses prints back to text that parses to the same constraint, and
//! matching a parsed constraint against a node never panics.

use proptest::prelude::*;
use shoal_types::{Constraint, Node};

const SEEDS: &[&str] = &[
    "node.id==abc",
    "node.hostname != web1",
    "node.role==manager",
    "node.platform.os==linux",
    "node.platform.arch!=arm64",
    "node.labels.zone==a",
    "Node.Labels.Zone==a",
    "engine.labels.ssd==true",
    "node.labels.region in (us-east-1, US-West-1)",
    "node.labels.r in (a,b)",
];

const PIECES: &[&str] = &[
    "==",
    "!=",
    " in ",
    "(",
    ")",
    ",",
    " ",
    "node.",
    "labels.",
    "engine.",
    "=",
    "!",
    "\u{e9}",
    "\u{1f600}",
    "\0",
    "\n",
    "\t",
    "\u{200b}",
    "in",
    "node.labels.",
    "((",
    "))",
    ",,",
];

/// A valid constraint with random edits: truncation, byte-level edits at char boundaries,
/// inserted separators and unicode.
fn mutated() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SEEDS),
        prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(PIECES), 0u8..3), 0..4),
    )
        .prop_map(|(seed, edits)| {
            let mut s = seed.to_string();
            for (at, piece, how) in edits {
                let chars: Vec<char> = s.chars().collect();
                let i = at.index(chars.len() + 1);
                let (head, tail): (String, String) =
                    (chars[..i].iter().collect(), chars[i..].iter().collect());
                s = match how {
                    0 => format!("{head}{piece}{tail}"),
                    1 => head,
                    _ => format!("{head}{}", tail.chars().skip(1).collect::<String>()),
                };
            }
            s
        })
}

fn check(s: &str) {
    match s.parse::<Constraint>() {
        Ok(c) => {
            let printed = c.to_string();
            let again: Constraint = printed
                .parse()
                .unwrap_or_else(|e| panic!("{s:?} parsed, but its display {printed:?} does not: {e}"));
            assert_eq!(again, c, "{s:?} → {printed:?}");
            assert_eq!(again.to_string(), printed, "display is canonical");
            assert!(!c.value.is_empty());
            let mut n = Node::test("n1", "h1");
            n.spec.labels.insert("zone".into(), "a".into());
            let _ = c.matches(&n);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert!(msg.starts_with("constraint "), "the error names the constraint: {msg}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings(s in "\\PC{0,64}") {
        check(&s);
    }

    #[test]
    fn operator_soup(s in "[a-zA-Z. =!(),\u{e9}]{0,48}") {
        check(&s);
    }

    #[test]
    fn mutated_constraints(s in mutated()) {
        check(&s);
    }

    #[test]
    fn generated_constraints_round_trip(
        key in prop::sample::select(&["node.id", "node.hostname", "node.role", "node.platform.os",
            "node.platform.arch", "node.labels.", "engine.labels."][..]),
        label in "[A-Za-z0-9_.-]{1,12}",
        op in 0u8..3,
        values in prop::collection::vec("[A-Za-z0-9_.-]{1,8}", 1..4),
    ) {
        let key = if key.ends_with('.') { format!("{key}{label}") } else { key.to_string() };
        let s = match op {
            0 => format!("{key}=={}", values[0]),
            1 => format!("{key} != {}", values[0]),
            _ => format!("{key} in ({})", values.join(", ")),
        };
        let c: Constraint = s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"));
        check(&s);
        let joined = values.join(",");
        prop_assert_eq!(c.value, if op == 2 { joined } else { values[0].clone() });
    }
}

#[test]
fn huge_constraints_are_bounded() {
    let long = format!("node.labels.{}=={}", "k".repeat(100_000), "v".repeat(100_000));
    check(&long);
    let set = format!("node.labels.r in ({})", vec!["a"; 50_000].join(","));
    check(&set);
    check(&"==".repeat(10_000));
    check(&" in (".repeat(10_000));
}
