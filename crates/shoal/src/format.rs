//! `--format` as docker takes it: `table` (the default table), `json` (Shoal's objects as JSON),
//! or a Go template (`'{{.Name}}'`, `'table {{.ID}}\t{{.Name}}'`, `'{{json .}}'`). A listing
//! renders its template once per row, over the row's columns under docker's field names
//! (`.ID`, `.Name`, `.Replicas`, …); `table …` adds a header row (each field replaced by its
//! column title) and aligns the tab-separated cells the way docker's tabwriter does (cells at
//! least 10 wide, 3 spaces apart). `inspect` renders it over the whole object as JSON names it
//! (`{{.spec.name}}`). Templates are checked when the flag is parsed, so a typo fails before
//! anything is sent.

use anyhow::{anyhow, Result};
use gtmpl::{Context, FuncError, Template, Value};
use std::collections::HashMap;

/// What `--format` asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
    /// A Go template, as given (`table ` prefix and `\t` escapes included).
    Template(String),
}

/// clap's value parser for `--format`.
pub fn parse_format(s: &str) -> Result<Format, String> {
    match s.trim() {
        "" | "table" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        _ => {
            let (_, body) = split_table(s);
            compile(&body).map_err(|e| format!("template parsing error: {e}"))?;
            Ok(Format::Template(s.to_string()))
        }
    }
}

/// (`table` prefix given, the template's text with docker's `\t`/`\n` escapes resolved).
fn split_table(s: &str) -> (bool, String) {
    let trimmed = s.trim_start();
    let (table, rest) = match trimmed.strip_prefix("table") {
        Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest),
        _ => (false, trimmed),
    };
    (table, rest.trim_matches(' ').replace("\\t", "\t").replace("\\n", "\n"))
}

/// How deep `{{if}}`/`{{range}}`/`{{with}}`/`{{block}}`/`{{define}}` … `{{end}}` and
/// parentheses nest in a template.
fn nesting(body: &str) -> usize {
    let (mut blocks, mut parens, mut max) = (0usize, 0usize, 0usize);
    let mut rest = body;
    while let Some(at) = rest.find(['{', '(', ')']) {
        let tail = &rest[at..];
        if let Some(action) = tail.strip_prefix("{{") {
            let word = action.trim_start_matches('-').trim_start();
            if ["if", "range", "with", "block", "define"].iter().any(|k| {
                word.strip_prefix(k).is_some_and(|r| r.starts_with(|c: char| c.is_whitespace() || c == '}'))
            }) {
                blocks += 1;
            } else if word
                .strip_prefix("end")
                .is_some_and(|r| r.trim_start().starts_with('-') || r.trim_start().starts_with("}}"))
            {
                blocks = blocks.saturating_sub(1);
            }
            rest = &tail[2..];
        } else {
            match tail.as_bytes()[0] {
                b'(' => parens += 1,
                b')' => parens = parens.saturating_sub(1),
                _ => {}
            }
            rest = &tail[1..];
        }
        max = max.max(blocks + parens);
    }
    max
}

fn compile(body: &str) -> Result<Template, String> {
    // gtmpl parses nested actions and parentheses by recursion, and a stack overflow aborts the
    // process: bound how deep they nest.
    const MAX_NESTING: usize = 48;
    if nesting(body) > MAX_NESTING {
        return Err(format!("actions and parentheses nested deeper than {MAX_NESTING} levels"));
    }
    let mut t = Template::default();
    t.add_funcs(&[
        ("json", json as gtmpl::Func),
        ("join", join as gtmpl::Func),
        ("split", split as gtmpl::Func),
        ("lower", lower as gtmpl::Func),
        ("upper", upper as gtmpl::Func),
        ("title", title as gtmpl::Func),
        ("pad", pad as gtmpl::Func),
        ("truncate", truncate as gtmpl::Func),
    ]);
    t.parse(body).map_err(|e| e.to_string())?;
    Ok(t)
}

fn render_one(t: &Template, v: Value) -> Result<String> {
    t.render(&Context::from(v)).map_err(|e| anyhow!("template: {e}"))
}

/// A row: docker's field names with their cells.
fn row_value(columns: &[(&str, &str)], cells: impl IntoIterator<Item = String>) -> Value {
    let map: HashMap<String, Value> = columns
        .iter()
        .zip(cells)
        .map(|((field, _), cell)| (field.to_string(), Value::String(cell)))
        .collect();
    Value::Object(map)
}

/// Renders `tmpl` over `rows` (cells in the order of `columns`: (field, HEADER)).
pub fn render_rows(tmpl: &str, columns: &[(&str, &str)], rows: Vec<Vec<String>>) -> Result<String> {
    let (table, body) = split_table(tmpl);
    let t = compile(&body).map_err(|e| anyhow!("template parsing error: {e}"))?;
    let mut lines = Vec::new();
    if table {
        let header = row_value(columns, columns.iter().map(|(_, h)| h.to_string()));
        lines.push(render_one(&t, header)?);
    }
    for r in rows {
        lines.push(render_one(&t, row_value(columns, r))?);
    }
    let mut out = String::new();
    if table {
        out = tabwrite(&lines);
    } else {
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Renders `tmpl` over one object (inspect), as serialized to JSON.
pub fn render_object(tmpl: &str, object: &serde_json::Value) -> Result<String> {
    let (_, body) = split_table(tmpl);
    let t = compile(&body).map_err(|e| anyhow!("template parsing error: {e}"))?;
    let mut s = render_one(&t, from_json(object))?;
    s.push('\n');
    Ok(s)
}

/// Prints a listing as `format` says: `table` with these headers (columns titled "" left
/// out), `json` through `json`, a template over the rows.
pub fn print_listing(
    format: &Format,
    columns: &[(&str, &str)],
    rows: Vec<Vec<String>>,
    json: impl FnOnce() -> Result<()>,
) -> Result<()> {
    match format {
        Format::Table => {
            // Columns without a title are for templates only (docker's `.Self`).
            let shown: Vec<bool> = columns.iter().map(|(_, h)| !h.is_empty()).collect();
            let headers: Vec<&str> = columns.iter().map(|(_, h)| *h).filter(|h| !h.is_empty()).collect();
            let rows = rows
                .into_iter()
                .map(|r| r.into_iter().zip(&shown).filter(|(_, s)| **s).map(|(c, _)| c).collect())
                .collect();
            crate::cli::table(&headers, rows);
            Ok(())
        }
        Format::Json => json(),
        Format::Template(t) => {
            print!("{}", render_rows(t, columns, rows)?);
            Ok(())
        }
    }
}

/// `inspect --format`: `json` prints the objects as a JSON array, a template renders over each
/// one; true when done, false for `table` (the command's own text).
pub fn print_inspect<T: serde::Serialize>(format: &Format, objects: &[T]) -> Result<bool> {
    match format {
        Format::Table => Ok(false),
        Format::Json => crate::cli::print_json(&objects).map(|_| true),
        Format::Template(t) => {
            let mut out = String::new();
            for o in objects {
                out.push_str(&render_object(t, &serde_json::to_value(o)?)?);
            }
            print!("{out}");
            Ok(true)
        }
    }
}

/// Aligns tab-separated cells like Go's `tabwriter.NewWriter(w, 10, 1, 3, ' ', 0)`: every cell
/// followed by a tab is padded to its column's widest cell plus 3, at least 10; the last cell of
/// a line is left as it is.
fn tabwrite(lines: &[String]) -> String {
    let split: Vec<Vec<&str>> =
        lines.iter().flat_map(|l| l.split('\n')).map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for cells in &split {
        for (i, c) in cells.iter().enumerate().take(cells.len().saturating_sub(1)) {
            let w = (c.chars().count() + 3).max(10);
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for cells in &split {
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(c);
                let pad = widths[i].saturating_sub(c.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// A JSON value as a template value (objects keep their keys).
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or_default())
            }
        }
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u.into()
            } else if let Some(i) = n.as_i64() {
                i.into()
            } else {
                n.as_f64().map_or(serde_json::Value::Null, |f| serde_json::json!(f))
            }
        }
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        // Sorted keys: the same row prints the same way every time.
        Value::Object(o) | Value::Map(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
    }
}

fn arg<'a>(name: &str, args: &'a [Value], i: usize) -> Result<&'a Value, FuncError> {
    args.get(i).ok_or_else(|| FuncError::AtLeastXArgs(name.to_string(), i + 1))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let v = arg("json", args, 0)?;
    serde_json::to_string(&to_json(v)).map(Value::String).map_err(|e| FuncError::Generic(e.to_string()))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let sep = text(arg("join", args, 1)?);
    match arg("join", args, 0)? {
        Value::Array(a) => Ok(Value::String(a.iter().map(text).collect::<Vec<_>>().join(&sep))),
        other => Ok(Value::String(text(other))),
    }
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg("split", args, 0)?);
    let sep = text(arg("split", args, 1)?);
    Ok(Value::Array(s.split(sep.as_str()).map(|p| Value::String(p.to_string())).collect()))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg("lower", args, 0)?).to_lowercase()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg("upper", args, 0)?).to_uppercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg("title", args, 0)?);
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    Ok(Value::String(out))
}

fn number(name: &str, v: &Value) -> Result<usize, FuncError> {
    match v {
        Value::Number(n) => n.as_u64().map(|u| u as usize),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| FuncError::Generic(format!("{name}: expected a number, got {v}")))
}

/// docker's `pad`: spaces before and after.
fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg("pad", args, 0)?);
    let before = number("pad", arg("pad", args, 1)?)?;
    let after = number("pad", arg("pad", args, 2)?)?;
    Ok(Value::String(format!("{}{s}{}", " ".repeat(before), " ".repeat(after))))
}

/// docker's `truncate`: the first N characters.
fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg("truncate", args, 0)?);
    let n = number("truncate", arg("truncate", args, 1)?)?;
    Ok(Value::String(s.chars().take(n).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: &[(&str, &str)] = &[("ID", "ID"), ("Name", "NAME"), ("Replicas", "REPLICAS")];

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec!["abc".into(), "web".into(), "3/3".into()],
            vec!["def".into(), "a-longer-name".into(), "0/1".into()],
        ]
    }

    #[test]
    fn keywords_and_templates_parse() {
        assert_eq!(parse_format("table"), Ok(Format::Table));
        assert_eq!(parse_format("json"), Ok(Format::Json));
        assert_eq!(parse_format("{{.Name}}"), Ok(Format::Template("{{.Name}}".into())));
        let e = parse_format("{{.Name").expect_err("an error");
        assert!(e.contains("template parsing error"), "{e}");
    }

    #[test]
    fn a_template_renders_each_row() {
        let out = render_rows("{{.Name}} {{.Replicas}}", COLS, rows()).expect("ok");
        assert_eq!(out, "web 3/3\na-longer-name 0/1\n");
    }

    #[test]
    fn table_templates_have_headers_and_aligned_cells() {
        let out = render_rows("table {{.ID}}\\t{{.Name}}\\t{{.Replicas}}", COLS, rows()).expect("ok");
        assert_eq!(
            out,
            "ID        NAME            REPLICAS\n\
             abc       web             3/3\n\
             def       a-longer-name   0/1\n"
        );
    }

    #[test]
    fn functions_like_dockers() {
        let out = render_rows("{{json .}}", COLS, rows()).expect("ok");
        assert_eq!(out.lines().next(), Some(r#"{"ID":"abc","Name":"web","Replicas":"3/3"}"#));
        let out = render_rows(
            "{{upper .Name}}|{{truncate .Name 3}}|{{join (split .Replicas \"/\") \"-\"}}",
            COLS,
            rows(),
        );
        assert_eq!(out.expect("ok").lines().nth(1), Some("A-LONGER-NAME|a-l|0-1"));
        let out = render_rows("{{title .Name}}:{{pad .ID 1 2}}:", COLS, rows()).expect("ok");
        assert_eq!(out.lines().next(), Some("Web: abc  :"));
    }

    #[test]
    fn inspect_templates_see_the_object() {
        let obj = serde_json::json!({"id": "x1", "spec": {"name": "web", "labels": {"a": "b"}}, "n": 3});
        assert_eq!(
            render_object("{{.spec.name}} {{.n}} {{json .spec.labels}}", &obj).expect("ok"),
            "web 3 {\"a\":\"b\"}\n"
        );
    }
}
