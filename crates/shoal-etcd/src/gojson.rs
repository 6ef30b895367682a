//! Go's `encoding/json`, `encoding/base64` and `strconv.Quote`, as far as etcd 3.4.23's JSON
//! gateway (grpc-gateway v1 with golang/protobuf's jsonpb, built with Go 1.19) shows them to a
//! client: which bodies are accepted, which error message each malformed one gets, how strings
//! and bytes are written. Ported from Go so that Shoal's gateway answers byte for byte what etcd
//! answers; nothing here is etcd-specific.
//!
//! Values are handled as Go's `json.RawMessage` is: a validated slice of the input, split one
//! level at a time ([`object_members`], [`array_elements`]) as the decoder descends. Nothing
//! recurses over the input's nesting, so a deeply nested body cannot exhaust the stack.

/// What one scanner step found (Go's `scan*` constants; only those the callers tell apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Continue,
    SkipSpace,
    EndObject,
    EndArray,
    /// The top-level value ended before this byte.
    End,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parse {
    ObjectKey,
    ObjectValue,
    ArrayValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    BeginValueOrEmpty,
    BeginValue,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    EndTop,
    InString,
    InStringEsc,
    /// Inside `\u`, with this many hex digits seen.
    InStringEscU(u8),
    Neg,
    One,
    Zero,
    Dot,
    Dot0,
    E,
    ESign,
    E0,
    /// Inside `true`, `false` or `null`: the next byte expected is `word[at]`.
    Literal(&'static [u8], usize),
    Error,
}

/// Go's `maxNestingDepth`.
const MAX_NESTING_DEPTH: usize = 10_000;

/// Go's JSON scanner (`encoding/json/scanner.go`): a byte-at-a-time state machine with Go's
/// error messages.
#[derive(Debug)]
pub(crate) struct Scanner {
    step: Step,
    parse: Vec<Parse>,
    end_top: bool,
    err: Option<String>,
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

impl Scanner {
    pub(crate) fn new() -> Self {
        Scanner { step: Step::BeginValue, parse: Vec::new(), end_top: false, err: None }
    }

    fn error(&mut self, c: u8, context: &str) -> Op {
        self.step = Step::Error;
        self.err = Some(format!("invalid character {} {context}", quote_char(c)));
        Op::Error
    }

    fn push(&mut self, c: u8, p: Parse) -> Op {
        self.parse.push(p);
        if self.parse.len() <= MAX_NESTING_DEPTH {
            Op::Continue
        } else {
            self.error(c, "exceeded max depth")
        }
    }

    fn pop(&mut self) {
        self.parse.pop();
        if self.parse.is_empty() {
            self.step = Step::EndTop;
            self.end_top = true;
        } else {
            self.step = Step::EndValue;
        }
    }

    fn step(&mut self, c: u8) -> Op {
        match self.step {
            Step::BeginValueOrEmpty => {
                if is_space(c) {
                    Op::SkipSpace
                } else if c == b']' {
                    self.end_value(c)
                } else {
                    self.begin_value(c)
                }
            }
            Step::BeginValue => self.begin_value(c),
            Step::BeginStringOrEmpty => {
                if is_space(c) {
                    Op::SkipSpace
                } else if c == b'}' {
                    if let Some(p) = self.parse.last_mut() {
                        *p = Parse::ObjectValue;
                    }
                    self.end_value(c)
                } else {
                    self.begin_string(c)
                }
            }
            Step::BeginString => self.begin_string(c),
            Step::EndValue => self.end_value(c),
            Step::EndTop => self.end_top(c),
            Step::InString => {
                if c == b'"' {
                    self.step = Step::EndValue;
                    Op::Continue
                } else if c == b'\\' {
                    self.step = Step::InStringEsc;
                    Op::Continue
                } else if c < 0x20 {
                    self.error(c, "in string literal")
                } else {
                    Op::Continue
                }
            }
            Step::InStringEsc => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.step = Step::InString;
                    Op::Continue
                }
                b'u' => {
                    self.step = Step::InStringEscU(0);
                    Op::Continue
                }
                _ => self.error(c, "in string escape code"),
            },
            Step::InStringEscU(seen) => {
                if c.is_ascii_hexdigit() {
                    self.step = if seen == 3 { Step::InString } else { Step::InStringEscU(seen + 1) };
                    Op::Continue
                } else {
                    self.error(c, "in \\u hexadecimal character escape")
                }
            }
            Step::Neg => match c {
                b'0' => {
                    self.step = Step::Zero;
                    Op::Continue
                }
                b'1'..=b'9' => {
                    self.step = Step::One;
                    Op::Continue
                }
                _ => self.error(c, "in numeric literal"),
            },
            Step::One => {
                if c.is_ascii_digit() {
                    Op::Continue
                } else {
                    self.zero(c)
                }
            }
            Step::Zero => self.zero(c),
            Step::Dot => {
                if c.is_ascii_digit() {
                    self.step = Step::Dot0;
                    Op::Continue
                } else {
                    self.error(c, "after decimal point in numeric literal")
                }
            }
            Step::Dot0 => {
                if c.is_ascii_digit() {
                    Op::Continue
                } else if c == b'e' || c == b'E' {
                    self.step = Step::E;
                    Op::Continue
                } else {
                    self.end_value(c)
                }
            }
            Step::E => {
                if c == b'+' || c == b'-' {
                    self.step = Step::ESign;
                    Op::Continue
                } else {
                    self.e_sign(c)
                }
            }
            Step::ESign => self.e_sign(c),
            Step::E0 => {
                if c.is_ascii_digit() {
                    Op::Continue
                } else {
                    self.end_value(c)
                }
            }
            Step::Literal(word, at) => {
                let want = word.get(at).copied().unwrap_or(0);
                if c == want {
                    self.step =
                        if at + 1 == word.len() { Step::EndValue } else { Step::Literal(word, at + 1) };
                    Op::Continue
                } else {
                    let word_str = String::from_utf8_lossy(word).into_owned();
                    let context = format!("in literal {word_str} (expecting {})", quote_char(want));
                    self.error(c, &context)
                }
            }
            Step::Error => Op::Error,
        }
    }

    fn begin_value(&mut self, c: u8) -> Op {
        if is_space(c) {
            return Op::SkipSpace;
        }
        let next = match c {
            b'{' => {
                self.step = Step::BeginStringOrEmpty;
                return self.push(c, Parse::ObjectKey);
            }
            b'[' => {
                self.step = Step::BeginValueOrEmpty;
                return self.push(c, Parse::ArrayValue);
            }
            b'"' => Step::InString,
            b'-' => Step::Neg,
            b'0' => Step::Zero,
            b't' => Step::Literal(b"true", 1),
            b'f' => Step::Literal(b"false", 1),
            b'n' => Step::Literal(b"null", 1),
            b'1'..=b'9' => Step::One,
            _ => return self.error(c, "looking for beginning of value"),
        };
        self.step = next;
        Op::Continue
    }

    fn begin_string(&mut self, c: u8) -> Op {
        if is_space(c) {
            return Op::SkipSpace;
        }
        if c == b'"' {
            self.step = Step::InString;
            return Op::Continue;
        }
        self.error(c, "looking for beginning of object key string")
    }

    fn end_value(&mut self, c: u8) -> Op {
        let Some(&top) = self.parse.last() else {
            // The top-level value ended before this byte.
            self.step = Step::EndTop;
            self.end_top = true;
            return self.end_top(c);
        };
        if is_space(c) {
            self.step = Step::EndValue;
            return Op::SkipSpace;
        }
        match top {
            Parse::ObjectKey => {
                if c == b':' {
                    if let Some(p) = self.parse.last_mut() {
                        *p = Parse::ObjectValue;
                    }
                    self.step = Step::BeginValue;
                    return Op::Continue;
                }
                self.error(c, "after object key")
            }
            Parse::ObjectValue => {
                if c == b',' {
                    if let Some(p) = self.parse.last_mut() {
                        *p = Parse::ObjectKey;
                    }
                    self.step = Step::BeginString;
                    return Op::Continue;
                }
                if c == b'}' {
                    self.pop();
                    return Op::EndObject;
                }
                self.error(c, "after object key:value pair")
            }
            Parse::ArrayValue => {
                if c == b',' {
                    self.step = Step::BeginValue;
                    return Op::Continue;
                }
                if c == b']' {
                    self.pop();
                    return Op::EndArray;
                }
                self.error(c, "after array element")
            }
        }
    }

    fn end_top(&mut self, c: u8) -> Op {
        if !is_space(c) {
            // Go complains about the byte on the next call; the value itself is complete.
            self.error(c, "after top-level value");
        }
        Op::End
    }

    fn zero(&mut self, c: u8) -> Op {
        if c == b'.' {
            self.step = Step::Dot;
            return Op::Continue;
        }
        if c == b'e' || c == b'E' {
            self.step = Step::E;
            return Op::Continue;
        }
        self.end_value(c)
    }

    fn e_sign(&mut self, c: u8) -> Op {
        if c.is_ascii_digit() {
            self.step = Step::E0;
            return Op::Continue;
        }
        self.error(c, "in exponent of numeric literal")
    }

    /// Go's `scanner.eof`: whether the input so far is one complete value.
    fn eof(&mut self) -> Result<(), String> {
        if let Some(e) = &self.err {
            return Err(e.clone());
        }
        if self.end_top {
            return Ok(());
        }
        self.step(b' ');
        if self.end_top {
            return Ok(());
        }
        Err(self.err.clone().unwrap_or_else(|| "unexpected end of JSON input".to_string()))
    }
}

/// Go's `checkValid` (what `json.Unmarshal` runs first): `data` must be exactly one value,
/// surrounded by optional whitespace.
pub(crate) fn check_valid(data: &[u8]) -> Result<(), String> {
    let mut s = Scanner::new();
    for &c in data {
        if s.step(c) == Op::Error {
            return Err(s.err.clone().unwrap_or_default());
        }
    }
    s.eof()
}

/// What [`ValueReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// One complete value (without surrounding whitespace).
    Value(Vec<u8>),
    /// The buffered input does not hold a complete value yet.
    NeedMore,
    /// The input ended cleanly before another value (Go's `io.EOF`).
    Eof,
    /// Malformed input; the reader is stuck with this error, as Go's decoder is.
    Error(String),
}

/// Go's `json.Decoder` reading successive values from a stream (the body of `/v3/watch`, or a
/// unary body of which only the first value counts): bytes are pushed as they arrive, values
/// come out as soon as they are complete.
#[derive(Debug)]
pub(crate) struct ValueReader {
    buf: Vec<u8>,
    /// How much of `buf` the scanner has consumed for the value in progress.
    scanned: usize,
    scanner: Scanner,
    error: Option<String>,
}

impl Default for ValueReader {
    fn default() -> Self {
        ValueReader { buf: Vec::new(), scanned: 0, scanner: Scanner::new(), error: None }
    }
}

impl ValueReader {
    /// Appends input.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next value; `eof`: no more input will come.
    pub(crate) fn next(&mut self, eof: bool) -> Next {
        if let Some(e) = &self.error {
            return Next::Error(e.clone());
        }
        let mut end = None;
        while self.scanned < self.buf.len() {
            let c = self.buf[self.scanned];
            self.scanned += 1;
            match self.scanner.step(c) {
                Op::End => {
                    // The value ended before this byte, which belongs to what follows.
                    self.scanned -= 1;
                    end = Some(self.scanned);
                    break;
                }
                Op::EndObject | Op::EndArray if self.scanner.parse.is_empty() => {
                    end = Some(self.scanned);
                    break;
                }
                Op::Error => {
                    let e = self.scanner.err.clone().unwrap_or_default();
                    self.error = Some(e.clone());
                    return Next::Error(e);
                }
                _ => {}
            }
        }
        let end = match end {
            Some(end) => end,
            None if !eof => return Next::NeedMore,
            None => {
                if self.scanner.step(b' ') == Op::End {
                    self.buf.len()
                } else if self.buf.iter().any(|&c| !is_space(c)) {
                    let e = "unexpected EOF".to_string();
                    self.error = Some(e.clone());
                    return Next::Error(e);
                } else {
                    self.buf.clear();
                    self.scanned = 0;
                    return Next::Eof;
                }
            }
        };
        let rest = self.buf.split_off(end);
        let value = std::mem::replace(&mut self.buf, rest);
        self.scanned = 0;
        self.scanner = Scanner::new();
        let start = value.iter().position(|&c| !is_space(c)).unwrap_or(value.len());
        Next::Value(value[start..].to_vec())
    }
}

/// The JSON type of a valid value, by its first byte; the names are those Go's
/// `UnmarshalTypeError` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub(crate) fn of(raw: &[u8]) -> Kind {
        match raw.first() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't') | Some(b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            _ => Kind::Number,
        }
    }

    pub(crate) fn go_name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }
}

/// The end of the value starting at `raw[at]` (valid JSON assumed), and whether it is followed
/// by more.
fn value_end(raw: &[u8], at: usize) -> usize {
    let mut depth = 0usize;
    let mut i = at;
    let mut in_string = false;
    while i < raw.len() {
        let c = raw[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => {
                    in_string = false;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return i;
                    }
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                b',' | b' ' | b'\t' | b'\r' | b'\n' | b':' if depth == 0 => return i,
                _ => {}
            }
        }
        i += 1;
    }
    raw.len()
}

fn skip_space(raw: &[u8], mut at: usize) -> usize {
    while at < raw.len() && is_space(raw[at]) {
        at += 1;
    }
    at
}

/// The members of a valid JSON object, in order (duplicates kept: Go's map keeps the last).
pub(crate) fn object_members(raw: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut i = skip_space(raw, 1);
    while i < raw.len() && raw[i] == b'"' {
        let key_end = value_end(raw, i);
        let key = unquote(&raw[i..key_end]).unwrap_or_default();
        i = skip_space(raw, key_end);
        i = skip_space(raw, i + 1); // ':'
        let end = value_end(raw, i);
        out.push((String::from_utf8_lossy(&key).into_owned(), &raw[i..end]));
        i = skip_space(raw, end);
        if i < raw.len() && raw[i] == b',' {
            i = skip_space(raw, i + 1);
        }
    }
    out
}

/// The elements of a valid JSON array, in order.
pub(crate) fn array_elements(raw: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = skip_space(raw, 1);
    while i < raw.len() && raw[i] != b']' {
        let end = value_end(raw, i);
        out.push(&raw[i..end]);
        i = skip_space(raw, end);
        if i < raw.len() && raw[i] == b',' {
            i = skip_space(raw, i + 1);
        }
    }
    out
}

fn hex4(s: &[u8]) -> Option<u32> {
    if s.len() < 6 || s[0] != b'\\' || s[1] != b'u' {
        return None;
    }
    let h = std::str::from_utf8(&s[2..6]).ok()?;
    u32::from_str_radix(h, 16).ok()
}

/// Go's `utf8.DecodeRune`: the rune at the start of `s` and its length, `None` (length 1) for
/// an invalid byte.
fn decode_rune(s: &[u8]) -> (Option<char>, usize) {
    let n = match s.first() {
        None => return (None, 0),
        Some(&b) if b < 0x80 => 1,
        Some(&b) if (0xC2..=0xDF).contains(&b) => 2,
        Some(&b) if (0xE0..=0xEF).contains(&b) => 3,
        Some(&b) if (0xF0..=0xF4).contains(&b) => 4,
        Some(_) => return (None, 1),
    };
    match s.get(..n).and_then(|p| std::str::from_utf8(p).ok()).and_then(|p| p.chars().next()) {
        Some(c) => (Some(c), n),
        None => (None, 1),
    }
}

/// Go's `unquoteBytes`: the contents of a valid JSON string literal (with its quotes), escapes
/// resolved and invalid UTF-8 replaced by U+FFFD byte by byte, as Go does.
pub(crate) fn unquote(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < 2 || raw[0] != b'"' || raw[raw.len() - 1] != b'"' {
        return None;
    }
    let s = &raw[1..raw.len() - 1];
    let mut out = Vec::with_capacity(s.len());
    let mut r = 0;
    let push = |out: &mut Vec<u8>, c: char| {
        let mut b = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    };
    while r < s.len() {
        let c = s[r];
        if c == b'\\' {
            r += 1;
            let e = *s.get(r)?;
            match e {
                b'"' | b'\\' | b'/' | b'\'' => {
                    out.push(e);
                    r += 1;
                }
                b'b' => {
                    out.push(0x08);
                    r += 1;
                }
                b'f' => {
                    out.push(0x0C);
                    r += 1;
                }
                b'n' => {
                    out.push(b'\n');
                    r += 1;
                }
                b'r' => {
                    out.push(b'\r');
                    r += 1;
                }
                b't' => {
                    out.push(b'\t');
                    r += 1;
                }
                b'u' => {
                    let rr = hex4(&s[r - 1..])?;
                    r += 5;
                    if (0xD800..0xE000).contains(&rr) {
                        let low = hex4(&s[r..]);
                        if let Some(low) =
                            low.filter(|l| (0xD800..0xDC00).contains(&rr) && (0xDC00..0xE000).contains(l))
                        {
                            let cp = 0x10000 + ((rr - 0xD800) << 10) + (low - 0xDC00);
                            push(&mut out, char::from_u32(cp).unwrap_or('\u{FFFD}'));
                            r += 6;
                        } else {
                            push(&mut out, '\u{FFFD}');
                        }
                    } else {
                        push(&mut out, char::from_u32(rr).unwrap_or('\u{FFFD}'));
                    }
                }
                _ => return None,
            }
        } else if c == b'"' || c < 0x20 {
            return None;
        } else if c < 0x80 {
            out.push(c);
            r += 1;
        } else {
            let (ch, n) = decode_rune(&s[r..]);
            push(&mut out, ch.unwrap_or('\u{FFFD}'));
            r += n.max(1);
        }
    }
    Some(out)
}

/// Go's `quoteChar`, for scanner errors: `'x'`.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        _ => {
            let mut s = String::new();
            // Go quotes `string(c)`: the byte as a rune (U+0000..U+00FF).
            escape_rune(&mut s, char::from(c), b'"');
            format!("'{s}'")
        }
    }
}

/// Go's `unicode.IsPrint`, from Rust's own notion of printable (both: letters, marks, numbers,
/// punctuation, symbols and the ASCII space).
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_whitespace() || c.is_control() {
        return false;
    }
    let mut e = c.escape_debug();
    e.next() == Some(c) && e.next().is_none() || matches!(c, '\\' | '"' | '\'')
}

/// Appends one rune as Go's `strconv.Quote` writes it between its quotes.
fn escape_rune(out: &mut String, c: char, quote: u8) {
    if c == char::from(quote) || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if is_print(c) {
        out.push(c);
        return;
    }
    match c {
        '\u{07}' => out.push_str("\\a"),
        '\u{08}' => out.push_str("\\b"),
        '\u{0C}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{0B}' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7F => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// Go's `strconv.Quote` (what `%q` prints) of arbitrary bytes.
pub(crate) fn go_quote(s: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut i = 0;
    while i < s.len() {
        let (c, n) = decode_rune(&s[i..]);
        match c {
            Some(c) => escape_rune(&mut out, c, b'"'),
            None => out.push_str(&format!("\\x{:02x}", s[i])),
        }
        i += n.max(1);
    }
    out.push('"');
    out
}

/// Appends `s` as Go's `json.Marshal` writes a string (HTML-safe: `<`, `>`, `&` escaped; also
/// U+2028 and U+2029).
pub(crate) fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' => {
                let b = c as u32 as u8;
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
            }
            c if (c as u32) < 0x20 => {
                let b = c as u32 as u8;
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Go's `base64.StdEncoding.Decode` (padding required, `\r` and `\n` ignored), with its error
/// message and offset: `illegal base64 data at input byte N`.
pub(crate) fn base64_decode(src: &[u8]) -> Result<Vec<u8>, String> {
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0;
    while si < src.len() {
        // One quantum (Go's decodeQuantum).
        let mut dbuf = [0u8; 4];
        let mut dlen = 4;
        let mut err = None;
        let mut j = 0;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // Padding is required: a short quantum is corrupt where it started.
                return Err(corrupt(si - j));
            }
            let c = src[si];
            si += 1;
            if let Some(v) = b64_value(c) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' {
                return Err(corrupt(si - 1));
            }
            // Padding: the end of the input.
            match j {
                0 | 1 => return Err(corrupt(si - 1)),
                2 => {
                    while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(corrupt(src.len()));
                    }
                    if src[si] != b'=' {
                        return Err(corrupt(si - 1));
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                si += 1;
            }
            if si < src.len() {
                err = Some(corrupt(si));
            }
            dlen = j;
            break;
        }
        let val = (u32::from(dbuf[0]) << 18)
            | (u32::from(dbuf[1]) << 12)
            | (u32::from(dbuf[2]) << 6)
            | u32::from(dbuf[3]);
        let bytes = [(val >> 16) as u8, (val >> 8) as u8, val as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if let Some(e) = err {
            return Err(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(body: &str) -> Next {
        let mut r = ValueReader::default();
        r.push(body.as_bytes());
        r.next(true)
    }

    #[test]
    fn syntax_errors_read_as_go_writes_them() {
        let err = |b: &str| match first(b) {
            Next::Error(e) => e,
            other => panic!("{b}: {other:?}"),
        };
        // Each measured against etcd 3.4.23's gateway.
        assert_eq!(err(r#"{"key":"Z3cx""#), "unexpected EOF");
        assert_eq!(err("xx"), "invalid character 'x' looking for beginning of value");
        assert_eq!(
            err(r#"{"key":"cjE=",}"#),
            "invalid character '}' looking for beginning of object key string"
        );
        assert_eq!(err(r#"{"key" "cjE="}"#), "invalid character '\"' after object key");
        assert_eq!(err(r#"{key:1}"#), "invalid character 'k' looking for beginning of object key string");
        assert_eq!(err(r#"{"key":"cjE=" "x":1}"#), "invalid character '\"' after object key:value pair");
        assert_eq!(err(r#"{"key":tru}"#), "invalid character '}' in literal true (expecting 'e')");
        assert_eq!(err(r#"{"key":"\q"}"#), "invalid character 'q' in string escape code");
        assert_eq!(err(r#"{"key":-x}"#), "invalid character 'x' in numeric literal");
        assert_eq!(err(r#"{"key":1.x}"#), "invalid character 'x' after decimal point in numeric literal");
        assert_eq!(err("{\"k\":\"\t\"}"), "invalid character '\\t' in string literal");
        assert_eq!(err("[1,]"), "invalid character ']' looking for beginning of value");
    }

    #[test]
    fn the_first_value_counts_and_an_empty_body_is_eof() {
        assert_eq!(first(""), Next::Eof);
        assert_eq!(first(" \n"), Next::Eof);
        assert_eq!(first(r#" {"a":1} trailing"#), Next::Value(br#"{"a":1}"#.to_vec()));
        assert_eq!(first("5x"), Next::Value(b"5".to_vec()));
        assert_eq!(first("  null"), Next::Value(b"null".to_vec()));
    }

    #[test]
    fn a_stream_yields_values_as_they_complete() {
        let mut r = ValueReader::default();
        r.push(br#"{"a":"#);
        assert_eq!(r.next(false), Next::NeedMore);
        r.push(br#"1}{"b":2} "#);
        assert_eq!(r.next(false), Next::Value(br#"{"a":1}"#.to_vec()));
        assert_eq!(r.next(false), Next::Value(br#"{"b":2}"#.to_vec()));
        assert_eq!(r.next(false), Next::NeedMore);
        assert_eq!(r.next(true), Next::Eof);
        r.push(b"12");
        assert_eq!(r.next(false), Next::NeedMore);
        assert_eq!(r.next(true), Next::Value(b"12".to_vec()));
    }

    #[test]
    fn check_valid_is_unmarshal_s() {
        assert_eq!(check_valid(b"01"), Err("invalid character '1' after top-level value".into()));
        assert_eq!(check_valid(b""), Err("unexpected end of JSON input".into()));
        assert_eq!(check_valid(b" 12 "), Ok(()));
    }

    #[test]
    fn members_and_elements_split_one_level() {
        let m = object_members(br#"{ "a" : [1, {"x":"]"}] , "b\u0041":"s\"}" ,"c":{}}"#);
        let m: Vec<(String, String)> =
            m.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(v).into_owned())).collect();
        assert_eq!(
            m,
            [
                ("a".to_string(), r#"[1, {"x":"]"}]"#.to_string()),
                ("bA".to_string(), r#""s\"}""#.to_string()),
                ("c".to_string(), "{}".to_string())
            ]
        );
        let e: Vec<&[u8]> = array_elements(br#"[ 1 ,"a,b", [2,3],null ]"#);
        assert_eq!(e, [&b"1"[..], &br#""a,b""#[..], &b"[2,3]"[..], &b"null"[..]]);
        assert!(array_elements(b"[ ]").is_empty());
        assert!(object_members(b"{ }").is_empty());
    }

    #[test]
    fn base64_errors_point_where_go_points() {
        assert_eq!(base64_decode(b"aGVsbG8="), Ok(b"hello".to_vec()));
        assert_eq!(base64_decode(b"YQ=="), Ok(b"a".to_vec()));
        assert_eq!(base64_decode(b""), Ok(vec![]));
        assert_eq!(base64_decode(b"YQ"), Err("illegal base64 data at input byte 0".into()));
        assert_eq!(base64_decode(b"a*b"), Err("illegal base64 data at input byte 1".into()));
        assert_eq!(base64_decode(b"aGVsbG8"), Err("illegal base64 data at input byte 4".into()));
        assert_eq!(base64_decode(b"YQ==YQ=="), Err("illegal base64 data at input byte 4".into()));
        assert_eq!(base64_decode(b"Y\nQ=\r="), Ok(b"a".to_vec()));
    }

    #[test]
    fn strings_are_written_and_quoted_as_go_does() {
        let mut s = String::new();
        write_string(&mut s, "a<b>&\"\\\n\u{1}\u{2028}é");
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\\\n\u0001\u2028é""#);
        assert_eq!(go_quote(br"B\u0041D"), r#""B\\u0041D""#);
        assert_eq!(go_quote(b"<x>\xff\x01\xc3\xa9"), r#""<x>\xff\x01é""#);
        assert_eq!(unquote(br#""a\u00e9\ud83d\ude00\ud800x\/""#), Some("aé😀\u{FFFD}x/".as_bytes().to_vec()));
        assert_eq!(unquote(b"\"\xff\""), Some("\u{FFFD}".as_bytes().to_vec()));
    }
}
