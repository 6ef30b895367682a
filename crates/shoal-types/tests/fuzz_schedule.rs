//! Fuzz target: scheduled-job schedules (`shoal job create --schedule`, Chronos's ISO 8601
//! repeating intervals) and time zone names. Arbitrary and mutated schedules never panic and
//! every refusal is an error with a message; what parses prints back to itself, and evaluating a
//! valid schedule at any instant never panics and only ever answers a later instant.

use proptest::prelude::*;
use shoal_types::{validate_time_zone, Schedule, Timestamp};

const SEEDS: &[&str] = &[
    "0 3 * * *",
    "*/15 * * * *",
    "0 0 29 2 *",
    "5-10/2 1,2,3 ? JAN-MAR MON-FRI",
    "0 0 1 1 7",
    "@hourly",
    "@yearly",
    "@reboot",
    "R/2026-01-01T00:00:00Z/PT1H",
    "R10/2012-10-01T05:52:00Z/PT2S",
    "R0/2026-03-29T02:30:00/P1D",
    "R5/2026-01-31T00:00:00+02:00/P1M",
    "R/2026-01-01T00:00:00Z/P1Y2M3W4DT5H6M7.5S",
];

const PIECES: &[&str] = &[
    "*",
    "/",
    "-",
    ",",
    "?",
    " ",
    "0",
    "99999999999999999999",
    "-1",
    "/0",
    "R",
    "P",
    "T",
    "Z",
    "+25:00",
    "60",
    "\u{e9}",
    "\u{1f600}",
    "\0",
    "@",
    "SUN",
    "DEC",
    "9999",
    "PT",
    "P0D",
    ".",
    ":",
];

const ZONES: &[&str] =
    &["", "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"];

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

fn instant() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(Timestamp::ZERO),
        Just(Timestamp(u64::MAX)),
        (1_700_000_000u64..2_100_000_000).prop_map(Timestamp::from_secs),
        any::<u64>().prop_map(Timestamp),
    ]
}

fn check(text: &str, tz: &str, after: Timestamp, evaluate: bool) {
    let s = match Schedule::parse(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let printed = s.to_string();
    let again = Schedule::parse(&printed).unwrap_or_else(|e| panic!("{text:?} → {printed:?}: {e}"));
    assert_eq!(again, s, "{text:?} → {printed:?}");
    if s.validate_in(tz).is_err() || !evaluate {
        return;
    }
    if let Some(next) = s.next_after(after, tz).expect("a valid schedule and zone evaluate") {
        assert!(next > after, "{text:?} in {tz:?}: next after {after:?} is {next:?}");
    }
    let upto = after.saturating_add(std::time::Duration::from_secs(30 * 86_400));
    let (last, count) = s.occurrences_between(after, upto, tz, 50).expect("evaluate");
    assert!(count <= 50);
    assert_eq!(last.is_some(), count > 0, "{text:?}: last {last:?}, count {count}");
    if let Some(last) = last {
        assert!(last > after && last <= upto);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(s in "\\PC{0,48}", tz in "\\PC{0,24}") {
        check(&s, "UTC", Timestamp::ZERO, false);
        check(&format!("R{s}"), "UTC", Timestamp::ZERO, false);
        if let Err(e) = validate_time_zone(&tz) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn cron_soup(fields in prop::collection::vec("[0-9*/,?A-Z-]{1,8}", 1..7)) {
        check(&fields.join(" "), "UTC", Timestamp::ZERO, false);
    }

    #[test]
    fn mutated_schedules(s in mutated(), tz in prop::sample::select(ZONES), after in instant()) {
        check(&s, tz, after, true);
    }
}

proptest! {
    // Evaluating a schedule searches up to 8 years ahead: fewer, costlier cases.
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_crons_evaluate(
        min in "(\\*|[0-5]?[0-9]|\\*/[1-9][0-9]?)",
        hour in "(\\*|1?[0-9]|2[0-3]|[0-9]-2[0-3]/[1-9])",
        dom in "(\\*|\\?|[1-9]|[12][0-9]|3[01]|L)",
        month in "(\\*|[1-9]|1[0-2]|JAN|FEB|DEC|[1-6]-1[0-2])",
        dow in "(\\*|\\?|[0-7]|MON-FRI|SUN)",
        tz in prop::sample::select(ZONES),
        after in instant(),
    ) {
        check(&format!("{min} {hour} {dom} {month} {dow}"), tz, after, true);
    }

    #[test]
    fn generated_intervals_evaluate(
        n in prop::option::of(0u64..1000),
        year in 1900i32..2200,
        month in 1u8..=12,
        day in 1u8..=31,
        hour in 0u8..24,
        offset in prop::sample::select(&["", "Z", "+05:45", "-12:00"][..]),
        period in "P(([0-9]{1,4}Y)?([0-9]{1,3}M)?([0-9]{1,3}W)?([0-9]{1,4}D)?)(T([0-9]{1,5}H)?([0-9]{1,6}M)?([0-9]{1,7}(\\.[0-9]{1,9})?S)?)?",
        tz in prop::sample::select(ZONES),
        after in instant(),
    ) {
        let r = n.map_or(String::new(), |n| n.to_string());
        let text = format!("R{r}/{year:04}-{month:02}-{day:02}T{hour:02}:00:00{offset}/{period}");
        check(&text, tz, after, true);
    }
}

#[test]
fn long_schedules_are_bounded() {
    let lists = vec!["1"; 100_000].join(",");
    check(&format!("{lists} * * * *"), "UTC", Timestamp::ZERO, true);
    check(&"* ".repeat(100_000), "UTC", Timestamp::ZERO, true);
    check(&format!("R/2026-01-01T00:00:00Z/PT{}S", "9".repeat(10_000)), "UTC", Timestamp::ZERO, true);
    check(&format!("R{}/2026-01-01T00:00:00Z/PT1S", "9".repeat(10_000)), "UTC", Timestamp::ZERO, true);
    assert!(validate_time_zone(&"A/".repeat(50_000)).is_err());
}
