//! Fuzz target: the CLI's value parsers for flags that take text (`--limit-memory` sizes,
//! durations, `-p` ports, `--mount`, `--secret`/`--config`, `--network`, `--env-file`,
//! `--filter`, `--format` Go templates, `--entrypoint` words). The binary has no library, so the
//! target lives here. Arbitrary and mutated input never panics or hangs and is refused with a
//! message naming the flag's syntax; sizes, ports and durations round-trip through the text a
//! user would type.

use crate::filter::Filters;
use crate::format::parse_format;
use crate::service_cli::{
    parse_bytes, parse_duration, parse_env_file, parse_mount, parse_network, parse_port, parse_secret_ref,
    shell_split,
};
use proptest::prelude::*;
use shoal_types::{Protocol, PublishMode};

fn soup() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[0-9.,:=/a-z \u{e9}+-]{0,30}",
        ("[0-9]{12,40}", "(\\.[0-9]{0,20})?", "(b|k|kb|kib|m|g|t|tb|e3|s|ms)?").prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        "(type|source|src|target|dst|readonly|ro|published|protocol|mode|uid|gid|name|alias)=[a-z0-9/.,=]{0,8}(,[a-z]{1,8}=[a-z0-9/]{0,6}){0,3}",
        "\\{\\{[a-zA-Z .|\"()$:=,]{0,30}\\}\\}",
    ]
}

fn no_panic<T, E: std::fmt::Display>(r: Result<T, E>) {
    if let Err(e) = r {
        assert!(!e.to_string().trim().is_empty(), "an empty error message");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn flag_values_never_panic(s in soup()) {
        no_panic(parse_bytes(&s));
        no_panic(parse_duration(&s));
        no_panic(parse_port(&s));
        no_panic(parse_mount(&s));
        no_panic(parse_secret_ref(&s));
        no_panic(parse_network(&s));
        no_panic(parse_env_file(std::path::Path::new("env"), &s));
        no_panic(Filters::parse(std::slice::from_ref(&s), &["name", "label", "id"]));
        no_panic(parse_format(&s));
        no_panic(parse_format(&format!("table {s}")));
        no_panic(shell_split(&s));
        if let Ok(m) = parse_mount(&s) {
            prop_assert!(!m.target.is_empty());
        }
        if let Ok(p) = parse_port(&s) {
            prop_assert!(p.target > 0);
        }
    }

    #[test]
    fn sizes_round_trip(n in 0u64..(1 << 40), unit in prop::sample::select(&[("", 0u32), ("b", 0), ("k", 10), ("KB", 10), ("kib", 10), ("m", 20), ("Mb", 20), ("g", 30), ("gib", 30), ("t", 40)][..])) {
        let (text, shift) = unit;
        let want = n.checked_mul(1u64 << shift);
        match (parse_bytes(&format!("{n}{text}")), want) {
            (Ok(v), Some(w)) => prop_assert_eq!(v, w),
            (Err(e), None) => prop_assert!(e.contains("too large"), "{}", e),
            (got, want) => prop_assert!(false, "{n}{text}: {got:?}, expected {want:?}"),
        }
        // A fraction of a unit: within a byte of the exact value, or too large.
        let exact = (n as f64 + 0.5) * (1u64 << shift) as f64;
        match parse_bytes(&format!("{n}.5{text}")) {
            Ok(half) => prop_assert!((half as f64 - exact).abs() <= exact * 1e-12 + 1.0, "{n}.5{text}: {half}"),
            Err(e) => prop_assert!(exact >= u64::MAX as f64 && e.contains("too large"), "{n}.5{text}: {e}"),
        }
    }

    #[test]
    fn ports_round_trip(published in 1u16.., target in 1u16.., udp in any::<bool>(), ingress in any::<bool>()) {
        let proto = if udp { "udp" } else { "tcp" };
        let p = parse_port(&format!("{published}:{target}/{proto}")).expect("short form");
        prop_assert_eq!((p.published, p.target, p.mode), (published, target, PublishMode::Host));
        prop_assert_eq!(p.protocol, if udp { Protocol::Udp } else { Protocol::Tcp });
        let mode = if ingress { "ingress" } else { "host" };
        let long = parse_port(&format!("published={published},target={target},protocol={proto},mode={mode}")).expect("long form");
        prop_assert_eq!((long.published, long.target), (published, target));
        prop_assert_eq!(long.mode, if ingress { PublishMode::Ingress } else { PublishMode::Host });
    }

    #[test]
    fn durations_round_trip(secs in 0u64..(1 << 40), millis in 0u32..1000) {
        let d = std::time::Duration::new(secs, millis * 1_000_000);
        let text = humantime::format_duration(d).to_string();
        prop_assert_eq!(parse_duration(&text), Ok(d));
    }
}

#[test]
fn long_flag_values_are_bounded() {
    let long = "9".repeat(100_000);
    for s in [
        long.clone(),
        format!("{long}k"),
        format!("0.{long}g"),
        format!("{long}:{long}"),
        "a,".repeat(50_000),
    ] {
        no_panic(parse_bytes(&s));
        no_panic(parse_port(&s));
        no_panic(parse_mount(&s));
        no_panic(parse_secret_ref(&s));
    }
}

#[test]
fn long_templates_are_bounded() {
    no_panic(parse_format(&"{{".repeat(50_000)));
    no_panic(parse_format(&"{{.Name}}".repeat(50_000)));
}

#[test]
fn deeply_nested_templates_are_refused_not_a_stack_overflow() {
    // Found by this target: 2 000 nested `{{if}}` (or 5 000 nested parentheses) in `--format`
    // overflowed gtmpl's recursive parser and aborted the process.
    let nested = |n: usize| format!("{}x{}", "{{if 1}}".repeat(n), "{{end}}".repeat(n));
    assert!(parse_format(&nested(48)).is_ok());
    let e = parse_format(&nested(49)).expect_err("too deep");
    assert!(e.contains("nested deeper than 48 levels"), "{e}");
    assert!(parse_format(&nested(2_000)).is_err());
    let parens = |n: usize| format!("{{{{{}1{}}}}}", "(".repeat(n), ")".repeat(n));
    assert!(parse_format(&parens(48)).is_ok());
    assert!(parse_format(&parens(49)).is_err());
    assert!(parse_format(&parens(5_000)).is_err());
    // Long but flat templates are fine: the bound is on depth, not on length.
    let flat = "{{.ID}} {{if .Name}}({{.Name}}){{end}} ".repeat(200);
    assert!(parse_format(&flat).is_ok());
}
