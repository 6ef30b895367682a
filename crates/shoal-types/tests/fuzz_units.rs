//! Fuzz target: durations, sizes and the other small value parsers of shoal-types that take text
//! from outside (CLI flags, compose files, API bodies): `time::duration::parse`, `parse_cpus`,
//! `container::parse_ulimit`, `container::parse_log_size`, `network::parse_ipv4`,
//! `Ipv4Net::parse`, `secret::validate_secret_name`. Arbitrary and mutated input never panics and
//! every refusal is an `Err` with a message; durations, CPU counts and CIDRs round-trip through
//! their printed form.

use proptest::prelude::*;
use shoal_types::container::{parse_log_size, parse_ulimit};
use shoal_types::network::{fmt_ipv4, parse_ipv4};
use shoal_types::secret::validate_secret_name;
use shoal_types::time::duration;
use shoal_types::{parse_cpus, Ipv4Net, SecretKind, NANO_CPUS_PER_CPU};
use std::time::Duration;

fn number_soup() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[0-9.:=/ a-zA-Z\u{b5}\u{e9}+-]{0,30}",
        // Huge numbers, with units and separators.
        ("[0-9]{15,40}", "(\\.[0-9]{0,30})?", "(ns|us|ms|s|m|h|d|w|y|M|k|g|b|kb|mib|\u{b5}s)?")
            .prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        Just(u64::MAX.to_string()),
        Just(format!("{}0", u64::MAX)),
        Just("-1".to_string()),
        Just(".".to_string()),
        Just("1e3".to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
    ]
}

fn err_has_message<T: std::fmt::Debug>(r: &Result<T, String>) {
    if let Err(e) = r {
        assert!(!e.trim().is_empty(), "an empty error message");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn value_parsers_never_panic(s in number_soup()) {
        err_has_message(&duration::parse(&s));
        err_has_message(&parse_cpus(&s));
        err_has_message(&parse_log_size(&s));
        err_has_message(&parse_ipv4(&s));
        err_has_message(&Ipv4Net::parse(&s));
        err_has_message(&parse_ulimit(&s));
        err_has_message(&parse_ulimit(&format!("nofile={s}")));
        err_has_message(&parse_ulimit(&format!("nofile=1:{s}")));
        err_has_message(&validate_secret_name(SecretKind::Secret, &s));
        if let Ok(n) = parse_log_size(&s) {
            prop_assert!(n > 0);
        }
        if let Ok(u) = parse_ulimit(&format!("nofile={s}")) {
            prop_assert!(u.soft >= -1 && u.hard >= -1);
        }
    }

    #[test]
    fn durations_round_trip(secs in any::<u64>(), nanos in 0u32..1_000_000_000, small in 0u64..1_000_000) {
        for d in [Duration::new(secs, nanos), Duration::from_nanos(secs), Duration::from_millis(small)] {
            let text = humantime::format_duration(d).to_string();
            let back = duration::parse(&text);
            prop_assert_eq!(back.clone(), Ok(d), "{:?} printed as {:?} reads back as {:?}", d, text, back);
            // The serde form (what the API and the store write) reads back too.
            let json = serde_json::to_string(&Wrap(d)).expect("serialize");
            let again: Wrap = serde_json::from_str(&json).expect("deserialize");
            prop_assert_eq!(again.0, d);
        }
    }

    #[test]
    fn cpus_round_trip(whole in 0u64..(u64::MAX / NANO_CPUS_PER_CPU), frac in 0u64..NANO_CPUS_PER_CPU) {
        let text = format!("{whole}.{frac:09}");
        prop_assert_eq!(parse_cpus(&text), Ok(whole * NANO_CPUS_PER_CPU + frac));
        prop_assert_eq!(parse_cpus(&whole.to_string()), Ok(whole * NANO_CPUS_PER_CPU));
    }

    #[test]
    fn ipv4_and_cidrs_round_trip(addr in any::<u32>(), prefix in 0u8..=32) {
        let text = fmt_ipv4(addr);
        prop_assert_eq!(parse_ipv4(&text), Ok(addr));
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        let net = Ipv4Net::new(addr & mask, prefix).expect("a network address");
        prop_assert_eq!(Ipv4Net::parse(&net.to_string()), Ok(net));
        if addr & !mask != 0 {
            let e = Ipv4Net::parse(&format!("{text}/{prefix}")).expect_err("host bits set");
            prop_assert!(e.contains("host bits"), "{}", e);
        }
    }

    #[test]
    fn log_sizes_and_ulimits(n in any::<u64>(), unit in prop::sample::select(&["", "b", "k", "kb", "m", "mb", "g", "gb", "K", "MB"][..])) {
        let text = format!("{n}{unit}");
        let mult: u64 = match unit.to_ascii_lowercase().trim_end_matches('b') {
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            _ => 1,
        };
        match (parse_log_size(&text), n.checked_mul(mult)) {
            (Ok(v), Some(want)) => prop_assert_eq!(v, want),
            (Err(e), None) => prop_assert!(!e.is_empty()),
            (Err(e), Some(0)) => prop_assert!(e.contains("above 0")),
            (got, want) => prop_assert!(false, "{text:?}: {got:?}, expected {want:?}"),
        }
        let soft = n as i64;
        let u = parse_ulimit(&format!("NoFile = {soft}"));
        if soft >= -1 {
            let u = u.expect("a valid ulimit");
            prop_assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", soft, soft));
        } else {
            prop_assert!(u.is_err());
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Wrap(#[serde(with = "shoal_types::time::duration")] Duration);

#[test]
fn long_inputs_are_bounded() {
    let long = "9".repeat(200_000);
    for s in [
        long.clone(),
        format!("{long}s"),
        format!("0.{long}"),
        format!("{long}.{long}"),
        "1s ".repeat(50_000),
    ] {
        err_has_message(&duration::parse(&s));
        err_has_message(&parse_cpus(&s));
        err_has_message(&parse_log_size(&s));
        err_has_message(&parse_ipv4(&s));
        err_has_message(&Ipv4Net::parse(&s));
        err_has_message(&parse_ulimit(&s));
    }
}
