//! Fuzz target: compose files as `shoal stack deploy -c` reads them (`shoal_compose::load`:
//! YAML, merge keys, interpolation, merging several files, conversion), `interpolate` on its own
//! and `.env` files (`parse_env_file`). Arbitrary text and mutated valid files (truncation,
//! inserted separators and YAML syntax, anchors and aliases, deep nesting, huge numbers,
//! unicode) never panic, overflow the stack or hang; a refusal lists at least one non-empty
//! problem; a file that loads yields services whose names are valid service names.

use proptest::prelude::*;
use shoal_compose::{interpolate, load, parse_env_file, ComposeFile, Notes, Options};
use std::collections::BTreeMap;
use std::path::Path;

const SEEDS: &[&str] = &[
    r#"
version: "3.9"
services:
  web:
    image: registry.example/web:${TAG:-1.2}
    command: ["serve", "--port", "8080"]
    environment:
      MODE: production
      WORKERS: 4
    ports:
      - "80:8080"
      - "53:53/udp"
      - target: 443
        published: 8443
    networks:
      front:
        aliases: [www]
    volumes:
      - data:/var/lib/web:ro
      - ./conf:/etc/web
    stop_grace_period: 1m30s
    healthcheck:
      test: curl -f http://localhost:8080/
      interval: 5s
    deploy:
      replicas: ${N:-3}
      resources:
        limits: {cpus: "0.5", memory: 512M, pids: 100}
      placement:
        constraints: [node.labels.zone==a]
      update_config: {parallelism: 2, delay: 10s, order: start-first}
  worker:
    image: registry.example/worker
    deploy: {mode: global}
    depends_on: [web]
networks:
  front:
volumes:
  data:
"#,
    r#"
x-common: &common
  image: busybox
  environment: [A=1, B]
services:
  a:
    <<: *common
    command: sleep 1000
  b:
    <<: *common
    env_file: common.env
    secrets: [pw]
secrets:
  pw:
    file: ./secrets/db.pw
"#,
    "services:\n  job:\n    command: echo hi\n    x-shoal-driver: process\n    deploy:\n      mode: replicated-job\n",
];

const PIECES: &[&str] = &[
    ":",
    "\n",
    "  ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "!reset ",
    "${",
    "}",
    "${A:-${B",
    "$$",
    "'",
    "\"",
    "#",
    "---\n",
    "...\n",
    "? ",
    "|\n",
    ">\n",
    "\t",
    "99999999999999999999999",
    "-1",
    "0x10",
    "1e400",
    ".nan",
    "~",
    "null",
    "\u{e9}",
    "\u{1f600}",
    "\u{200b}",
    "\0",
    "\r\n",
    "%YAML 1.2\n",
];

fn env() -> BTreeMap<String, String> {
    [("TAG", "2.0"), ("N", "2"), ("EMPTY", "")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn read_file(p: &Path) -> std::io::Result<String> {
    match p.to_str() {
        Some("/proj/common.env") => Ok("X=1\nexport Y=\"a b\"\n".into()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
    }
}

fn read_bytes(p: &Path) -> std::io::Result<Vec<u8>> {
    match p.to_str() {
        Some("/proj/secrets/db.pw") => Ok(b"hunter2\n".to_vec()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
    }
}

fn check(docs: &[String]) {
    let env = env();
    let opts =
        Options { env: &env, base_dir: Path::new("/proj"), read_file: &read_file, read_bytes: &read_bytes };
    let files: Vec<ComposeFile> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| ComposeFile { name: format!("f{i}.yml"), content: d.clone() })
        .collect();
    match load(&files, &opts) {
        Ok(p) => {
            assert!(!p.stack.services.is_empty(), "a stack without services loaded");
            for s in &p.stack.services {
                if let Err(e) = shoal_types::validate::validate_name(&s.name) {
                    panic!("a compose file loaded with an invalid service name: {e}\n{docs:?}");
                }
            }
        }
        Err(e) => {
            assert!(!e.0.is_empty(), "an error without a problem");
            assert!(e.0.iter().all(|m| !m.trim().is_empty()), "an empty problem: {:?}", e.0);
        }
    }
}

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

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, &'static str, u8)>> {
    prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(PIECES), 0u8..3), 0..6)
}

/// A YAML value built from random scalars, sequences and mappings (for service bodies).
fn yaml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z0-9:./=${}_-]{0,12}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("1.5".to_string()),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(
                (
                    prop::sample::select(
                        &[
                            "image",
                            "command",
                            "entrypoint",
                            "environment",
                            "ports",
                            "deploy",
                            "replicas",
                            "mode",
                            "resources",
                            "limits",
                            "cpus",
                            "memory",
                            "networks",
                            "volumes",
                            "healthcheck",
                            "test",
                            "depends_on",
                            "secrets",
                            "placement",
                            "constraints",
                            "x-shoal-driver",
                            "labels",
                            "restart_policy",
                            "update_config",
                            "stop_grace_period",
                            "hostname",
                            "ulimits",
                            "bogus",
                        ][..]
                    ),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| format!(
                "{{{}}}",
                kv.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(s in "\\PC{0,200}") {
        check(&[s]);
    }

    #[test]
    fn yaml_soup(s in "[a-z:\\-\\[\\]{}&*<>!|'\"$ \n]{0,120}") {
        check(&[s]);
    }

    #[test]
    fn mutated_files(seed in prop::sample::select(SEEDS), e in edits(), second in prop::option::of((prop::sample::select(SEEDS), edits()))) {
        let mut docs = vec![mutate(seed, &e)];
        if let Some((seed, e)) = second {
            docs.push(mutate(seed, &e));
        }
        check(&docs);
    }

    #[test]
    fn generated_services(
        names in prop::collection::vec("[a-zA-Z0-9_. \u{e9}-]{0,10}", 1..4),
        bodies in prop::collection::vec(yaml_value(), 1..4),
    ) {
        let mut doc = String::from("services:\n");
        for (name, body) in names.iter().zip(bodies.iter().cycle()) {
            doc.push_str(&format!("  {name:?}: {body}\n"));
        }
        check(&[doc]);
    }

    #[test]
    fn interpolation(s in "[${}:?+\\-A-Z_a ]{0,60}", t in "\\PC{0,40}") {
        let env = env();
        for text in [s.as_str(), t.as_str()] {
            let mut notes = Notes::default();
            if let Err(e) = interpolate(text, &env, &mut notes) {
                prop_assert!(!e.is_empty());
            }
        }
        // Text without a `$` is its own interpolation.
        let plain = t.replace('$', "");
        prop_assert_eq!(interpolate(&plain, &env, &mut Notes::default()), Ok(plain.clone()));
    }

    #[test]
    fn env_files(s in "\\PC{0,120}", lines in prop::collection::vec("(export )?[A-Z_]{1,6}(=([a-z #'\"\\\\]{0,10}))?", 0..6)) {
        if let Err(e) = parse_env_file(&s) {
            prop_assert!(e.starts_with("line "), "{}", e);
        }
        let text = lines.join("\n");
        let parsed = parse_env_file(&text).expect("well-formed lines");
        prop_assert_eq!(parsed.len(), lines.len());
    }
}

#[test]
fn deeply_nested_interpolation_is_refused_not_a_stack_overflow() {
    // Found by this target: 100 000 nested `${A:-` overflowed the stack (the process aborted).
    let env = env();
    let ok = "${A:-".repeat(32) + "x" + &"}".repeat(32);
    assert_eq!(interpolate(&ok, &env, &mut Notes::default()), Ok("x".to_string()));
    let too_deep = "${A:-".repeat(33) + "x" + &"}".repeat(33);
    let e = interpolate(&too_deep, &env, &mut Notes::default()).expect_err("too deep");
    assert!(e.contains("nested deeper than 32 levels"), "{e}");
    let deep = "${A:-".repeat(100_000) + &"}".repeat(100_000);
    let r = interpolate(&deep, &env, &mut Notes::default());
    assert!(r.is_err(), "{:?}", r.map(|s| s.len()));
    check(&[format!("services:\n  a:\n    image: \"{deep}\"\n")]);
}

#[test]
fn deep_yaml_is_refused_quickly() {
    // Found by this target: the YAML scanner took 30 s (debug) on 100 000 `[`, quadratically more
    // on larger files; such a file is now refused before it is scanned.
    let started = std::time::Instant::now();
    for deep in ["[".repeat(100_000), "{a: ".repeat(50_000), "[{".repeat(1_000_000)] {
        let env = env();
        let opts = Options {
            env: &env,
            base_dir: Path::new("/proj"),
            read_file: &read_file,
            read_bytes: &read_bytes,
        };
        let file = ComposeFile { name: "deep.yml".into(), content: format!("services: {deep}") };
        let e = load(&[file], &opts).expect_err("too deep");
        assert!(e.0[0].contains("nested deeper than 256 levels"), "{e}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    // Many brackets that do not nest deeply are a file like any other.
    let wide = format!(
        "services:\n{}",
        (0..3_000).map(|i| format!("  s{i}: {{image: a, command: [\"x\"]}}\n")).collect::<String>()
    );
    let env = env();
    let opts =
        Options { env: &env, base_dir: Path::new("/proj"), read_file: &read_file, read_bytes: &read_bytes };
    let project = load(&[ComposeFile { name: "wide.yml".into(), content: wide }], &opts).expect("wide file");
    assert_eq!(project.stack.services.len(), 3_000);
}

#[test]
fn service_names_that_are_not_names_are_refused() {
    // Found by this target: `services: {"-": …}` and `{".": …}` loaded as services named `-`
    // and `.`, which the cluster refuses only at deploy.
    let env = env();
    let opts =
        Options { env: &env, base_dir: Path::new("/proj"), read_file: &read_file, read_bytes: &read_bytes };
    for name in ["-", ".", "a b", "r.rO", "_x", "\u{e9}t\u{e9}", "x-"] {
        let file = ComposeFile {
            name: "f.yml".into(),
            content: format!("services:\n  {name:?}: {{image: busybox}}\n"),
        };
        let e = load(&[file], &opts).expect_err(name);
        assert!(e.0.iter().any(|m| m.contains("not a valid service name")), "{name}: {e}");
    }
    let file =
        ComposeFile { name: "f.yml".into(), content: "services:\n  web_1-a: {image: busybox}\n".into() };
    load(&[file], &opts).expect("a valid name");
}

#[test]
fn alias_bombs_are_refused() {
    // Billion laughs: every level doubles the size of the expansion.
    let mut bomb = String::from("a0: &a0 [x, x]\n");
    for i in 1..40 {
        bomb.push_str(&format!("a{i}: &a{i} [*a{}, *a{}]\n", i - 1, i - 1));
    }
    bomb.push_str("services:\n  web:\n    image: busybox\n    command: *a39\n");
    check(&[bomb]);
}

#[test]
fn merge_key_bombs_are_refused() {
    let mut merge_bomb = String::from("x0: &x0 {image: busybox}\n");
    for i in 1..40 {
        merge_bomb.push_str(&format!("x{i}: &x{i} {{<<: [*x{}, *x{}]}}\n", i - 1, i - 1));
    }
    merge_bomb.push_str("services:\n  web: *x39\n");
    check(&[merge_bomb]);
}

#[test]
fn huge_values_are_refused_cleanly() {
    let big = "9".repeat(100_000);
    for doc in [
        format!("services:\n  a:\n    image: x\n    deploy: {{replicas: {big}}}\n"),
        format!("services:\n  a:\n    image: x\n    ports: [\"{big}:80\"]\n"),
        format!("services:\n  a:\n    image: x\n    stop_grace_period: {big}s\n"),
        format!("services:\n  a:\n    image: x\n    deploy: {{resources: {{limits: {{memory: {big}g, cpus: \"{big}\"}}}}}}\n"),
    ] {
        check(&[doc]);
    }
}
