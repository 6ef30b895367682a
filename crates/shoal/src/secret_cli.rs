//! `shoal secret create|ls|inspect|rm` and `shoal config …`: docker's verbs over `/v1/secrets` and
//! `/v1/configs`. The data comes from a file or standard input (`-`); a secret's is never shown
//! again (inspect prints the object without it), a config's is, base64 in the JSON as Docker.

use crate::cli::{print_json, Format, ListOpts};
use crate::service_cli::enc;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use shoal_api::{Client, Created};
use shoal_types::{Secret, SecretData, SecretKind, SecretSpec};
use std::collections::BTreeMap;
use std::io::Read;

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Create from a file, or from standard input with `-`; prints the id.
    Create(CreateArgs),
    /// List (never the data).
    Ls(ListOpts),
    /// Show as JSON (a secret without its data; a config with it, base64).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "json")]
        format: Format,
    },
    /// Remove ones no service uses.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Args, Clone, Debug)]
pub struct CreateArgs {
    /// Label KEY=VALUE, repeatable.
    #[arg(long = "label", short = 'l', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The name (1-64 of letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The file with the content, or `-` for standard input.
    pub file: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), String::new())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn path(kind: SecretKind) -> &'static str {
    match kind {
        SecretKind::Secret => "/v1/secrets",
        SecretKind::Config => "/v1/configs",
    }
}

/// Reads at most one byte more than the limit, so an oversized input is refused without
/// reading it all.
fn read_data(file: &str) -> Result<Vec<u8>> {
    let limit = shoal_types::secret::MAX_SECRET_BYTES as u64 + 1;
    let mut data = Vec::new();
    if file == "-" {
        std::io::stdin().take(limit).read_to_end(&mut data).context("reading standard input")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .with_context(|| format!("reading {file}"))?;
    }
    Ok(data)
}

pub async fn run(c: &Client, kind: SecretKind, cmd: SecretCmd) -> Result<()> {
    match cmd {
        SecretCmd::Create(a) => {
            let data = read_data(&a.file)?;
            if data.len() > shoal_types::secret::MAX_SECRET_BYTES {
                bail!("{}: larger than {} KiB", a.file, shoal_types::secret::MAX_SECRET_BYTES / 1024);
            }
            let spec = SecretSpec {
                name: a.name.clone(),
                labels: a.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
                data: SecretData(data),
            };
            let created: Created = c.post(path(kind), &spec).await?;
            println!("{}", created.id);
        }
        SecretCmd::Ls(o) => ls(c, kind, &o).await?,
        SecretCmd::Inspect { names, format } => {
            let mut found = Vec::new();
            for n in &names {
                let s: Secret = c.get(&format!("{}/{}", path(kind), enc(n))).await?;
                found.push(s);
            }
            if !crate::format::print_inspect(&format, &found)? {
                print_json(&found)?;
            }
        }
        SecretCmd::Rm { names } => {
            let mut errors = Vec::new();
            for n in &names {
                match c.delete(&format!("{}/{}", path(kind), enc(n))).await {
                    Ok(()) => println!("{n}"),
                    Err(e) => errors.push(format!("{n}: {e}")),
                }
            }
            if !errors.is_empty() {
                bail!("{}", errors.join("\n"));
            }
        }
    }
    Ok(())
}

async fn ls(c: &Client, kind: SecretKind, o: &ListOpts) -> Result<()> {
    let q = if o.stale { "?stale=true" } else { "" };
    let f = crate::filter::Filters::parse(&o.filter, &["id", "name", "label"])?;
    let mut all: Vec<Secret> = c.get(&format!("{}{q}", path(kind))).await?;
    all.retain(|s| {
        f.prefix("id", &[s.id.as_str()])
            && f.prefix("name", &[s.spec.name.as_str()])
            && f.labels("label", &s.spec.labels)
    });
    all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    if o.quiet {
        all.iter().for_each(|s| println!("{}", s.id));
        return Ok(());
    }
    use crate::service_cli::ago;
    let rows = all
        .iter()
        .map(|s| vec![s.id.short().to_string(), s.spec.name.clone(), ago(s.created_at), ago(s.updated_at)])
        .collect();
    let columns = [("ID", "ID"), ("Name", "NAME"), ("CreatedAt", "CREATED"), ("UpdatedAt", "UPDATED")];
    crate::format::print_listing(&o.format, &columns, rows, || print_json(&all))
}
