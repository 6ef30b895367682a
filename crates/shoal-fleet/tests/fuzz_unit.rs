//! Fuzz target: fleet unit files as `shoal unit submit` receives them: `UnitFile::parse`,
//! `UnitName::parse` and `service_name`, `to_service`, `parse_timespan`, `split_words`,
//! `parse_exec` and specifier expansion. Arbitrary text and mutated golden units (truncation,
//! inserted separators, continuations, comments, huge numbers, unicode) never panic or hang and
//! every refusal is an error with a message; a unit that maps gives a service that passes
//! `ServiceSpec::validate` (what the crate promises) with a valid name and parseable constraints.

use proptest::prelude::*;
use shoal_fleet::{parse_exec, parse_timespan, service_name, split_words, to_service, UnitFile, UnitName};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The golden units, `(file name, text)`.
fn seeds() -> &'static [(String, String)] {
    static SEEDS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("golden dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "service"))
            .map(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).expect("name").to_string();
                (name, std::fs::read_to_string(&p).expect("read unit"))
            })
            .collect();
        out.sort();
        assert!(out.len() >= 10);
        out
    })
}

const PIECES: &[&str] = &[
    "\n",
    "\\\n",
    "=",
    "[",
    "]",
    "[X-Fleet]\n",
    "[Service]\n",
    "#",
    ";",
    " ",
    "%",
    "%i",
    "%H",
    "$",
    "${",
    "}",
    "'",
    "\"",
    "\\",
    "-",
    "@",
    "+",
    "!",
    ":",
    "|",
    "99999999999999999999999",
    "-1",
    "1.5.5",
    "\u{e9}",
    "\u{b5}s",
    "\u{1f600}",
    "\0",
    "\r",
    "\t",
    "ExecStart=",
    "Restart=",
    "MachineMetadata=",
    "Global=true\n",
    "MachineOf=",
    "Conflicts=*",
    "docker run ",
    "--restart=",
    "-p ",
    "-m ",
    "--cpus ",
    "--ulimit ",
    "-e ",
];

fn mutate(seed: &str, edits: &[(prop::sample::Index, &str, u8)]) -> String {
    let mut s = seed.to_string();
    for (at, piece, how) in edits {
        let chars: Vec<char> = s.chars().collect();
        let i = at.index(chars.len() + 1);
        let (head, tail): (String, String) = (chars[..i].iter().collect(), chars[i..].iter().collect());
        s = match how {
            0 => format!("{head}{piece}{tail}"),
            1 => head,
            _ => format!("{head}{}", tail.chars().skip(1).collect::<String>()),
        };
    }
    s
}

fn check(text: &str, name: &str) {
    let unit = match UnitFile::parse(text) {
        Ok(u) => u,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("line "), "a syntax error names its line: {msg}");
            return;
        }
    };
    match to_service(&unit, name) {
        Ok(m) => {
            if let Err(e) = m.spec.validate() {
                panic!("{name}: a mapped service does not validate: {e}\n{text}");
            }
            shoal_types::validate::validate_name(&m.spec.name).expect("a valid service name");
            for c in &m.spec.task_template.placement.constraints {
                c.parse::<shoal_types::Constraint>().expect("a parseable constraint");
            }
        }
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(s in "\\PC{0,200}") {
        check(&s, "fuzz.service");
    }

    #[test]
    fn unit_soup(s in "(\\[(Unit|Service|X-Fleet)\\]\n|[A-Za-z]{1,8}=[a-z0-9 %$\\\\\"'=-]{0,16}\n|#.*\n|\\\\\n){0,12}") {
        check(&s, "fuzz@1.service");
    }

    #[test]
    fn mutated_units(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(PIECES), 0u8..3), 0..6),
    ) {
        let (name, text) = seed.get(seeds());
        check(&mutate(text, &edits), name);
    }

    #[test]
    fn generated_units(
        exec in prop::sample::select(&[
            "/usr/bin/docker run --name x -p 80:80 busybox:1 sleep 10",
            "/bin/sleep 100",
            "docker run --net=host -m 1g --cpus 0.5 --ulimit nofile=10:20 img",
            "-/bin/sh -c 'echo $X ${Y}'",
            "@/bin/true true",
            "docker run -e X --restart=on-failure:3 img",
        ][..]),
        restart in prop::sample::select(&["no", "always", "on-failure", "on-abnormal", "on-watchdog", "bogus", ""][..]),
        span in "[0-9]{1,25}(\\.[0-9]{0,12})?( ?(s|ms|us|min|h|d|w|M|y|xx))?",
        meta in prop::collection::vec("[a-zA-Z\u{e9}]{1,5}=[a-z0-9,()= ]{0,6}", 0..4),
        global in any::<bool>(),
        machine_of in prop::option::of("[a-z@.%]{0,12}"),
        env in prop::collection::vec("[A-Z]{1,3}=[a-z\"' ]{0,6}", 0..3),
        name in "[a-z0-9_.:\\\\-]{1,20}(@[a-z0-9_.:\\\\-]{0,8})?",
    ) {
        let mut text = format!(
            "[Unit]\nDescription=fuzz\n[Service]\nExecStart={exec}\nRestart={restart}\nRestartSec={span}\nTimeoutStopSec={span}\nLimitNOFILE={span}\n"
        );
        for e in &env {
            text.push_str(&format!("Environment={e}\n"));
        }
        text.push_str("[X-Fleet]\n");
        for m in &meta {
            text.push_str(&format!("MachineMetadata={m}\n"));
        }
        if global {
            text.push_str("Global=true\n");
        }
        if let Some(m) = machine_of {
            text.push_str(&format!("MachineOf={m}\n"));
        }
        check(&text, &format!("{name}.service"));
    }

    #[test]
    fn names_spans_and_words(s in "\\PC{0,40}", name in "[a-zA-Z0-9@._:\\\\x-]{0,40}(\\.service)?") {
        for n in [s.as_str(), name.as_str()] {
            match UnitName::parse(n) {
                Ok(u) => {
                    match service_name(&u) {
                        Ok(svc) => { shoal_types::validate::validate_name(&svc).expect("a valid service name"); }
                        Err(e) => prop_assert!(!e.to_string().is_empty()),
                    }
                    let _ = u.expand_fleet(&s);
                    if let Err(e) = u.expand(&s) {
                        prop_assert!(!e.is_empty());
                    }
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        if let Err(e) = parse_timespan(&s) {
            prop_assert!(e.contains("invalid time span"));
        }
        if let Err(e) = split_words(&s) {
            prop_assert!(!e.is_empty());
        }
        let env: BTreeMap<String, String> = [("X".to_string(), "1".to_string())].into();
        if let Err(e) = parse_exec(&s, &env) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn timespans_add_up(parts in prop::collection::vec((0u64..1_000_000, prop::sample::select(&[("s", 1u64), ("min", 60), ("h", 3600), ("", 1), ("d", 86_400)][..])), 1..5)) {
        let text: Vec<String> = parts.iter().map(|(n, (u, _))| format!("{n}{u}")).collect();
        let want: u64 = parts.iter().map(|(n, (_, m))| n * m).sum();
        prop_assert_eq!(parse_timespan(&text.join(" ")), Ok(std::time::Duration::from_secs(want)));
    }
}

#[test]
fn long_units_are_bounded() {
    let continued = format!("[Service]\nExecStart=/bin/echo {}x\n", "a \\\n".repeat(50_000));
    check(&continued, "long.service");
    let many = format!("[Service]\n{}", "Environment=A=1\n".repeat(50_000));
    check(&many, "many.service");
    let sections = "[Service]\n".repeat(50_000);
    check(&sections, "sections.service");
    assert!(parse_timespan(&"9".repeat(100_000)).is_err());
    assert!(parse_timespan(&"1s".repeat(50_000)).is_ok());
    let _ = split_words(&"'".repeat(100_001));
}
