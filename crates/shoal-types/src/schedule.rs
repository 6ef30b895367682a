//! Schedules of scheduled jobs: cron expressions and ISO 8601 repeating intervals, evaluated in
//! an IANA time zone. Pure: the time zone database is bundled into the binary (jiff's
//! `tzdb-bundle-always`), so every manager computes the same occurrences and nothing reads a
//! file or a clock.
//!
//! # Cron
//!
//! Standard 5-field cron (`minute hour day-of-month month day-of-week`) with `*`, `?`, numbers,
//! ranges `a-b`, steps `*/n`, `a-b/n`, `a/n`, lists, month names `JAN`-`DEC`, weekday names
//! `SUN`-`SAT` (0 and 7 are both Sunday) and the macros `@yearly`, `@annually`, `@monthly`,
//! `@weekly`, `@daily`, `@midnight` and `@hourly`. When both day-of-month and day-of-week are
//! restricted (neither starts with `*` or `?`), a day matches when either matches (Vixie cron).
//!
//! A cron is matched against civil (wall-clock) minutes in the time zone. The occurrences are the
//! set of instants those civil minutes map to: a civil time in a spring-forward gap maps to the
//! instant jiff's "compatible" disambiguation gives (shifted forward by the gap), a civil time
//! that occurs twice at a fall-back maps to its first (earlier) instant only. So each matching
//! civil minute fires at most once, and two civil minutes that map to the same instant (a minute
//! in the gap and the same minute after it) fire once. Occurrences are always on a whole second.
//!
//! # ISO 8601 repeating intervals
//!
//! `R[n]/START/PERIOD` as in Chronos, for example `R10/2012-10-01T05:52:00Z/PT2S`. `R` alone
//! repeats forever, `Rn` fires exactly `n` times (`R0` never). Occurrence `k` is
//! `START + k × PERIOD` with zoned (RFC 9557 / Temporal) arithmetic: the calendar units (years,
//! months, weeks, days) times `k` are added to START's civil date-time, the result is resolved in
//! the zone with "compatible" disambiguation, then the time units (hours and smaller) times `k`
//! are added as exact durations. So `P1D` keeps the wall-clock time across DST changes while
//! `PT24H` is exactly 24 hours, `P1M` from January 31 gives February 28, March 31, …, and a START
//! in a DST gap keeps its written wall-clock time on the following days.
//!
//! START's civil date-time is interpreted as follows:
//! - without an offset it is civil time in the time zone (UTC when the zone is `""` or `"UTC"`);
//! - with `Z` or an offset and a time zone other than `""`/`"UTC"`, the offset is ignored and the
//!   civil date-time is interpreted in that zone (like Chronos's `scheduleTimeZone`, which takes
//!   precedence over the zone in the schedule);
//! - with `Z` or an offset and the zone `""`/`"UTC"`, the offset is used as written and the
//!   arithmetic happens in that fixed offset.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{DateTime, Time};
use jiff::fmt::temporal::Pieces;
use jiff::tz::{Offset, TimeZone};
use jiff::Span;

use crate::time::Timestamp;

/// How far `next_after` and the backward search of `occurrences_between` look for a cron
/// occurrence: 8 years plus a day, the longest distance between two February 29ths (2096 to
/// 2104), so that every cron that fires at all in normal calendars is found.
pub const CRON_SEARCH_HORIZON_SECS: i64 = (8 * 365 + 3) * 86_400;

const NANOS_PER_SEC: i128 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// What the cron syntax errors list as supported.
const CRON_SUPPORTED: &str = "supported are *, ?, numbers, names (JAN-DEC, SUN-SAT), ranges a-b, \
                              steps */n a-b/n a/n and lists a,b";

/// A parsed schedule. `Display` prints it back in canonical text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    Cron(CronSchedule),
    Repeating(RepeatingInterval),
}

/// Why a schedule or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "schedule is empty: give a cron expression such as \"0 3 * * *\" or an ISO 8601 repeating \
         interval such as \"R/2026-01-01T00:00:00Z/PT1H\""
    )]
    Empty,
    /// The cron expression as a whole is malformed (field count, unknown macro).
    #[error("cron expression \"{text}\": {reason}")]
    CronSyntax { text: String, reason: String },
    /// One cron field is malformed.
    #[error("cron {field} field \"{text}\": {reason}")]
    CronField { field: &'static str, text: String, reason: String },
    /// A well-formed but unsupported form (`@reboot`, `@every`).
    #[error("schedule \"{text}\": {reason}")]
    Unsupported { text: String, reason: String },
    /// A malformed ISO 8601 repeating interval.
    #[error("ISO 8601 schedule \"{text}\": {reason}")]
    Iso { text: String, reason: String },
    /// An unknown time zone.
    #[error("time zone \"{name}\": {reason}")]
    TimeZone { name: String, reason: String },
    /// A schedule that matches no real date.
    #[error("schedule \"{text}\" never fires: {reason}")]
    NeverFires { text: String, reason: String },
}

impl Schedule {
    /// Parses a cron expression or an ISO 8601 repeating interval (text starting with 'R').
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if text.starts_with('R') || text.starts_with('r') {
            RepeatingInterval::parse(text).map(Schedule::Repeating)
        } else {
            CronSchedule::parse(text).map(Schedule::Cron)
        }
    }

    /// Checks that the schedule can fire at all in `tz` and that `tz` is known. A cron that
    /// matches no real date (such as February 30) is refused as "never fires"; `R0` is allowed and
    /// simply has no occurrence.
    pub fn validate_in(&self, tz: &str) -> Result<(), ScheduleError> {
        match self {
            Schedule::Cron(c) => {
                resolve_time_zone(tz)?;
                c.check_satisfiable()
            }
            Schedule::Repeating(r) => r.context(tz).map(|_| ()),
        }
    }

    /// The first occurrence strictly after `after`, evaluated in time zone `tz` (IANA name; ""
    /// or "UTC" = UTC). None when there is none: an `Rn` interval is exhausted, the next
    /// occurrence is not representable (before 1970 or beyond `u64` nanoseconds), or a cron has
    /// no occurrence within [`CRON_SEARCH_HORIZON_SECS`].
    pub fn next_after(&self, after: Timestamp, tz: &str) -> Result<Option<Timestamp>, ScheduleError> {
        match self {
            Schedule::Cron(c) => {
                let zone = resolve_time_zone(tz)?;
                let a = secs_floor(after);
                let limit = a.saturating_add(CRON_SEARCH_HORIZON_SECS).min(max_secs());
                Ok(c.next_in(&zone, a, limit).and_then(timestamp_from_secs))
            }
            Schedule::Repeating(r) => {
                let ctx = r.context(tz)?;
                let k = ctx.first_after(i128::from(after.as_nanos()));
                Ok(ctx.occurrence(k).and_then(timestamp_from_nanos))
            }
        }
    }

    /// The last occurrence in `(after, upto]` and how many occurrences lie in `(after, upto]`,
    /// the count capped at `cap`. `last` is always exact (a backward search for cron, arithmetic
    /// for repeating intervals); counting a cron costs `O(min(count, cap))` forward steps, a
    /// repeating interval's count is computed directly. Returns `(None, 0)` if there is none.
    pub fn occurrences_between(
        &self,
        after: Timestamp,
        upto: Timestamp,
        tz: &str,
        cap: u64,
    ) -> Result<(Option<Timestamp>, u64), ScheduleError> {
        match self {
            Schedule::Cron(c) => {
                let zone = resolve_time_zone(tz)?;
                let a = secs_floor(after);
                let u = secs_floor(upto);
                if u <= a {
                    return Ok((None, 0));
                }
                let lower = a.saturating_add(1).max(u.saturating_sub(CRON_SEARCH_HORIZON_SECS));
                let Some(last) = c.prev_in(&zone, u, lower) else {
                    return Ok((None, 0));
                };
                let mut count = 0u64;
                let mut cur = a;
                while count < cap {
                    let limit = cur.saturating_add(CRON_SEARCH_HORIZON_SECS).min(u);
                    match c.next_in(&zone, cur, limit) {
                        Some(next) => {
                            count += 1;
                            cur = next;
                        }
                        None => break,
                    }
                }
                Ok((timestamp_from_secs(last), count))
            }
            Schedule::Repeating(r) => {
                let ctx = r.context(tz)?;
                if upto <= after {
                    return Ok((None, 0));
                }
                let lo = ctx.first_after(i128::from(after.as_nanos()));
                let hi = ctx.first_after(i128::from(upto.as_nanos()));
                if hi <= lo {
                    return Ok((None, 0));
                }
                let last = ctx.occurrence(hi - 1).and_then(timestamp_from_nanos);
                if last.is_none() {
                    return Ok((None, 0));
                }
                Ok((last, (hi - lo).min(cap)))
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron(c) => f.write_str(&c.text),
            Schedule::Repeating(r) => f.write_str(&r.text),
        }
    }
}

/// Checks an IANA time zone name ("" and "UTC" are fine).
pub fn validate_time_zone(name: &str) -> Result<(), ScheduleError> {
    resolve_time_zone(name).map(|_| ())
}

/// True for the names that mean "no particular zone": "" and "UTC".
fn is_utc_name(name: &str) -> bool {
    name.is_empty() || name == "UTC"
}

fn resolve_time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    if is_utc_name(name) {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| ScheduleError::TimeZone {
        name: name.to_string(),
        reason: "unknown (IANA names such as Europe/Berlin or UTC)".to_string(),
    })
}

fn secs_floor(t: Timestamp) -> i64 {
    // u64 nanoseconds / 1e9 always fits in i64.
    i64::try_from(t.as_nanos() / 1_000_000_000).unwrap_or(i64::MAX)
}

fn max_secs() -> i64 {
    secs_floor(Timestamp(u64::MAX))
}

fn timestamp_from_secs(s: i64) -> Option<Timestamp> {
    timestamp_from_nanos(i128::from(s) * NANOS_PER_SEC)
}

fn timestamp_from_nanos(n: i128) -> Option<Timestamp> {
    u64::try_from(n).ok().map(Timestamp)
}

// ------------------------------------------------------------------------------------------
// Cron
// ------------------------------------------------------------------------------------------

/// A parsed 5-field cron expression (macros are expanded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronSchedule {
    /// Canonical text: the fields joined by single spaces, or the macro.
    text: String,
    /// Bits 0..=59.
    minutes: u64,
    /// Bits 0..=23.
    hours: u32,
    /// Bits 1..=31.
    days_of_month: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, 0 = Sunday.
    days_of_week: u8,
    /// Day-of-month does not start with `*` or `?`.
    dom_restricted: bool,
    /// Day-of-week does not start with `*` or `?`.
    dow_restricted: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    first_name_value: u32,
    names_hint: &'static str,
}

const MINUTE: FieldSpec =
    FieldSpec { name: "minute", min: 0, max: 59, names: &[], first_name_value: 0, names_hint: "" };
const HOUR: FieldSpec =
    FieldSpec { name: "hour", min: 0, max: 23, names: &[], first_name_value: 0, names_hint: "" };
const DAY_OF_MONTH: FieldSpec =
    FieldSpec { name: "day-of-month", min: 1, max: 31, names: &[], first_name_value: 0, names_hint: "" };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
    first_name_value: 1,
    names_hint: " or a month name (JAN-DEC)",
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    first_name_value: 0,
    names_hint: " or a weekday name (SUN-SAT)",
};

impl FieldSpec {
    fn error(&self, text: &str, reason: impl Into<String>) -> ScheduleError {
        ScheduleError::CronField { field: self.name, text: text.to_string(), reason: reason.into() }
    }

    fn unsupported(&self, text: &str) -> ScheduleError {
        self.error(text, format!("L, W and # are not supported; {CRON_SUPPORTED}"))
    }

    /// One number or name.
    fn value(&self, field: &str, token: &str) -> Result<u32, ScheduleError> {
        if token.is_empty() {
            return Err(self.error(field, format!("empty value; {CRON_SUPPORTED}")));
        }
        if token.bytes().all(|b| b.is_ascii_digit()) {
            let range = || format!("value {token} out of range {}-{}", self.min, self.max);
            let v: u32 = token.parse().map_err(|_| self.error(field, range()))?;
            if v < self.min || v > self.max {
                return Err(self.error(field, range()));
            }
            return Ok(v);
        }
        let upper = token.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            return Ok(self.first_name_value + i as u32);
        }
        if looks_like_l_or_w(&upper) {
            return Err(self.unsupported(field));
        }
        Err(self.error(field, format!("\"{token}\" is not a number{}", self.names_hint)))
    }

    /// Parses a whole field into a bit mask.
    fn parse(&self, text: &str) -> Result<u64, ScheduleError> {
        if text.contains('#') {
            return Err(self.unsupported(text));
        }
        let mut mask = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(self.error(text, format!("empty list item; {CRON_SUPPORTED}")));
            }
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let step = match step {
                None => None,
                Some(s) => {
                    let not_positive = || self.error(text, format!("step \"{s}\" is not a positive number"));
                    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(not_positive());
                    }
                    let n: u32 = s.parse().unwrap_or(u32::MAX);
                    if n == 0 {
                        return Err(not_positive());
                    }
                    Some(n)
                }
            };
            let (lo, hi) = if range == "*" || range == "?" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let a = self.value(text, a)?;
                let b = self.value(text, b)?;
                if a > b {
                    return Err(self.error(
                        text,
                        format!("range {a}-{b} is backwards (the first value must not exceed the second)"),
                    ));
                }
                (a, b)
            } else {
                let a = self.value(text, range)?;
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1);
            let mut v = lo;
            while v <= hi {
                mask |= 1u64 << v;
                v = v.saturating_add(step);
            }
        }
        Ok(mask)
    }
}

/// `L`, `LW`, `15W`, `5L`, `FRIL`: Quartz-style day forms.
fn looks_like_l_or_w(upper: &str) -> bool {
    if upper == "L" || upper == "LW" {
        return true;
    }
    match upper.strip_suffix('L').or_else(|| upper.strip_suffix('W')) {
        Some(prefix) => {
            (!prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()))
                || DAY_OF_WEEK.names.contains(&prefix)
        }
        None => false,
    }
}

fn starts_unrestricted(field: &str) -> bool {
    field.starts_with('*') || field.starts_with('?')
}

impl CronSchedule {
    /// Parses a 5-field cron expression or a macro.
    pub fn parse(text: &str) -> Result<CronSchedule, ScheduleError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if text.starts_with('@') {
            let word = text.split_whitespace().next().unwrap_or(text).to_ascii_lowercase();
            let fields = match word.as_str() {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                "@reboot" => {
                    return Err(ScheduleError::Unsupported {
                        text: text.to_string(),
                        reason: "@reboot is not supported: a scheduled job runs on a calendar schedule \
                                 (use a service to run something at start-up)"
                            .to_string(),
                    })
                }
                "@every" => {
                    return Err(ScheduleError::Unsupported {
                        text: text.to_string(),
                        reason: "@every is not supported: use a cron step such as \"*/5 * * * *\" or an \
                                 ISO 8601 repeating interval such as \"R/2026-01-01T00:00:00Z/PT5M\""
                            .to_string(),
                    })
                }
                _ => {
                    return Err(ScheduleError::CronSyntax {
                        text: text.to_string(),
                        reason: "unknown macro; supported are @yearly, @annually, @monthly, @weekly, \
                                 @daily, @midnight and @hourly"
                            .to_string(),
                    })
                }
            };
            if text.split_whitespace().count() != 1 {
                return Err(ScheduleError::CronSyntax {
                    text: text.to_string(),
                    reason: format!("{word} takes no further fields"),
                });
            }
            let mut c = Self::parse_fields(text, fields)?;
            c.text = word;
            return Ok(c);
        }
        Self::parse_fields(text, text)
    }

    fn parse_fields(original: &str, text: &str) -> Result<CronSchedule, ScheduleError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        match fields.len() {
            5 => {}
            n @ (6 | 7) => {
                return Err(ScheduleError::CronSyntax {
                    text: original.to_string(),
                    reason: format!(
                        "{n} fields: seconds and year fields are not supported; use the 5 standard \
                         fields minute hour day-of-month month day-of-week"
                    ),
                })
            }
            n => {
                return Err(ScheduleError::CronSyntax {
                    text: original.to_string(),
                    reason: format!(
                        "expected 5 fields (minute hour day-of-month month day-of-week), found {n}"
                    ),
                })
            }
        }
        let minutes = MINUTE.parse(fields[0])?;
        let hours = HOUR.parse(fields[1])?;
        let days_of_month = DAY_OF_MONTH.parse(fields[2])?;
        let months = MONTH.parse(fields[3])?;
        let dow = DAY_OF_WEEK.parse(fields[4])?;
        // Day 7 is Sunday too.
        let dow = (dow | (dow >> 7)) & 0x7f;
        Ok(CronSchedule {
            text: fields.join(" "),
            minutes,
            hours: u32::try_from(hours).unwrap_or(0),
            days_of_month: u32::try_from(days_of_month).unwrap_or(0),
            months: u16::try_from(months).unwrap_or(0),
            days_of_week: u8::try_from(dow).unwrap_or(0),
            dom_restricted: !starts_unrestricted(fields[2]),
            dow_restricted: !starts_unrestricted(fields[4]),
        })
    }

    /// Refuses a cron that matches no real date (February 30, April 31, …).
    fn check_satisfiable(&self) -> Result<(), ScheduleError> {
        if self.dom_restricted && self.dow_restricted {
            // Either matches: every month has every weekday.
            return Ok(());
        }
        let possible = (1..=12u32).any(|m| {
            bit16(self.months, m) && (1..=max_days_in_month(m)).any(|d| bit32(self.days_of_month, d))
        });
        if possible {
            Ok(())
        } else {
            Err(ScheduleError::NeverFires {
                text: self.text.clone(),
                reason: "no selected month has the selected day of month".to_string(),
            })
        }
    }

    fn day_matches(&self, c: &Civil) -> bool {
        let dom = bit32(self.days_of_month, c.day);
        let dow = self.days_of_week & (1u8 << weekday(days_from_civil(c.year, c.month, c.day))) != 0;
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first matching civil minute in `[from, last]`.
    fn next_civil(&self, from: Civil, last: Civil) -> Option<Civil> {
        let mut t = from;
        loop {
            if t > last {
                return None;
            }
            if !bit16(self.months, t.month) {
                t = t.first_of_next_month();
                continue;
            }
            if !self.day_matches(&t) {
                t = t.next_day();
                continue;
            }
            if !bit32(self.hours, t.hour) {
                match next_bit(u64::from(self.hours), t.hour + 1, 23) {
                    Some(h) => {
                        t.hour = h;
                        t.minute = 0;
                    }
                    None => t = t.next_day(),
                }
                continue;
            }
            if !bit64(self.minutes, t.minute) {
                match next_bit(self.minutes, t.minute + 1, 59) {
                    Some(m) => t.minute = m,
                    None => t = t.next_hour(),
                }
                continue;
            }
            return Some(t);
        }
    }

    /// The last matching civil minute in `[first, from]`.
    fn prev_civil(&self, from: Civil, first: Civil) -> Option<Civil> {
        let mut t = from;
        loop {
            if t < first {
                return None;
            }
            if !bit16(self.months, t.month) {
                t = t.end_of_previous_month();
                continue;
            }
            if !self.day_matches(&t) {
                t = t.end_of_previous_day();
                continue;
            }
            if !bit32(self.hours, t.hour) {
                match prev_bit(u64::from(self.hours), t.hour) {
                    Some(h) => {
                        t.hour = h;
                        t.minute = 59;
                    }
                    None => t = t.end_of_previous_day(),
                }
                continue;
            }
            if !bit64(self.minutes, t.minute) {
                match prev_bit(self.minutes, t.minute) {
                    Some(m) => t.minute = m,
                    None => t = t.end_of_previous_hour(),
                }
                continue;
            }
            return Some(t);
        }
    }

    /// The first occurrence `i` (Unix seconds) with `after < i <= limit`.
    ///
    /// Walks the zone's offset segments forward. Within a segment `[start, end)` with offset
    /// `off`, the occurrences are (a) the instants whose civil time matches, except those that
    /// repeat a civil time of the previous segment (fall-back), and (b) after a spring-forward
    /// gap, the instants `civil - previous offset` of the matching civil times in the gap. All
    /// occurrences of a segment lie inside it, so the first segment with one has the answer.
    fn next_in(&self, tz: &TimeZone, after: i64, limit: i64) -> Option<i64> {
        let mut x = after.checked_add(1)?;
        while x <= limit {
            let seg = Segment::at(tz, x)?;
            let hi = seg.end.map_or(limit, |e| (e - 1).min(limit));
            let mut best: Option<i64> = None;
            let lo_a = seg.start.map_or(x, |s| x.max(s + seg.fold_len()));
            if lo_a <= hi {
                let off = seg.offset;
                best = self
                    .next_civil(Civil::from_secs_ceil(lo_a + off), Civil::from_secs_floor(hi + off))
                    .map(|c| c.to_secs() - off);
            }
            if let Some((gap_lo, gap_hi)) = seg.gap_instants() {
                let (lo_b, hi_b) = (x.max(gap_lo), hi.min(gap_hi));
                if lo_b <= hi_b {
                    let prev = seg.prev_offset;
                    let found = self
                        .next_civil(Civil::from_secs_ceil(lo_b + prev), Civil::from_secs_floor(hi_b + prev))
                        .map(|c| c.to_secs() - prev);
                    best = match (best, found) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
            if best.is_some() {
                return best;
            }
            x = seg.end?;
        }
        None
    }

    /// The last occurrence `i` (Unix seconds) with `lower <= i <= upto`; the mirror of `next_in`.
    fn prev_in(&self, tz: &TimeZone, upto: i64, lower: i64) -> Option<i64> {
        let mut y = upto;
        while y >= lower {
            let seg = Segment::at(tz, y)?;
            let mut best: Option<i64> = None;
            let lo_a = seg.start.map_or(lower, |s| lower.max(s + seg.fold_len()));
            if lo_a <= y {
                let off = seg.offset;
                best = self
                    .prev_civil(Civil::from_secs_floor(y + off), Civil::from_secs_ceil(lo_a + off))
                    .map(|c| c.to_secs() - off);
            }
            if let Some((gap_lo, gap_hi)) = seg.gap_instants() {
                let (lo_b, hi_b) = (lower.max(gap_lo), y.min(gap_hi));
                if lo_b <= hi_b {
                    let prev = seg.prev_offset;
                    let found = self
                        .prev_civil(Civil::from_secs_floor(hi_b + prev), Civil::from_secs_ceil(lo_b + prev))
                        .map(|c| c.to_secs() - prev);
                    best = best.max(found);
                }
            }
            if best.is_some() {
                return best;
            }
            y = seg.start? - 1;
        }
        None
    }
}

/// A stretch of time with one UTC offset, in Unix seconds.
struct Segment {
    /// The transition that began it (None: since forever).
    start: Option<i64>,
    /// The next transition (None: forever).
    end: Option<i64>,
    /// Offset in this segment, seconds east of UTC.
    offset: i64,
    /// Offset before `start` (equal to `offset` when there is no start).
    prev_offset: i64,
}

impl Segment {
    /// The segment containing the instant `x`.
    fn at(tz: &TimeZone, x: i64) -> Option<Segment> {
        let ts = jiff::Timestamp::from_second(x).ok()?;
        let offset = i64::from(tz.to_offset(ts).seconds());
        let just_after = jiff::Timestamp::from_second(x.checked_add(1)?).ok()?;
        let start = tz.preceding(just_after).next().map(|t| t.timestamp().as_second());
        let prev_offset = start
            .and_then(|s| jiff::Timestamp::from_second(s - 1).ok())
            .map_or(offset, |p| i64::from(tz.to_offset(p).seconds()));
        let end = tz.following(ts).next().map(|t| t.timestamp().as_second());
        Some(Segment { start, end, offset, prev_offset })
    }

    /// How long the civil times at the segment's start repeat those of the previous segment.
    fn fold_len(&self) -> i64 {
        (self.prev_offset - self.offset).max(0)
    }

    /// The instants `[lo, hi]` that the civil times of a spring-forward gap at `start` map to.
    fn gap_instants(&self) -> Option<(i64, i64)> {
        let s = self.start?;
        let gap = self.offset - self.prev_offset;
        (gap > 0).then(|| (s, s + gap - 1))
    }
}

/// A civil minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
}

impl Civil {
    fn from_secs_floor(s: i64) -> Civil {
        let days = s.div_euclid(SECS_PER_DAY);
        let rem = s.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Civil { year, month, day, hour: (rem / 3600) as u32, minute: ((rem % 3600) / 60) as u32 }
    }

    fn from_secs_ceil(s: i64) -> Civil {
        Civil::from_secs_floor(s.saturating_add(59))
    }

    fn to_secs(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
    }

    fn first_of_next_month(self) -> Civil {
        let (year, month) = if self.month == 12 { (self.year + 1, 1) } else { (self.year, self.month + 1) };
        Civil { year, month, day: 1, hour: 0, minute: 0 }
    }

    fn next_day(self) -> Civil {
        if self.day >= days_in_month(self.year, self.month) {
            self.first_of_next_month()
        } else {
            Civil { day: self.day + 1, hour: 0, minute: 0, ..self }
        }
    }

    fn next_hour(self) -> Civil {
        if self.hour >= 23 {
            self.next_day()
        } else {
            Civil { hour: self.hour + 1, minute: 0, ..self }
        }
    }

    fn end_of_previous_month(self) -> Civil {
        let (year, month) = if self.month == 1 { (self.year - 1, 12) } else { (self.year, self.month - 1) };
        Civil { year, month, day: days_in_month(year, month), hour: 23, minute: 59 }
    }

    fn end_of_previous_day(self) -> Civil {
        if self.day <= 1 {
            self.end_of_previous_month()
        } else {
            Civil { day: self.day - 1, hour: 23, minute: 59, ..self }
        }
    }

    fn end_of_previous_hour(self) -> Civil {
        if self.hour == 0 {
            self.end_of_previous_day()
        } else {
            Civil { hour: self.hour - 1, minute: 59, ..self }
        }
    }
}

fn bit64(mask: u64, i: u32) -> bool {
    i < 64 && mask & (1u64 << i) != 0
}

fn bit32(mask: u32, i: u32) -> bool {
    i < 32 && mask & (1u32 << i) != 0
}

fn bit16(mask: u16, i: u32) -> bool {
    i < 16 && mask & (1u16 << i) != 0
}

/// The lowest set bit in `[from, max]`.
fn next_bit(mask: u64, from: u32, max: u32) -> Option<u32> {
    if from > max || from >= 64 {
        return None;
    }
    let m = mask >> from << from;
    let b = m.trailing_zeros();
    (m != 0 && b <= max).then_some(b)
}

/// The highest set bit below `below`.
fn prev_bit(mask: u64, below: u32) -> Option<u32> {
    if below == 0 {
        return None;
    }
    let m = if below >= 64 { mask } else { mask & ((1u64 << below) - 1) };
    (m != 0).then(|| 63 - m.leading_zeros())
}

fn is_leap_year(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap_year(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn max_days_in_month(m: u32) -> u32 {
    if m == 2 {
        29
    } else {
        days_in_month(2001, m)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// 0 = Sunday.
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

// ------------------------------------------------------------------------------------------
// ISO 8601 repeating intervals
// ------------------------------------------------------------------------------------------

/// A parsed ISO 8601 repeating interval `R[n]/START/PERIOD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepeatingInterval {
    text: String,
    /// `None` = forever.
    repeats: Option<u64>,
    /// START's civil date-time.
    start: DateTime,
    /// START's offset in seconds east of UTC as written (`Z` = 0), `None` when absent.
    start_offset: Option<i32>,
    period: Period,
}

/// The units of an ISO 8601 duration, all non-negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Period {
    years: i64,
    months: i64,
    weeks: i64,
    days: i64,
    hours: i64,
    minutes: i64,
    seconds: i64,
    milliseconds: i64,
    microseconds: i64,
    nanoseconds: i64,
}

impl Period {
    fn from_span(s: &Span) -> Period {
        Period {
            years: i64::from(s.get_years()),
            months: i64::from(s.get_months()),
            weeks: i64::from(s.get_weeks()),
            days: i64::from(s.get_days()),
            hours: i64::from(s.get_hours()),
            minutes: s.get_minutes(),
            seconds: s.get_seconds(),
            milliseconds: s.get_milliseconds(),
            microseconds: s.get_microseconds(),
            nanoseconds: s.get_nanoseconds(),
        }
    }

    /// `k ×` the calendar units as a span; None when a unit overflows jiff's limits.
    fn calendar_times(&self, k: u64) -> Option<Span> {
        let k = i64::try_from(k).ok()?;
        let m = |v: i64| v.checked_mul(k);
        Span::new()
            .try_years(m(self.years)?)
            .ok()?
            .try_months(m(self.months)?)
            .ok()?
            .try_weeks(m(self.weeks)?)
            .ok()?
            .try_days(m(self.days)?)
            .ok()
    }

    /// The exact length of the hours and smaller units.
    fn time_nanos(&self) -> i128 {
        i128::from(self.hours) * 3_600 * NANOS_PER_SEC
            + i128::from(self.minutes) * 60 * NANOS_PER_SEC
            + i128::from(self.seconds) * NANOS_PER_SEC
            + i128::from(self.milliseconds) * 1_000_000
            + i128::from(self.microseconds) * 1_000
            + i128::from(self.nanoseconds)
    }

    fn day_nanos(&self) -> i128 {
        (i128::from(self.weeks) * 7 + i128::from(self.days)) * i128::from(SECS_PER_DAY) * NANOS_PER_SEC
    }

    /// The exact length when it does not depend on the start: no years or months, and no days
    /// or weeks unless the zone has a fixed offset.
    fn fixed_nanos(&self, fixed_zone: bool) -> Option<i128> {
        if self.years != 0 || self.months != 0 {
            return None;
        }
        if self.weeks != 0 || self.days != 0 {
            return fixed_zone.then(|| self.day_nanos() + self.time_nanos());
        }
        Some(self.time_nanos())
    }

    /// An estimate of the length (average year and month), for seeding the search.
    fn approx_nanos(&self) -> i128 {
        let year = 31_556_952 * NANOS_PER_SEC;
        i128::from(self.years) * year
            + i128::from(self.months) * (year / 12)
            + self.day_nanos()
            + self.time_nanos()
    }
}

impl RepeatingInterval {
    /// Parses `R[n]/START/PERIOD`.
    pub fn parse(text: &str) -> Result<RepeatingInterval, ScheduleError> {
        let text = text.trim();
        let err = |reason: String| ScheduleError::Iso { text: text.to_string(), reason };
        let parts: Vec<&str> = text.split('/').collect();
        let [r, start, period] = parts.as_slice() else {
            return Err(err("expected R[n]/START/PERIOD".to_string()));
        };
        let count = r.get(1..).unwrap_or("");
        let repeats = if !(r.starts_with('R') || r.starts_with('r')) {
            return Err(err("expected R[n]/START/PERIOD".to_string()));
        } else if count.is_empty() {
            None
        } else if count.bytes().all(|b| b.is_ascii_digit()) {
            Some(count.parse::<u64>().map_err(|_| err(format!("repeat count \"{r}\" is too large")))?)
        } else {
            return Err(err(format!(
                "repeat count \"{r}\": expected R (forever) or R followed by a number such as R10"
            )));
        };
        if start.is_empty() {
            return Err(err(
                "START is empty: give a date-time such as 2026-01-01T00:00:00Z (expected R[n]/START/PERIOD)"
                    .to_string(),
            ));
        }
        let pieces = Pieces::parse(*start)
            .map_err(|e| err(format!("START \"{start}\" is not an ISO 8601 date-time: {e}")))?;
        if pieces.time_zone_annotation().is_some() {
            return Err(err(format!(
                "START \"{start}\": time zone annotations are not supported; give the job's time zone instead"
            )));
        }
        let start_civil = DateTime::from_parts(pieces.date(), pieces.time().unwrap_or(Time::midnight()));
        let start_offset = pieces.offset().map(|o| o.to_numeric_offset().seconds());

        let bad_period = |why: &str| err(format!("PERIOD \"{period}\" {why}"));
        let unsigned = period.strip_prefix('+').unwrap_or(period);
        if unsigned.starts_with('-') {
            return Err(bad_period("is negative; it must be positive"));
        }
        if !(unsigned.starts_with('P') || unsigned.starts_with('p')) {
            return Err(bad_period("is not an ISO 8601 duration such as PT2H, P1D or P1M"));
        }
        let span: Span = unsigned
            .parse()
            .map_err(|e| bad_period(&format!("is not an ISO 8601 duration such as PT2H, P1D or P1M: {e}")))?;
        if span.is_negative() {
            return Err(bad_period("is negative; it must be positive"));
        }
        if span.is_zero() {
            return Err(bad_period("is zero; it must be positive"));
        }
        Ok(RepeatingInterval {
            text: text.to_string(),
            repeats,
            start: start_civil,
            start_offset,
            period: Period::from_span(&span),
        })
    }

    /// The number of occurrences, `None` for forever.
    pub fn repeats(&self) -> Option<u64> {
        self.repeats
    }

    /// Resolves START and the arithmetic zone for time zone `tz`.
    fn context(&self, tz: &str) -> Result<IsoContext, ScheduleError> {
        let out_of_range =
            || ScheduleError::Iso { text: self.text.clone(), reason: "START is out of range".to_string() };
        let zone = match self.start_offset {
            Some(secs) if is_utc_name(tz) => {
                TimeZone::fixed(Offset::from_seconds(secs).map_err(|_| out_of_range())?)
            }
            _ => resolve_time_zone(tz)?,
        };
        let start = zone.to_ambiguous_timestamp(self.start).compatible().map_err(|_| out_of_range())?;
        let fixed_zone = zone.to_fixed_offset().is_ok();
        Ok(IsoContext {
            start_nanos: start.as_nanosecond(),
            start_civil: self.start,
            zone,
            fixed_period: self.period.fixed_nanos(fixed_zone),
            approx_period: self.period.approx_nanos().max(1),
            period: self.period,
            repeats: self.repeats,
        })
    }
}

/// A repeating interval resolved in a time zone.
struct IsoContext {
    zone: TimeZone,
    start_civil: DateTime,
    start_nanos: i128,
    fixed_period: Option<i128>,
    approx_period: i128,
    period: Period,
    repeats: Option<u64>,
}

impl IsoContext {
    /// Occurrence `k` in nanoseconds since the epoch, ignoring the repeat count; None when it is
    /// beyond what jiff represents (treated as later than everything).
    fn unbounded(&self, k: u64) -> Option<i128> {
        if let Some(p) = self.fixed_period {
            return self.start_nanos.checked_add(p.checked_mul(i128::from(k))?);
        }
        let civil = self.start_civil.checked_add(self.period.calendar_times(k)?).ok()?;
        let base = self.zone.to_ambiguous_timestamp(civil).compatible().ok()?;
        base.as_nanosecond().checked_add(self.period.time_nanos().checked_mul(i128::from(k))?)
    }

    /// Occurrence `k`, None when `k` is past the repeat count or not representable.
    fn occurrence(&self, k: u64) -> Option<i128> {
        if self.repeats.is_some_and(|n| k >= n) {
            return None;
        }
        self.unbounded(k)
    }

    /// `unbounded(k) > a`, with unrepresentable occurrences counting as later.
    fn later(&self, k: u64, a: i128) -> bool {
        self.unbounded(k).is_none_or(|t| t > a)
    }

    /// The smallest `k` whose occurrence is strictly after `a` (not limited by the repeat count:
    /// callers compare with it).
    fn first_after_unbounded(&self, a: i128) -> u64 {
        if a < self.start_nanos {
            return 0;
        }
        if let Some(p) = self.fixed_period {
            return u64::try_from((a - self.start_nanos) / p + 1).unwrap_or(u64::MAX);
        }
        // Calendar period: occurrences increase with k. Bracket around an estimate, then bisect.
        let estimate = u64::try_from((a - self.start_nanos) / self.approx_period).unwrap_or(u64::MAX);
        let (mut lo, mut hi);
        if self.later(estimate, a) {
            // Find lo <= a below.
            hi = estimate;
            let mut step = 1u64;
            loop {
                let cand = hi.saturating_sub(step);
                if cand == 0 || !self.later(cand, a) {
                    lo = cand;
                    break;
                }
                hi = cand;
                step = step.saturating_mul(2);
            }
            if lo == 0 && self.later(0, a) {
                return 0;
            }
        } else {
            lo = estimate;
            let mut step = 1u64;
            loop {
                let cand = lo.saturating_add(step);
                if cand == u64::MAX || self.later(cand, a) {
                    hi = cand;
                    break;
                }
                lo = cand;
                step = step.saturating_mul(2);
            }
        }
        // Invariant: unbounded(lo) <= a < unbounded(hi).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.later(mid, a) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// Like `first_after_unbounded`, capped at the repeat count.
    fn first_after(&self, a: i128) -> u64 {
        let k = self.first_after_unbounded(a);
        self.repeats.map_or(k, |n| k.min(n))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        let t: jiff::Timestamp = s.parse().unwrap();
        Timestamp(u64::try_from(t.as_nanosecond()).unwrap())
    }

    fn rfc(t: Timestamp) -> String {
        jiff::Timestamp::from_nanosecond(i128::from(t.as_nanos())).unwrap().to_string()
    }

    fn next(s: &str, after: &str, tz: &str) -> Option<String> {
        Schedule::parse(s).unwrap().next_after(ts(after), tz).unwrap().map(rfc)
    }

    /// The first `n` occurrences after `after`.
    fn series(s: &str, after: &str, tz: &str, n: usize) -> Vec<String> {
        let sched = Schedule::parse(s).unwrap();
        let mut out = Vec::new();
        let mut cur = ts(after);
        for _ in 0..n {
            match sched.next_after(cur, tz).unwrap() {
                Some(t) => {
                    out.push(rfc(t));
                    cur = t;
                }
                None => break,
            }
        }
        out
    }

    fn between(s: &str, after: &str, upto: &str, tz: &str, cap: u64) -> (Option<String>, u64) {
        let (last, n) =
            Schedule::parse(s).unwrap().occurrences_between(ts(after), ts(upto), tz, cap).unwrap();
        (last.map(rfc), n)
    }

    fn err(s: &str) -> String {
        Schedule::parse(s).unwrap_err().to_string()
    }

    fn cron(s: &str) -> CronSchedule {
        match Schedule::parse(s).unwrap() {
            Schedule::Cron(c) => c,
            other => panic!("not a cron: {other:?}"),
        }
    }

    fn bits(mask: u64) -> Vec<u32> {
        (0..64).filter(|i| mask & (1u64 << i) != 0).collect()
    }

    #[test]
    fn civil_day_arithmetic() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(weekday(0), 4); // Thursday
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for d in -1_000_000..1_000_000i64 {
            if d % 997 == 0 {
                let (y, m, dd) = civil_from_days(d);
                assert_eq!(days_from_civil(y, m, dd), d);
            }
        }
        assert_eq!(weekday(days_from_civil(2026, 3, 29)), 0); // Sunday
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
    }

    #[test]
    fn field_syntax() {
        let c = cron("*/15 0-6/2 1,15,20-22 * ?");
        assert_eq!(bits(c.minutes), vec![0, 15, 30, 45]);
        assert_eq!(bits(u64::from(c.hours)), vec![0, 2, 4, 6]);
        assert_eq!(bits(u64::from(c.days_of_month)), vec![1, 15, 20, 21, 22]);
        assert_eq!(bits(u64::from(c.months)), (1..=12).collect::<Vec<_>>());
        assert_eq!(c.days_of_week, 0x7f);
        assert!(c.dom_restricted);
        assert!(!c.dow_restricted);

        let c = cron("5/20 22/1 * jan,Mar-may sun-tue");
        assert_eq!(bits(c.minutes), vec![5, 25, 45]);
        assert_eq!(bits(u64::from(c.hours)), vec![22, 23]);
        assert_eq!(bits(u64::from(c.months)), vec![1, 3, 4, 5]);
        assert_eq!(bits(u64::from(c.days_of_week)), vec![0, 1, 2]);

        // 7 and 0 are both Sunday.
        assert_eq!(cron("0 0 * * 7").days_of_week, 1);
        assert_eq!(cron("0 0 * * 0").days_of_week, 1);
        assert_eq!(bits(u64::from(cron("0 0 * * 5-7").days_of_week)), vec![0, 5, 6]);
        assert_eq!(bits(u64::from(cron("0 0 * * FRI-SAT").days_of_week)), vec![5, 6]);
        assert_eq!(bits(u64::from(cron("0 0 * * */2").days_of_week)), vec![0, 2, 4, 6]);
        assert!(!cron("0 0 */2 * *").dom_restricted);
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(Schedule::parse("  */5   *  * * *\t").unwrap().to_string(), "*/5 * * * *");
        assert_eq!(Schedule::parse("@Daily").unwrap().to_string(), "@daily");
        let iso = "R10/2012-10-01T05:52:00Z/PT2S";
        assert_eq!(Schedule::parse(iso).unwrap().to_string(), iso);
        assert_eq!(iso.parse::<Schedule>().unwrap(), Schedule::parse(iso).unwrap());
    }

    #[test]
    fn macros() {
        assert_eq!(cron("@yearly"), CronSchedule { text: "@yearly".into(), ..cron("0 0 1 1 *") });
        assert_eq!(cron("@annually"), CronSchedule { text: "@annually".into(), ..cron("0 0 1 1 *") });
        assert_eq!(cron("@monthly"), CronSchedule { text: "@monthly".into(), ..cron("0 0 1 * *") });
        assert_eq!(cron("@weekly"), CronSchedule { text: "@weekly".into(), ..cron("0 0 * * 0") });
        assert_eq!(cron("@daily"), CronSchedule { text: "@daily".into(), ..cron("0 0 * * *") });
        assert_eq!(cron("@midnight"), CronSchedule { text: "@midnight".into(), ..cron("0 0 * * *") });
        assert_eq!(cron("@hourly"), CronSchedule { text: "@hourly".into(), ..cron("0 * * * *") });
        // 2026-01-01 is a Thursday.
        assert_eq!(next("@weekly", "2026-01-01T00:00:00Z", ""), Some("2026-01-04T00:00:00Z".into()));
        assert_eq!(next("@yearly", "2026-01-01T00:00:00Z", ""), Some("2027-01-01T00:00:00Z".into()));
        assert_eq!(next("@monthly", "2026-01-31T12:00:00Z", "UTC"), Some("2026-02-01T00:00:00Z".into()));
        assert_eq!(next("@hourly", "2026-01-31T12:00:00Z", ""), Some("2026-01-31T13:00:00Z".into()));
        assert_eq!(next("@daily", "2026-01-31T12:00:00Z", ""), Some("2026-02-01T00:00:00Z".into()));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err("0 0 * * 8"), "cron day-of-week field \"8\": value 8 out of range 0-7");
        assert_eq!(err("60 * * * *"), "cron minute field \"60\": value 60 out of range 0-59");
        assert_eq!(err("* 24 * * *"), "cron hour field \"24\": value 24 out of range 0-23");
        assert_eq!(err("* * 0 * *"), "cron day-of-month field \"0\": value 0 out of range 1-31");
        assert_eq!(err("* * * 13 *"), "cron month field \"13\": value 13 out of range 1-12");
        assert_eq!(
            err("99999999999 * * * *"),
            "cron minute field \"99999999999\": value 99999999999 out of range 0-59"
        );
        assert!(err("* * * FOO *").contains("\"FOO\" is not a number or a month name (JAN-DEC)"));
        assert!(err("* * * * FOO").contains("or a weekday name (SUN-SAT)"));
        assert!(err("MON * * * *").starts_with("cron minute field \"MON\": \"MON\" is not a number"));
        assert!(err("*/0 * * * *").contains("step \"0\" is not a positive number"));
        assert!(err("*/x * * * *").contains("step \"x\" is not a positive number"));
        assert!(err("5-3 * * * *").contains("range 5-3 is backwards"));
        assert!(err("* * * * FRI-MON").contains("range 5-1 is backwards"));
        assert!(err("1,,2 * * * *").contains("empty list item"));
        assert!(err("1- * * * *").contains("empty value"));
        assert!(err("* * * *")
            .contains("expected 5 fields (minute hour day-of-month month day-of-week), found 4"));
        assert!(err("* * * * * * * *").contains("found 8"));
        let six = err("0 * * * * *");
        assert!(six.contains("6 fields: seconds and year fields are not supported"), "{six}");
        assert!(err("0 0 * * * * 2026").contains("7 fields"));
        for quartz in ["0 0 L * *", "0 0 15W * *", "0 0 LW * *", "0 0 * * 5L", "0 0 * * FRIL", "0 0 * * 5#3"]
        {
            let e = err(quartz);
            assert!(e.contains("L, W and # are not supported; supported are *"), "{quartz}: {e}");
        }
        assert!(err("@reboot").contains("@reboot is not supported"));
        assert!(err("@every 5m").contains("@every is not supported"));
        assert!(err("@fortnightly").contains("unknown macro"));
        assert!(err("@daily 5").contains("takes no further fields"));
        assert_eq!(Schedule::parse("   ").unwrap_err(), ScheduleError::Empty);
    }

    #[test]
    fn next_after_basics_and_strictly_after() {
        assert_eq!(next("30 4 * * *", "2026-01-01T00:00:00Z", ""), Some("2026-01-01T04:30:00Z".into()));
        // Exactly at an occurrence: the following one.
        assert_eq!(next("30 4 * * *", "2026-01-01T04:30:00Z", ""), Some("2026-01-02T04:30:00Z".into()));
        // A nanosecond before.
        assert_eq!(
            next("30 4 * * *", "2026-01-01T04:29:59.999999999Z", ""),
            Some("2026-01-01T04:30:00Z".into())
        );
        // Within the occurrence's second: strictly after it.
        assert_eq!(next("* * * * *", "2026-01-01T04:30:00.5Z", ""), Some("2026-01-01T04:31:00Z".into()));
        assert_eq!(next("* * * * *", "2026-12-31T23:59:00Z", ""), Some("2027-01-01T00:00:00Z".into()));
        assert_eq!(
            series("*/20 9-10 * * MON-FRI", "2026-01-02T10:30:00Z", "", 4),
            // Friday 10:40, then Monday 09:00.
            vec![
                "2026-01-02T10:40:00Z",
                "2026-01-05T09:00:00Z",
                "2026-01-05T09:20:00Z",
                "2026-01-05T09:40:00Z"
            ]
        );
        assert_eq!(next("0 12 * DEC *", "2026-01-01T00:00:00Z", ""), Some("2026-12-01T12:00:00Z".into()));
        assert_eq!(next("0 0 31 * *", "2026-01-31T00:00:00Z", ""), Some("2026-03-31T00:00:00Z".into()));
        // In a zone: 09:00 New York in winter is 14:00Z.
        assert_eq!(
            next("0 9 * * *", "2026-01-01T00:00:00Z", "America/New_York"),
            Some("2026-01-01T14:00:00Z".into())
        );
        assert_eq!(
            next("0 9 * * *", "2026-07-01T00:00:00Z", "Asia/Kolkata"),
            Some("2026-07-01T03:30:00Z".into())
        );
    }

    #[test]
    fn vixie_day_rule() {
        // Both restricted: the 13th OR any Friday. January 2026: Fri 2, Fri 9, Tue 13, Fri 16.
        assert_eq!(
            series("0 0 13 * 5", "2026-01-01T00:00:00Z", "", 4),
            vec![
                "2026-01-02T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-13T00:00:00Z",
                "2026-01-16T00:00:00Z"
            ]
        );
        // Day-of-week starts with '*' (*/5 = Sunday, Friday): both must match: 2026-02-13 is a Friday.
        assert_eq!(next("0 0 13 * */5", "2026-01-01T00:00:00Z", ""), Some("2026-02-13T00:00:00Z".into()));
        // Day-of-month '*': only weekday counts.
        assert_eq!(next("0 0 * * 2", "2026-01-01T00:00:00Z", ""), Some("2026-01-06T00:00:00Z".into()));
        // Day-of-month '?' is like '*'.
        assert_eq!(next("0 0 ? * 2", "2026-01-01T00:00:00Z", ""), Some("2026-01-06T00:00:00Z".into()));
        // Day-of-month */10 (1,11,21,31) and Sunday: AND. Sunday the 11th: 2026-01-11.
        assert_eq!(next("0 0 */10 * SUN", "2026-01-01T00:00:00Z", ""), Some("2026-01-11T00:00:00Z".into()));
    }

    #[test]
    fn leap_day() {
        assert_eq!(next("0 0 29 2 *", "2026-01-01T00:00:00Z", ""), Some("2028-02-29T00:00:00Z".into()));
        assert_eq!(next("0 0 29 2 *", "2028-02-29T00:00:00Z", ""), Some("2032-02-29T00:00:00Z".into()));
        // 2100 is not a leap year: 2096 → 2104, 8 years.
        assert_eq!(next("0 0 29 2 *", "2096-03-01T00:00:00Z", ""), Some("2104-02-29T00:00:00Z".into()));
        assert_eq!(
            between("0 0 29 2 *", "2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "", 10),
            (Some("2028-02-29T00:00:00Z".into()), 3)
        );
    }

    #[test]
    fn never_fires() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        let e = s.validate_in("UTC").unwrap_err();
        assert!(matches!(e, ScheduleError::NeverFires { .. }));
        assert!(e.to_string().starts_with("schedule \"0 0 30 2 *\" never fires"), "{e}");
        assert_eq!(s.next_after(ts("2026-01-01T00:00:00Z"), "").unwrap(), None);
        assert_eq!(
            s.occurrences_between(ts("2026-01-01T00:00:00Z"), ts("2036-01-01T00:00:00Z"), "", 5).unwrap(),
            (None, 0)
        );
        assert!(Schedule::parse("0 0 31 4,6,9,11 *").unwrap().validate_in("").is_err());
        // Fires thanks to the OR rule (every Monday in February).
        assert!(Schedule::parse("0 0 30 2 MON").unwrap().validate_in("").is_ok());
        assert!(Schedule::parse("0 0 29 2 *").unwrap().validate_in("Europe/Berlin").is_ok());
        assert!(Schedule::parse("0 0 31 1-4 *").unwrap().validate_in("").is_ok());
    }

    #[test]
    fn time_zone_errors() {
        assert_eq!(
            validate_time_zone("Mars/Base").unwrap_err().to_string(),
            "time zone \"Mars/Base\": unknown (IANA names such as Europe/Berlin or UTC)"
        );
        assert!(validate_time_zone("").is_ok());
        assert!(validate_time_zone("UTC").is_ok());
        assert!(validate_time_zone("Europe/Berlin").is_ok());
        assert!(validate_time_zone("America/Argentina/Buenos_Aires").is_ok());
        let s = Schedule::parse("* * * * *").unwrap();
        assert!(matches!(
            s.next_after(ts("2026-01-01T00:00:00Z"), "Mars/Base"),
            Err(ScheduleError::TimeZone { .. })
        ));
        assert!(s.validate_in("Mars/Base").is_err());
        assert!(s
            .occurrences_between(ts("2026-01-01T00:00:00Z"), ts("2026-01-02T00:00:00Z"), "Nowhere", 1)
            .is_err());
        let r = Schedule::parse("R/2026-01-01T00:00:00Z/PT1H").unwrap();
        assert!(r.validate_in("Mars/Base").is_err());
        assert!(r.next_after(ts("2026-01-01T00:00:00Z"), "Mars/Base").is_err());
    }

    #[test]
    fn occurrences_between_cap_and_exact_last() {
        // Per minute over 30 days: 43200 occurrences, counting stops at the cap.
        assert_eq!(
            between("* * * * *", "2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z", "", 100),
            (Some("2026-01-31T00:00:00Z".into()), 100)
        );
        assert_eq!(
            between("* * * * *", "2026-01-01T00:00:00Z", "2026-01-30T12:34:56.789Z", "Europe/Berlin", 100),
            (Some("2026-01-30T12:34:00Z".into()), 100)
        );
        // Uncapped count is exact.
        assert_eq!(
            between("* * * * *", "2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z", "", u64::MAX),
            (Some("2026-01-31T00:00:00Z".into()), 30 * 24 * 60)
        );
        // (after, upto]: after excluded, upto included.
        assert_eq!(
            between("0 * * * *", "2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z", "", 10),
            (Some("2026-01-01T03:00:00Z".into()), 3)
        );
        assert_eq!(
            between("0 * * * *", "2026-01-01T00:00:00Z", "2026-01-01T02:59:59Z", "", 10),
            (Some("2026-01-01T02:00:00Z".into()), 2)
        );
        assert_eq!(between("0 * * * *", "2026-01-01T00:00:00Z", "2026-01-01T00:59:00Z", "", 10), (None, 0));
        assert_eq!(between("0 * * * *", "2026-01-01T05:00:00Z", "2026-01-01T01:00:00Z", "", 10), (None, 0));
        assert_eq!(
            between("0 * * * *", "2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z", "", 0),
            (Some("2026-01-01T03:00:00Z".into()), 0)
        );
        // Down for ten years with a yearly job.
        assert_eq!(
            between("0 0 1 1 *", "2016-06-01T00:00:00Z", "2026-06-01T00:00:00Z", "", 100),
            (Some("2026-01-01T00:00:00Z".into()), 10)
        );
    }

    #[test]
    fn berlin_spring_forward() {
        // 2026-03-29: 02:00 CET (01:00Z) jumps to 03:00 CEST.
        let tz = "Europe/Berlin";
        assert_eq!(
            series("30 2 * * *", "2026-03-27T12:00:00Z", tz, 3),
            vec![
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:30:00Z", // 02:30 does not exist: 03:30 CEST
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
        assert_eq!(
            between("30 2 * * *", "2026-03-28T12:00:00Z", "2026-03-29T22:00:00Z", tz, 10),
            (Some("2026-03-29T01:30:00Z".into()), 1)
        );
        // Every 30 minutes: 01:00 CET, 01:30 CET, then 02:00 and 03:00 are both 01:00Z,
        // 02:30 and 03:30 both 01:30Z.
        assert_eq!(
            series("*/30 * * * *", "2026-03-28T23:50:00Z", tz, 6),
            vec![
                "2026-03-29T00:00:00Z",
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-29T02:00:00Z",
                "2026-03-29T02:30:00Z",
            ]
        );
        assert_eq!(
            between("*/30 * * * *", "2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z", tz, 100),
            (Some("2026-03-29T02:00:00Z".into()), 4)
        );
        // Backward search lands on the gap occurrence.
        assert_eq!(
            between("30 2 * * *", "2026-03-28T12:00:00Z", "2026-03-29T01:45:00Z", tz, 10),
            (Some("2026-03-29T01:30:00Z".into()), 1)
        );
        // A minute only in the gap: 02:15 → 03:15 CEST = 01:15Z.
        assert_eq!(next("15 2 29 3 *", "2026-01-01T00:00:00Z", tz), Some("2026-03-29T01:15:00Z".into()));
        // Only minutes at the gap's end, backward from inside it.
        assert_eq!(
            between("59 2 * * *", "2026-03-28T00:00:00Z", "2026-03-29T01:59:00Z", tz, 10),
            (Some("2026-03-29T01:59:00Z".into()), 2)
        );
    }

    #[test]
    fn berlin_fall_back() {
        // 2026-10-25: 03:00 CEST (01:00Z) falls back to 02:00 CET; 02:00-02:59 occurs twice.
        let tz = "Europe/Berlin";
        assert_eq!(
            series("30 2 * * *", "2026-10-24T12:00:00Z", tz, 2),
            vec![
                "2026-10-25T00:30:00Z", // the first 02:30 (CEST)
                "2026-10-26T01:30:00Z", // 02:30 CET
            ]
        );
        assert_eq!(
            between("30 2 * * *", "2026-10-24T12:00:00Z", "2026-10-26T00:00:00Z", tz, 10),
            (Some("2026-10-25T00:30:00Z".into()), 1)
        );
        // The second 02:30 (01:30Z) is not an occurrence, backward either.
        assert_eq!(
            between("30 2 * * *", "2026-10-24T12:00:00Z", "2026-10-25T01:45:00Z", tz, 10),
            (Some("2026-10-25T00:30:00Z".into()), 1)
        );
        assert_eq!(
            series("*/30 * * * *", "2026-10-24T22:50:00Z", tz, 7),
            vec![
                "2026-10-24T23:00:00Z", // 01:00 CEST
                "2026-10-24T23:30:00Z", // 01:30 CEST
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST
                // 02:00 and 02:30 CET repeat civil minutes that already fired.
                "2026-10-25T02:00:00Z", // 03:00 CET
                "2026-10-25T02:30:00Z",
                "2026-10-25T03:00:00Z",
            ]
        );
        assert_eq!(
            between("*/30 * * * *", "2026-10-24T23:00:00Z", "2026-10-25T02:00:00Z", tz, 100),
            (Some("2026-10-25T02:00:00Z".into()), 4)
        );
        assert_eq!(
            between("*/30 * * * *", "2026-10-24T23:00:00Z", "2026-10-25T01:59:00Z", tz, 100),
            (Some("2026-10-25T00:30:00Z".into()), 3)
        );
        // Hourly in the repeated hour: 02:00 fires once (00:00Z), 03:00 CET is 02:00Z.
        assert_eq!(
            series("0 * * * *", "2026-10-24T23:30:00Z", tz, 3),
            vec!["2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"]
        );
    }

    #[test]
    fn search_horizon_and_range() {
        // Nothing representable after year 2554.
        let s = Schedule::parse("* * * * *").unwrap();
        assert_eq!(s.next_after(Timestamp(u64::MAX - 1), "").unwrap(), None);
        let last_second = Timestamp(u64::MAX / 1_000_000_000 * 1_000_000_000);
        assert_eq!(s.next_after(last_second, "").unwrap(), None);
        assert_eq!(next("0 0 1 1 *", "1970-01-01T00:00:00Z", ""), Some("1971-01-01T00:00:00Z".into()));
        // A minute after the epoch in a zone east of UTC.
        assert_eq!(
            next("* * * * *", "1970-01-01T00:00:00Z", "Asia/Tokyo"),
            Some("1970-01-01T00:01:00Z".into())
        );
    }

    #[test]
    fn iso_parse_and_errors() {
        let Schedule::Repeating(r) = Schedule::parse("R10/2012-10-01T05:52:00Z/PT2S").unwrap() else {
            panic!("not an interval")
        };
        assert_eq!(r.repeats(), Some(10));
        assert_eq!(r.start_offset, Some(0));
        assert_eq!(
            err("R5/2026-01-01T00:00:00Z"),
            "ISO 8601 schedule \"R5/2026-01-01T00:00:00Z\": expected R[n]/START/PERIOD"
        );
        assert!(err("R5/2026-01-01T00:00:00Z/PT1H/x").contains("expected R[n]/START/PERIOD"));
        assert!(err("Rx/2026-01-01T00:00:00Z/PT1H").contains("repeat count \"Rx\""));
        assert!(err("R99999999999999999999999/2026-01-01T00:00:00Z/PT1H").contains("too large"));
        assert!(err("R//PT1H").contains("START is empty"));
        assert!(err("R/yesterday/PT1H").contains("START \"yesterday\" is not an ISO 8601 date-time"));
        assert!(err("R/2026-01-01T00:00:00[UTC]/PT1H").contains("annotations are not supported"));
        assert!(err("R/2026-01-01T00:00:00Z/PT0S").contains("is zero"));
        assert!(err("R/2026-01-01T00:00:00Z/P0D").contains("is zero"));
        assert!(err("R/2026-01-01T00:00:00Z/-PT1H").contains("is negative"));
        assert!(err("R/2026-01-01T00:00:00Z/1h").contains("not an ISO 8601 duration"));
        assert!(err("R/2026-01-01T00:00:00Z/PXYZ").contains("not an ISO 8601 duration"));
        assert!(err("R/2026-01-01T00:00:00Z/").contains("not an ISO 8601 duration"));
        assert!(Schedule::parse("R/2026-01-01T00:00:00+02:00/PT1.5S").is_ok());
    }

    #[test]
    fn iso_chronos_examples() {
        // R10/…/PT2S: ten occurrences two seconds apart, the last at 05:52:18.
        let s = "R10/2012-10-01T05:52:00Z/PT2S";
        assert_eq!(next(s, "2012-01-01T00:00:00Z", ""), Some("2012-10-01T05:52:00Z".into()));
        assert_eq!(next(s, "2012-10-01T05:52:00Z", ""), Some("2012-10-01T05:52:02Z".into()));
        assert_eq!(next(s, "2012-10-01T05:52:16Z", ""), Some("2012-10-01T05:52:18Z".into()));
        assert_eq!(next(s, "2012-10-01T05:52:18Z", ""), None);
        assert_eq!(
            between(s, "2012-01-01T00:00:00Z", "2013-01-01T00:00:00Z", "", 100),
            (Some("2012-10-01T05:52:18Z".into()), 10)
        );
        assert_eq!(
            between(s, "2012-10-01T05:52:01Z", "2012-10-01T05:52:09Z", "", 100),
            (Some("2012-10-01T05:52:08Z".into()), 4)
        );
        // With a zone, START's civil time is read in it: 05:52 CEST is 03:52Z.
        assert_eq!(
            next("R10/2012-10-01T05:52:00Z/PT2S", "2012-01-01T00:00:00Z", "Europe/Berlin"),
            Some("2012-10-01T03:52:00Z".into())
        );
        let s = "R/2014-03-08T20:00:00.000Z/PT2H";
        assert_eq!(next(s, "2014-03-08T20:00:00Z", ""), Some("2014-03-08T22:00:00Z".into()));
        assert_eq!(next(s, "2026-01-01T00:30:00Z", ""), Some("2026-01-01T02:00:00Z".into()));
        assert_eq!(
            between(s, "2014-03-08T19:00:00Z", "2024-03-08T20:00:00Z", "", 7),
            // 3653 days × 12 + 1.
            (Some("2024-03-08T20:00:00Z".into()), 7)
        );
        assert_eq!(
            between(s, "2014-03-08T19:00:00Z", "2024-03-08T20:00:00Z", "", u64::MAX),
            (Some("2024-03-08T20:00:00Z".into()), 3653 * 12 + 1)
        );
        // Fractional seconds.
        assert_eq!(
            series("R3/2026-01-01T00:00:00Z/PT1.5S", "2025-12-31T00:00:00Z", "", 5),
            vec!["2026-01-01T00:00:00Z", "2026-01-01T00:00:01.5Z", "2026-01-01T00:00:03Z"]
        );
    }

    #[test]
    fn iso_r0_and_exhaustion() {
        assert_eq!(next("R0/2026-01-01T00:00:00Z/PT1H", "2020-01-01T00:00:00Z", ""), None);
        assert_eq!(
            between("R0/2026-01-01T00:00:00Z/PT1H", "2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "", 5),
            (None, 0)
        );
        assert!(Schedule::parse("R0/2026-01-01T00:00:00Z/PT1H")
            .unwrap()
            .validate_in("Europe/Berlin")
            .is_ok());
        assert_eq!(
            series("R3/2026-01-01T00:00:00Z/P1D", "2020-01-01T00:00:00Z", "", 10),
            vec!["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]
        );
        assert_eq!(next("R3/2026-01-01T00:00:00Z/P1D", "2026-01-03T00:00:00Z", ""), None);
        assert_eq!(
            between("R3/2026-01-01T00:00:00Z/P1D", "2026-01-02T12:00:00Z", "2027-01-01T00:00:00Z", "", 10),
            (Some("2026-01-03T00:00:00Z".into()), 1)
        );
        assert_eq!(
            between("R3/2026-01-01T00:00:00Z/P1M", "2026-01-02T12:00:00Z", "2027-01-01T00:00:00Z", "", 10),
            (Some("2026-03-01T00:00:00Z".into()), 2)
        );
    }

    #[test]
    fn iso_month_end() {
        // START + k×P1M, not repeated addition: Jan 31, Feb 28, Mar 31, Apr 30, May 31.
        assert_eq!(
            series("R/2026-01-31T10:00:00Z/P1M", "2026-01-01T00:00:00Z", "", 5),
            vec![
                "2026-01-31T10:00:00Z",
                "2026-02-28T10:00:00Z",
                "2026-03-31T10:00:00Z",
                "2026-04-30T10:00:00Z",
                "2026-05-31T10:00:00Z",
            ]
        );
        // Far ahead by search, not by stepping: 2036-02 is k = 121, 2036 is a leap year.
        assert_eq!(
            next("R/2026-01-31T10:00:00Z/P1M", "2036-02-01T00:00:00Z", ""),
            Some("2036-02-29T10:00:00Z".into())
        );
        assert_eq!(
            between(
                "R/2026-01-31T10:00:00Z/P1M",
                "2026-01-01T00:00:00Z",
                "2036-02-01T00:00:00Z",
                "",
                u64::MAX
            ),
            (Some("2036-01-31T10:00:00Z".into()), 121)
        );
        // Yearly from a leap day.
        assert_eq!(
            series("R/2024-02-29T00:00:00Z/P1Y", "2024-03-01T00:00:00Z", "", 4),
            vec![
                "2025-02-28T00:00:00Z",
                "2026-02-28T00:00:00Z",
                "2027-02-28T00:00:00Z",
                "2028-02-29T00:00:00Z"
            ]
        );
    }

    #[test]
    fn iso_across_dst_in_berlin() {
        let tz = "Europe/Berlin";
        // P1D keeps 01:30 local: CET (+1) then CEST (+2).
        assert_eq!(
            series("R5/2026-03-27T01:30:00/P1D", "2026-01-01T00:00:00Z", tz, 6),
            vec![
                "2026-03-27T00:30:00Z",
                "2026-03-28T00:30:00Z",
                "2026-03-29T00:30:00Z",
                "2026-03-29T23:30:00Z",
                "2026-03-30T23:30:00Z",
            ]
        );
        // The example from the brief starts on the gap day itself.
        assert_eq!(
            series("R5/2026-03-29T01:30:00/P1D", "2026-01-01T00:00:00Z", tz, 3),
            vec!["2026-03-29T00:30:00Z", "2026-03-29T23:30:00Z", "2026-03-30T23:30:00Z"]
        );
        // PT24H is exactly 24 hours: 01:30 CET, then 02:30 CEST.
        assert_eq!(
            series("R3/2026-03-28T01:30:00/PT24H", "2026-01-01T00:00:00Z", tz, 3),
            vec!["2026-03-28T00:30:00Z", "2026-03-29T00:30:00Z", "2026-03-30T00:30:00Z"]
        );
        // Found by search far away: 2026-10-30 01:30 CET is k = 217 days after 2026-03-27.
        assert_eq!(
            next("R/2026-03-27T01:30:00/P1D", "2026-10-30T00:00:00Z", tz),
            Some("2026-10-30T00:30:00Z".into())
        );
        assert_eq!(
            between(
                "R/2026-03-27T01:30:00/P1D",
                "2026-03-26T00:00:00Z",
                "2026-10-30T00:30:00Z",
                tz,
                u64::MAX
            ),
            (Some("2026-10-30T00:30:00Z".into()), 218)
        );
        // START in the gap: 02:30 → 03:30 CEST, the next days 02:30 CEST.
        assert_eq!(
            series("R2/2026-03-29T02:30:00/P1D", "2026-01-01T00:00:00Z", tz, 3),
            vec!["2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"]
        );
    }

    #[test]
    fn iso_start_offsets_and_zones() {
        // With a zone, START's offset is ignored and its civil time read in the zone.
        assert_eq!(
            next("R1/2026-01-01T09:00:00Z/PT1H", "2025-01-01T00:00:00Z", "Europe/Berlin"),
            Some("2026-01-01T08:00:00Z".into())
        );
        assert_eq!(
            next("R1/2026-01-01T09:00:00-05:00/PT1H", "2025-01-01T00:00:00Z", "Europe/Berlin"),
            Some("2026-01-01T08:00:00Z".into())
        );
        // Without a zone, the offset counts.
        assert_eq!(
            next("R1/2026-01-01T09:00:00+02:00/PT1H", "2025-01-01T00:00:00Z", ""),
            Some("2026-01-01T07:00:00Z".into())
        );
        assert_eq!(
            next("R1/2026-01-01T09:00:00+02:00/PT1H", "2025-01-01T00:00:00Z", "UTC"),
            Some("2026-01-01T07:00:00Z".into())
        );
        // No offset and no zone: UTC.
        assert_eq!(
            next("R1/2026-01-01T09:00:00/PT1H", "2025-01-01T00:00:00Z", ""),
            Some("2026-01-01T09:00:00Z".into())
        );
        // Days in a fixed offset are exact: computed by division.
        assert_eq!(
            next("R/2026-01-30T23:00:00+02:00/P1W", "2026-03-01T00:00:00Z", ""),
            Some("2026-03-06T21:00:00Z".into())
        );
        // Before 1970: earlier occurrences are skipped.
        assert_eq!(
            next("R/1969-12-31T00:00:00Z/PT7H", "1970-01-01T00:00:00Z", ""),
            Some("1970-01-01T04:00:00Z".into())
        );
    }

    /// Every matching civil minute resolved one by one with jiff's "compatible" disambiguation:
    /// the occurrences by definition. The segment walk must give the same set.
    #[test]
    fn matches_brute_force_around_transitions() {
        let schedules =
            ["*/7 * * * *", "30 2 * * *", "0,59 * * * *", "15 0 * * *", "0 0 30 12 *", "45 1-3 * * *"];
        let mut windows: Vec<(&str, jiff::Timestamp)> = Vec::new();
        for zone in
            ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Europe/Dublin", "America/St_Johns"]
        {
            let tz = TimeZone::get(zone).unwrap();
            for t in tz.following("2026-01-01T00:00:00Z".parse().unwrap()).take(2) {
                windows.push((zone, t.timestamp()));
            }
        }
        // Samoa skipped 2011-12-30 (a 24-hour gap).
        windows.push(("Pacific/Apia", "2011-12-30T10:00:00Z".parse().unwrap()));
        windows.push(("Asia/Kolkata", "2026-06-01T00:00:00Z".parse().unwrap()));
        for (zone, center) in windows {
            let tz = TimeZone::get(zone).unwrap();
            let from = center.as_second() - 2 * SECS_PER_DAY;
            let to = center.as_second() + 2 * SECS_PER_DAY;
            for text in schedules {
                let c = cron(text);
                let mut expected = std::collections::BTreeSet::new();
                let first = Civil::from_secs_floor(from - 3 * SECS_PER_DAY);
                let last = Civil::from_secs_floor(to + 3 * SECS_PER_DAY);
                let mut t = first;
                while t <= last {
                    if bit16(c.months, t.month)
                        && c.day_matches(&t)
                        && bit32(c.hours, t.hour)
                        && bit64(c.minutes, t.minute)
                    {
                        let dt = jiff::civil::DateTime::new(
                            t.year as i16,
                            t.month as i8,
                            t.day as i8,
                            t.hour as i8,
                            t.minute as i8,
                            0,
                            0,
                        )
                        .unwrap();
                        let i = tz.to_ambiguous_timestamp(dt).compatible().unwrap().as_second();
                        if i > from && i <= to {
                            expected.insert(i);
                        }
                    }
                    t = Civil::from_secs_floor(t.to_secs() + 60);
                }
                let expected: Vec<i64> = expected.into_iter().collect();
                let mut got = Vec::new();
                let mut cur = from;
                while let Some(i) = c.next_in(&tz, cur, to) {
                    got.push(i);
                    cur = i;
                }
                assert_eq!(got, expected, "{text} in {zone} forward");
                let mut back = Vec::new();
                let mut cur = to;
                while let Some(i) = c.prev_in(&tz, cur, from + 1) {
                    back.push(i);
                    cur = i - 1;
                }
                back.reverse();
                assert_eq!(back, expected, "{text} in {zone} backward");
            }
        }
    }

    #[test]
    fn iso_matches_jiff_zoned_arithmetic() {
        // For a START that is not in a gap, the occurrences equal jiff's zoned arithmetic.
        for (text, zone) in [
            ("R/2026-01-31T01:30:00/P1M", "Europe/Berlin"),
            ("R/2026-01-31T01:30:00/P1MT1H", "America/New_York"),
            ("R/2026-03-01T02:30:00/P1W", "America/New_York"),
            ("R/2026-03-01T00:00:00/P1DT12H", "Australia/Lord_Howe"),
            ("R/2024-02-29T12:00:00/P1Y2M3DT4H5M6.007S", "Europe/Dublin"),
        ] {
            let sched = Schedule::parse(text).unwrap();
            let Schedule::Repeating(r) = &sched else { panic!() };
            let tz = TimeZone::get(zone).unwrap();
            let start = r.start.to_zoned_datetime(tz).unwrap();
            let span: Span = text.rsplit('/').next().unwrap().parse().unwrap();
            let mut cur = ts("2020-01-01T00:00:00Z");
            for k in 0..40i64 {
                let want = start.checked_add(span.checked_mul(k).unwrap()).unwrap().timestamp();
                let got = sched.next_after(cur, zone).unwrap().unwrap();
                assert_eq!(rfc(got), want.to_string(), "{text} k={k}");
                let (last, n) =
                    sched.occurrences_between(ts("2020-01-01T00:00:00Z"), got, zone, u64::MAX).unwrap();
                assert_eq!((last, n), (Some(got), k as u64 + 1), "{text} k={k}");
                cur = got;
            }
        }
    }

    #[test]
    fn deterministic() {
        let s = Schedule::parse("*/7 3-5 * * *").unwrap();
        let a = s.next_after(ts("2026-05-05T05:05:05Z"), "Australia/Lord_Howe").unwrap();
        let b = s.next_after(ts("2026-05-05T05:05:05Z"), "Australia/Lord_Howe").unwrap();
        assert_eq!(a, b);
        assert!(a.is_some());
    }
}
