//! Compose files to Shoal stacks (`shoal stack deploy -c FILE… NAME`).
//!
//! The part of the Compose specification that Shoal can honour: `services` (image, command,
//! entrypoint, environment, env_file, healthcheck, ports in short and long form, networks,
//! volumes, depends_on, hostname, user, working_dir, stop_grace_period, secrets, configs and the
//! whole `deploy:` section), `networks` (overlay), `volumes` (named volumes, external ones too)
//! and `secrets`/`configs` (from a `file:`, or external ones), with
//! variable interpolation (`${VAR}`, `${VAR:-default}`, …) and several files merged. Every key
//! outside that part is refused with a message that names it (`services.web.cap_add: not
//! supported by Shoal`), a typo too (`unknown key`, with the key it resembles): nothing is
//! silently ignored. Extension keys (`x-…`) are ignored, as the specification asks, except
//! Shoal's own: a service's `x-shoal-driver: process|oci|docker` picks its driver (a service
//! without an image runs its command on the process driver).
//!
//! Parsing is serde_norway (the maintained fork of serde_yaml) into YAML values, then a reader
//! of our own: interpolated strings must be read back as numbers and booleans where the
//! specification says so (`replicas: ${N}`), and every error carries its path. The crates that
//! parse the whole specification into types (docker-compose-types, compose_spec) keep unknown
//! keys as extensions or ignore them, and still use the deprecated serde_yaml.
//!
//! Nothing here reads the environment or files by itself: the caller passes the variables and a
//! way to read `env_file`s and secret files, so the same files give the same stack in tests.

mod convert;
mod interpolate;
mod merge;

pub use interpolate::{interpolate, Notes};
use serde_norway::Value;
use shoal_types::StackSpec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One compose file's text and what to call it in messages (its path).
#[derive(Clone, Debug)]
pub struct ComposeFile {
    pub name: String,
    pub content: String,
}

/// What loading needs from the caller.
pub struct Options<'a> {
    /// The variables for interpolation (the client's environment over the project's `.env`)
    /// and for environment entries given without a value (`environment: [HOME]`).
    pub env: &'a BTreeMap<String, String>,
    /// The project directory: relative bind mounts, `env_file`s and secret files are relative to
    /// it (the first file's directory, as compose has it).
    pub base_dir: &'a Path,
    /// Reads an `env_file`.
    pub read_file: &'a dyn Fn(&Path) -> std::io::Result<String>,
    /// Reads the `file:` of a secret or config (any bytes).
    pub read_bytes: &'a dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
}

/// A loaded project: the stack to deploy, the file's own `name` if it has one, and warnings
/// (unset variables, keys that have no effect).
#[derive(Clone, Debug, Default)]
pub struct Project {
    pub stack: StackSpec,
    pub name: Option<String>,
    pub warnings: Vec<String>,
}

/// Everything wrong with the files, one problem per entry, each naming where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Error(pub Vec<String>);

/// Parses, interpolates and merges `files` (later ones override earlier ones) and reads the
/// result as a stack.
pub fn load(files: &[ComposeFile], opts: &Options<'_>) -> Result<Project, Error> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut merged: Option<Value> = None;
    if files.is_empty() {
        return Err(Error(vec!["no compose file given".into()]));
    }
    for f in files {
        // The YAML scanner's time grows with the square of the flow nesting (`[[[[…`, 160 KB of
        // them take half a minute): a file nested deeper than any compose file needs is refused
        // before it is read. (Brackets inside quoted strings count too; 256 unbalanced ones in a
        // string are no real file.)
        const MAX_FLOW_DEPTH: usize = 256;
        if flow_depth(&f.content) > MAX_FLOW_DEPTH {
            errors.push(format!("{}: '[' and '{{' nested deeper than {MAX_FLOW_DEPTH} levels", f.name));
            continue;
        }
        let mut v: Value = match serde_norway::from_str(&f.content) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{}: {e}", f.name));
                continue;
            }
        };
        if let Err(e) = v.apply_merge() {
            errors.push(format!("{}: {e}", f.name));
            continue;
        }
        if !v.is_mapping() {
            errors.push(format!("{}: a compose file is a mapping (services:, networks:, …)", f.name));
            continue;
        }
        let mut notes = Notes::default();
        let mut errs = Vec::new();
        interpolate_tree(&mut v, opts.env, &mut String::new(), &mut notes, &mut errs);
        errors.extend(errs.into_iter().map(|e| format!("{}: {e}", f.name)));
        for var in notes.unset {
            let w = format!("the {var} variable is not set: substituting an empty string");
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        merged = Some(match merged {
            None => v,
            Some(base) => merge::merge(base, v, &[]),
        });
    }
    if !errors.is_empty() {
        return Err(Error(errors));
    }
    let Some(merged) = merged else { return Err(Error(vec!["no compose file given".into()])) };
    let mut project = convert::project(&merged, opts).map_err(Error)?;
    warnings.append(&mut project.warnings);
    project.warnings = warnings;
    Ok(project)
}

/// Interpolates every string value (not the keys) in place; a YAML tag (`!reset`) is refused.
fn interpolate_tree(
    v: &mut Value,
    env: &BTreeMap<String, String>,
    path: &mut String,
    notes: &mut Notes,
    errors: &mut Vec<String>,
) {
    match v {
        Value::String(s) => match interpolate(s, env, notes) {
            Ok(out) => *s = out,
            Err(e) => errors.push(format!("{}: {e}", at(path))),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate_tree(item, env, path, notes, errors);
                path.truncate(len);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key_text(k));
                interpolate_tree(item, env, path, notes, errors);
                path.truncate(len);
            }
        }
        Value::Tagged(t) => errors.push(format!(
            "{}: YAML tags ({}) are not supported: write the value itself",
            at(path),
            t.tag
        )),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn at(path: &str) -> &str {
    if path.is_empty() {
        "the file"
    } else {
        path
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".into(),
    }
}

/// Reads an env file (`.env`, `env_file:`): `KEY=VALUE` lines, `#` comments, blank lines, an
/// optional `export ` prefix, values in single quotes (literal) or double quotes (`\n`, `\"`,
/// `\\` escapes), and unquoted values whose ` #…` comment is dropped. A line with only `KEY`
/// has no value of its own (`None`: the caller takes it from the environment).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (line, None),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(format!("line {}: expected KEY=VALUE, got {line:?}", no + 1));
        }
        let value = match value {
            None => None,
            Some(v) if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') => {
                Some(v[1..v.len() - 1].to_string())
            }
            Some(v) if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {
                let mut s = String::new();
                let mut chars = v[1..v.len() - 1].chars();
                while let Some(c) = chars.next() {
                    match (c, c == '\\') {
                        (_, true) => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(c) => s.push(c),
                            None => s.push('\\'),
                        },
                        (c, false) => s.push(c),
                    }
                }
                Some(s)
            }
            Some(v) => Some(v.split_once(" #").map_or(v, |(v, _)| v).trim_end().to_string()),
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// The project directory of a compose file given by path: its directory (`.` for a bare name).
pub fn project_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests;

/// The deepest nesting of `[`/`{` in `text` (closing brackets unwind it).
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}
