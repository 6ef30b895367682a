//! systemd unit files as fleet takes them: `[Section]` headers, `Key=Value` entries (repeated
//! keys kept in order), `\` line continuations, `#`/`;` comment lines. And unit names
//! (`web.service`, templates `web@.service`, instances `web@1.service`) with the specifiers
//! fleet expands (`%n %N %p %i`).

use crate::error::FleetError;

/// A parsed unit file. A section may appear more than once (systemd merges them); the entries
/// keep the file's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitFile {
    pub sections: Vec<Section>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// Line of the `[Name]` header (1-based).
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// One `Key=Value` assignment. An empty value (`Key=`) is kept: for list settings systemd reads
/// it as "forget the earlier values" ([`UnitFile::list`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// Line where the entry starts (1-based; a continued entry spans the lines after it).
    pub line: usize,
}

impl UnitFile {
    /// Parses a unit file. The first syntax error is returned, naming its line.
    pub fn parse(text: &str) -> Result<UnitFile, FleetError> {
        let mut unit = UnitFile::default();
        // A continued line: where it started and its text so far.
        let mut pending: Option<(usize, String)> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            // Comment lines are skipped, also in the middle of a continuation (as systemd does).
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let (start, mut joined) = match pending.take() {
                Some((start, text)) => (start, text),
                None if line.is_empty() => continue,
                None => (n, String::new()),
            };
            // The backslash is replaced by a space and the next line appended.
            if let Some(rest) = line.strip_suffix('\\') {
                joined.push_str(rest);
                joined.push(' ');
                pending = Some((start, joined));
                continue;
            }
            joined.push_str(line);
            unit.line(start, &joined)?;
        }
        if let Some((start, joined)) = pending {
            // A backslash on the last line continues into nothing.
            unit.line(start, &joined)?;
        }
        Ok(unit)
    }

    fn line(&mut self, n: usize, line: &str) -> Result<(), FleetError> {
        let err = |message: String| FleetError::Syntax { line: n, message };
        let line = line.trim();
        if line.starts_with('[') {
            let name = line
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .filter(|s| !s.is_empty() && !s.contains(['[', ']']))
                .ok_or_else(|| err(format!("expected a section header \"[Name]\", found {line:?}")))?;
            self.sections.push(Section { name: name.to_string(), line: n, entries: Vec::new() });
            return Ok(());
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(format!("expected \"Key=Value\" or \"[Section]\", found {line:?}")));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(err(format!("missing key before \"=\" in {line:?}")));
        }
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(err(format!("invalid key {key:?} (letters, digits, '-' and '_')")));
        }
        let Some(section) = self.sections.last_mut() else {
            return Err(err(format!(
                "{line:?} is outside any section: a \"[Section]\" header must come first"
            )));
        };
        section.entries.push(Entry { key: key.to_string(), value: value.trim().to_string(), line: n });
        Ok(())
    }

    /// Every entry of the sections named `section`, in file order.
    pub fn entries<'a>(&'a self, section: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.sections.iter().filter(move |s| s.name == section).flat_map(|s| s.entries.iter())
    }

    /// The entries of a list setting, read as systemd does: each assignment adds to the list,
    /// and an empty one (`Key=`) empties it.
    pub fn list<'a>(&'a self, section: &'a str, key: &str) -> Vec<&'a Entry> {
        let mut out = Vec::new();
        for e in self.entries(section).filter(|e| e.key == key) {
            if e.value.is_empty() {
                out.clear();
            } else {
                out.push(e);
            }
        }
        out
    }
}

/// The unit types systemd knows (the part of a unit name after the last dot).
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

/// A unit's name: `web.service`, a template `web@.service` or an instance `web@1.service`.
/// Only `.service` units are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitName {
    /// `web@1.service`.
    pub full: String,
    /// `web`: before the `@` (or the whole name without its suffix).
    pub prefix: String,
    /// `Some("1")` for an instance, `Some("")` for a template, `None` for a plain unit.
    pub instance: Option<String>,
}

impl UnitName {
    pub fn parse(name: &str) -> Result<UnitName, FleetError> {
        let err = |message: String| FleetError::Name { name: name.to_string(), message };
        let Some((stem, kind)) = name.rsplit_once('.') else {
            return Err(err("has no type suffix (expected NAME.service)".into()));
        };
        match kind {
            "service" => {}
            "timer" => {
                return Err(err(".timer units are not supported (use shoal job create --schedule)".into()))
            }
            k if UNIT_TYPES.contains(&k) => {
                return Err(err(format!(
                    ".{k} units are not supported: only .service units map to Shoal services"
                )))
            }
            k => return Err(err(format!("unknown unit type \".{k}\" (expected NAME.service)"))),
        }
        if name.len() > 255 {
            return Err(err("is longer than 255 characters".into()));
        }
        let ok = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b":_.\\-".contains(&b));
        let (prefix, instance) = match stem.split_once('@') {
            Some((p, i)) => (p, Some(i)),
            None => (stem, None),
        };
        if prefix.is_empty() || !ok(prefix) || !instance.is_none_or(ok) {
            return Err(err(
                "invalid unit name: use letters, digits and \":_.\\-\", with at most one '@' before the instance"
                    .into(),
            ));
        }
        Ok(UnitName { full: name.to_string(), prefix: prefix.into(), instance: instance.map(str::to_string) })
    }

    /// `web@.service`: fleet keeps templates, but only their instances run.
    pub fn is_template(&self) -> bool {
        self.instance.as_deref() == Some("")
    }

    /// The name without its `.service` suffix (fleet's `%N`).
    pub fn stem(&self) -> &str {
        self.full.strip_suffix(".service").unwrap_or(&self.full)
    }

    /// Expands fleet's specifiers in an `[X-Fleet]` value as fleet does: `%n` the full name,
    /// `%N` the name without its suffix, `%p` the prefix, `%i` the instance, `%%` a percent
    /// sign; any other `%x` stays as written.
    pub fn expand_fleet(&self, s: &str) -> String {
        self.expand_with(s, |_| None).unwrap_or_else(|_| s.to_string())
    }

    /// Expands specifiers in a value systemd would expand on the node (`ExecStart=`,
    /// `Environment=`…): fleet's four, `%%`, and `%P`/`%I` (prefix and instance unescaped).
    /// The other specifiers (`%H` the host name, `%m` the machine id…) depend on the node that
    /// runs the unit and are refused.
    pub fn expand(&self, s: &str) -> Result<String, String> {
        self.expand_with(s, |c| {
            Some(format!(
                "specifier %{c} depends on the node that runs the unit and cannot be expanded when importing"
            ))
        })
    }

    fn expand_with(&self, s: &str, other: impl Fn(char) -> Option<String>) -> Result<String, String> {
        let instance = self.instance.clone().unwrap_or_default();
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push_str(&self.full),
                Some('N') => out.push_str(self.stem()),
                Some('p') => out.push_str(&self.prefix),
                Some('i') => out.push_str(&instance),
                Some('P') => out.push_str(&unescape(&self.prefix)),
                Some('I') => out.push_str(&unescape(&instance)),
                Some('%') => out.push('%'),
                Some(x) => match other(x) {
                    Some(e) => return Err(e),
                    None => {
                        out.push('%');
                        out.push(x);
                    }
                },
                None => match other('%') {
                    Some(_) => return Err("a lone '%' at the end (write %% for a percent sign)".into()),
                    None => out.push('%'),
                },
            }
        }
        Ok(out)
    }
}

/// systemd's unit-name unescaping: `-` is `/` and `\xNN` the byte NN.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let hex =
            rest.strip_prefix("\\x").and_then(|h| h.get(..2)).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (c, hex) {
            ('\\', Some(b)) => {
                out.push(char::from(b));
                rest = &rest[4..];
                continue;
            }
            ('-', _) => out.push('/'),
            _ => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(text: &str) -> String {
        match UnitFile::parse(text) {
            Ok(u) => panic!("parsed: {u:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn sections_entries_continuations_comments() {
        let text = "# leading comment\n\n[Unit]\nDescription = My  web \n; another\n[Service]\n\
                    ExecStart=/usr/bin/docker run \\\n    --name web \\\n# inside a continuation\n    nginx\n\
                    Environment=A=1\nEnvironment=\nEnvironment=B=2\nEnvironment=C=3\n[Unit]\nAfter=x\n";
        let u = UnitFile::parse(text).expect("parse");
        assert_eq!(u.sections.len(), 3);
        assert_eq!((u.sections[0].name.as_str(), u.sections[0].line), ("Unit", 3));
        assert_eq!(
            u.sections[0].entries[0],
            Entry { key: "Description".into(), value: "My  web".into(), line: 4 }
        );
        let exec = &u.sections[1].entries[0];
        assert_eq!((exec.value.as_str(), exec.line), ("/usr/bin/docker run  --name web  nginx", 7));
        let env: Vec<_> =
            u.list("Service", "Environment").iter().map(|e| (e.value.as_str(), e.line)).collect();
        assert_eq!(env, [("B=2", 13), ("C=3", 14)]);
        assert_eq!(u.sections[1].entries.iter().filter(|e| e.key == "Environment").count(), 4);
        let unit: Vec<_> = u.entries("Unit").map(|e| e.key.as_str()).collect();
        assert_eq!(unit, ["Description", "After"]);
        // A continuation on the last line ends the file.
        let u = UnitFile::parse("[Service]\nExecStart=/bin/true \\").expect("parse");
        assert_eq!(u.sections[0].entries[0].value, "/bin/true");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            syntax("[Service]\nExecStart=/bin/true\n\n\n\n\nfoo\n"),
            "line 7: expected \"Key=Value\" or \"[Section]\", found \"foo\""
        );
        assert_eq!(
            syntax("# c\nExecStart=/bin/true\n"),
            "line 2: \"ExecStart=/bin/true\" is outside any section: a \"[Section]\" header must come first"
        );
        assert_eq!(syntax("[Service\n"), "line 1: expected a section header \"[Name]\", found \"[Service\"");
        assert_eq!(syntax("[]\n"), "line 1: expected a section header \"[Name]\", found \"[]\"");
        assert_eq!(syntax("[Unit]\n=x\n"), "line 2: missing key before \"=\" in \"=x\"");
        assert_eq!(
            syntax("[Unit]\nExec Start=x\n"),
            "line 2: invalid key \"Exec Start\" (letters, digits, '-' and '_')"
        );
        // A continued entry is reported at its first line.
        assert_eq!(
            syntax("[Unit]\nbad \\\n  still bad\n"),
            "line 2: expected \"Key=Value\" or \"[Section]\", found \"bad  still bad\""
        );
    }

    #[test]
    fn unit_names() {
        let n = UnitName::parse("web@1.service").expect("instance");
        assert_eq!((n.prefix.as_str(), n.instance.as_deref(), n.stem()), ("web", Some("1"), "web@1"));
        assert!(UnitName::parse("web@.service").expect("template").is_template());
        assert_eq!(UnitName::parse("web.service").expect("plain").instance, None);
        let err = |s: &str| UnitName::parse(s).expect_err(s).to_string();
        assert_eq!(
            err("backup.timer"),
            "unit name \"backup.timer\": .timer units are not supported (use shoal job create --schedule)"
        );
        assert!(err("web.socket").contains(".socket units are not supported: only .service units"));
        assert!(err("web").contains("has no type suffix"));
        assert!(err("web.conf").contains("unknown unit type \".conf\""));
        assert!(err("we b.service").contains("invalid unit name"));
        assert!(err("a@b@c.service").contains("invalid unit name"));
        assert!(err("@x.service").contains("invalid unit name"));
    }

    #[test]
    fn specifiers() {
        let n = UnitName::parse("web-app@eu\\x2dwest.service").expect("name");
        assert_eq!(
            n.expand_fleet("%n|%N|%p|%i|%%|%H"),
            "web-app@eu\\x2dwest.service|web-app@eu\\x2dwest|web-app|eu\\x2dwest|%|%H"
        );
        assert_eq!(n.expand("%P/%I").as_deref(), Ok("web/app/eu-west"));
        assert!(n.expand("%H").expect_err("node").contains("%H depends on the node"));
        assert!(n.expand("100%").expect_err("lone").contains("lone '%'"));
        let plain = UnitName::parse("db.service").expect("name");
        assert_eq!(plain.expand("[%i]").as_deref(), Ok("[]"));
    }
}
