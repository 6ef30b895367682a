//! `shoal daemon --config FILE`: every daemon flag in a TOML file, plus what a freshly
//! provisioned machine needs to form or join its cluster on first boot with no interactive step
//! (`init = true`, or a `[join]` section with the managers' addresses and a token from a file or
//! an environment variable). Flags (and their environment variables) override the file; maps
//! (`[labels]`, `[resources]`) are merged, a flag's key winning. `--print-config` shows the
//! effective configuration, with any inline token redacted.
//!
//! A file that cannot be honoured fails the start and names the line and the field: unknown keys
//! are refused (a typo must not silently fall back to a default), values are checked as the flag
//! would check them.

use crate::{DaemonOpts, LogFormat};
use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file, as written. Every key is optional; absent keys keep the flag's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    api_socket: Option<PathBuf>,
    #[serde(default, deserialize_with = "address")]
    listen_addr: Option<String>,
    #[serde(default, deserialize_with = "address")]
    advertise_addr: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    cert_ttl: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    heartbeat_interval: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "duration")]
    election_timeout: Option<std::time::Duration>,
    hostname: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    resources: Option<BTreeMap<String, u64>>,
    #[serde(default, deserialize_with = "address_or_off")]
    api_addr: Option<String>,
    #[serde(default, deserialize_with = "address_or_off")]
    ui_addr: Option<String>,
    docker_socket: Option<PathBuf>,
    #[serde(default, deserialize_with = "address_or_off")]
    etcd_addr: Option<String>,
    #[serde(default, deserialize_with = "address_or_off")]
    chronos_addr: Option<String>,
    #[serde(default, deserialize_with = "log_level")]
    log_level: Option<String>,
    log_format: Option<FileLogFormat>,
    /// Form a new cluster on first boot (a no-op once the node is in one).
    init: Option<bool>,
    /// With `init`: the overlay's VXLAN port.
    data_path_port: Option<u64>,
    /// With `init`: the directory `shoal cluster prepare` wrote (the CA and both join tokens
    /// made beforehand, so joiners' files can name the token before the cluster exists).
    prepared: Option<PathBuf>,
    join: Option<JoinSection>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum FileLogFormat {
    Text,
    Json,
}

/// `[join]`: join this cluster on first boot.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct JoinSection {
    /// Managers to ask, in order (any manager takes a join).
    pub managers: Vec<String>,
    /// The token itself (better: `token_file` or `token_env`, so the file can be shared).
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "redacted")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The name of an environment variable holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

fn redacted<S: serde::Serializer>(_: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    check_address(&s).map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

fn address_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if s != "off" {
        check_address(&s).map_err(serde::de::Error::custom)?;
    }
    Ok(Some(s))
}

/// HOST:PORT (or [IPv6]:PORT) with a port number; the host is resolved at bind time.
fn check_address(s: &str) -> Result<(), String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("expected HOST:PORT, got {s:?}")),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
    let s = String::deserialize(d)?;
    crate::parse_duration(&s).map(Some).map_err(serde::de::Error::custom)
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    tracing_subscriber::EnvFilter::try_new(&s).map_err(|e| serde::de::Error::custom(format!("{e}")))?;
    Ok(Some(s))
}

/// Reads and checks the file; the error names the file, the line and the field.
pub fn load(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    from_text(path, &text)
}

/// Parses and checks the text of the file at `path` (named in every error).
fn from_text(path: &Path, text: &str) -> Result<FileConfig> {
    let cfg: FileConfig = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    if cfg.init == Some(true) && cfg.join.is_some() {
        bail!(
            "{}: `init = true` and a [join] section: a node either forms a cluster or joins one",
            path.display()
        );
    }
    if cfg.init != Some(true) && (cfg.data_path_port.is_some() || cfg.prepared.is_some()) {
        bail!("{}: `data_path_port` and `prepared` are for `init = true` only", path.display());
    }
    if let Some(j) = &cfg.join {
        if j.managers.is_empty() {
            bail!("{}: [join] needs `managers` (at least one HOST:PORT)", path.display());
        }
        for m in &j.managers {
            check_address(m).map_err(|e| anyhow::anyhow!("{}: [join] managers: {e}", path.display()))?;
        }
        let sources = [j.token.is_some(), j.token_file.is_some(), j.token_env.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            bail!("{}: [join] needs exactly one of `token`, `token_file`, `token_env`", path.display());
        }
    }
    if let Some(r) = &cfg.resources {
        if let Some(k) = r.keys().find(|k| k.is_empty()) {
            bail!("{}: [resources]: empty resource name {k:?}", path.display());
        }
    }
    Ok(cfg)
}

/// What the daemon does on first boot, from the file.
#[derive(Default)]
pub struct FirstBoot {
    pub init: bool,
    pub data_path_port: Option<u64>,
    pub prepared: Option<PathBuf>,
    pub join: Option<JoinSection>,
}

/// The effective configuration (`--print-config`).
#[derive(Serialize)]
struct Effective<'a> {
    data_dir: &'a Path,
    api_socket: &'a Path,
    listen_addr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_addr: Option<&'a str>,
    cert_ttl: String,
    heartbeat_interval: String,
    election_timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_addr: Option<&'a str>,
    ui_addr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_socket: Option<&'a Path>,
    etcd_addr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    chronos_addr: Option<&'a str>,
    log_level: &'a str,
    log_format: FileLogFormat,
    init: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_path_port: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prepared: Option<&'a Path>,
    labels: BTreeMap<&'a str, &'a str>,
    resources: BTreeMap<&'a str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    join: Option<&'a JoinSection>,
}

/// The effective configuration as TOML, the form the file takes.
pub fn render(o: &DaemonOpts, log_level: &str, log_format: LogFormat, boot: &FirstBoot) -> Result<String> {
    let eff = Effective {
        data_dir: &o.data_dir,
        api_socket: &o.api_socket,
        listen_addr: &o.listen_addr,
        advertise_addr: o.advertise_addr.as_deref(),
        cert_ttl: format_duration(o.cert_ttl),
        heartbeat_interval: format_duration(o.heartbeat_interval),
        election_timeout: format_duration(o.election_timeout),
        hostname: o.hostname.as_deref(),
        api_addr: o.api_addr.as_deref(),
        ui_addr: &o.ui_addr,
        docker_socket: o.docker_socket.as_deref(),
        etcd_addr: &o.etcd_addr,
        chronos_addr: o.chronos_addr.as_deref(),
        log_level,
        log_format: match log_format {
            LogFormat::Text => FileLogFormat::Text,
            LogFormat::Json => FileLogFormat::Json,
        },
        init: boot.init,
        data_path_port: boot.data_path_port,
        prepared: boot.prepared.as_deref(),
        labels: o.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        resources: o.resources.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        join: boot.join.as_ref(),
    };
    toml::to_string(&eff).context("rendering the configuration")
}

/// "90d", "12h", "30m", "45s" or "1500ms": the largest whole unit, the way flags are written.
fn format_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s.is_multiple_of(secs) {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

/// Whether the user set `id` on the command line or through its environment variable.
fn explicit(m: &ArgMatches, id: &str) -> bool {
    matches!(m.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
}

/// Fills what the command line left at its default from the file. `top` holds the global
/// flags' matches (`--log-level`, `--log-format`), `sub` the daemon's.
pub fn merge(
    file: FileConfig,
    o: &mut DaemonOpts,
    log_level: &mut String,
    log_format: &mut LogFormat,
    top: &ArgMatches,
    sub: &ArgMatches,
) -> FirstBoot {
    macro_rules! take {
        ($field:ident) => {
            if let Some(v) = file.$field {
                if !explicit(sub, stringify!($field)) {
                    o.$field = v;
                }
            }
        };
        ($field:ident, opt) => {
            if let Some(v) = file.$field {
                if !explicit(sub, stringify!($field)) {
                    o.$field = Some(v);
                }
            }
        };
    }
    take!(data_dir);
    take!(api_socket);
    take!(listen_addr);
    take!(advertise_addr, opt);
    take!(cert_ttl);
    take!(heartbeat_interval);
    take!(election_timeout);
    take!(hostname, opt);
    take!(api_addr, opt);
    take!(ui_addr);
    take!(docker_socket, opt);
    take!(etcd_addr);
    take!(chronos_addr, opt);
    if o.api_addr.as_deref() == Some("off") {
        o.api_addr = None;
    }
    // Maps: the file's entries, then the command line's (which win).
    let merged = |file: Option<BTreeMap<String, String>>, cli: &mut Vec<(String, String)>| {
        let mut all: BTreeMap<String, String> = file.unwrap_or_default();
        all.extend(cli.drain(..));
        *cli = all.into_iter().collect();
    };
    merged(file.labels, &mut o.labels);
    let mut res: BTreeMap<String, u64> = file.resources.unwrap_or_default();
    res.extend(o.resources.drain(..));
    o.resources = res.into_iter().collect();
    if let Some(l) = file.log_level {
        if !explicit(top, "log_level") {
            *log_level = l;
        }
    }
    if let Some(f) = file.log_format {
        if !explicit(top, "log_format") {
            *log_format = match f {
                FileLogFormat::Text => LogFormat::Text,
                FileLogFormat::Json => LogFormat::Json,
            };
        }
    }
    FirstBoot {
        init: file.init.unwrap_or(false),
        data_path_port: file.data_path_port,
        prepared: file.prepared,
        join: file.join,
    }
}

/// The join token named by a `[join]` section (inline, from a file, or from the environment).
pub fn join_token(j: &JoinSection) -> Result<String> {
    let token = match (&j.token, &j.token_file, &j.token_env) {
        (Some(t), _, _) => t.clone(),
        (_, Some(f), _) => std::fs::read_to_string(f)
            .with_context(|| format!("[join] token_file: cannot read {}", f.display()))?,
        (_, _, Some(var)) => std::env::var(var)
            .with_context(|| format!("[join] token_env: the environment variable {var} is not set"))?,
        _ => bail!("[join] needs one of `token`, `token_file`, `token_env`"),
    };
    let token = token.trim().to_string();
    token
        .parse::<shoal_pki::JoinToken>()
        .map_err(|e| anyhow::anyhow!("[join]: the join token is not valid: {e}"))?;
    Ok(token)
}

/// Files of `shoal cluster prepare`'s directory.
pub const PREPARED_CA_CERT: &str = "ca.crt";
pub const PREPARED_CA_KEY: &str = "ca.key";
pub const PREPARED_MANAGER_TOKEN: &str = "manager.token";
pub const PREPARED_WORKER_TOKEN: &str = "worker.token";

/// Reads a `shoal cluster prepare` directory; the tokens must name this CA.
pub fn read_prepared(dir: &Path) -> Result<shoal_manager::Prepared> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .with_context(|| format!("prepared: cannot read {}", dir.join(f).display()))
    };
    let ca = shoal_pki::Ca::from_pem(&read(PREPARED_CA_CERT)?, &read(PREPARED_CA_KEY)?)
        .with_context(|| format!("prepared: the CA in {}", dir.display()))?;
    let token = |f: &str| -> Result<String> {
        let t = read(f)?.trim().to_string();
        let parsed: shoal_pki::JoinToken =
            t.parse().map_err(|e| anyhow::anyhow!("prepared: {}: {e}", dir.join(f).display()))?;
        if parsed.ca_digest != ca.digest() {
            bail!("prepared: {} names another CA than {}", dir.join(f).display(), PREPARED_CA_CERT);
        }
        Ok(t)
    };
    let manager_token = token(PREPARED_MANAGER_TOKEN)?;
    let worker_token = token(PREPARED_WORKER_TOKEN)?;
    Ok(shoal_manager::Prepared { ca, manager_token, worker_token })
}

/// `shoal cluster prepare --out DIR`: a new cluster's CA and both join tokens, made before the
/// cluster so that every machine's configuration can be written at once. The directory and the
/// key and token files are private (0700/0600); nothing is overwritten.
pub fn prepare(out: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if out.join(PREPARED_CA_KEY).exists() {
        bail!("{} holds a prepared cluster already (ca.key): choose another directory", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))?;
    let cluster_id = shoal_manager::random_id();
    let ca = shoal_pki::Ca::generate(&cluster_id)?;
    let manager = shoal_pki::JoinToken::generate(&ca.digest())?.to_string();
    let worker = shoal_pki::JoinToken::generate(&ca.digest())?.to_string();
    shoal_pki::write_private_file(out.join(PREPARED_CA_KEY), ca.key_pem())?;
    shoal_pki::write_public_file(out.join(PREPARED_CA_CERT), ca.cert_pem())?;
    shoal_pki::write_private_file(out.join(PREPARED_MANAGER_TOKEN), format!("{manager}\n"))?;
    shoal_pki::write_private_file(out.join(PREPARED_WORKER_TOKEN), format!("{worker}\n"))?;
    println!("Prepared cluster {cluster_id} in {}:", out.display());
    println!("  on the first manager:   init = true, prepared = \"{}\"", out.display());
    println!(
        "  on the other managers:  [join] token_file = \"{}\"",
        out.join(PREPARED_MANAGER_TOKEN).display()
    );
    println!(
        "  on workers:             [join] token_file = \"{}\"",
        out.join(PREPARED_WORKER_TOKEN).display()
    );
    println!("Keep ca.key on the first manager only; it and the tokens admit anyone to the cluster.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("shoal.toml");
        std::fs::write(&p, text)?;
        load(&p)
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let e =
            format!("{:#}", parse("data_dir = \"/x\"\nlisten_adr = \"127.0.0.1:1\"\n").expect_err("refused"));
        assert!(e.contains("line 2") && e.contains("listen_adr"), "{e}");
        let e = format!("{:#}", parse("\n\ncert_ttl = \"ten days\"\n").expect_err("refused"));
        assert!(e.contains("line 3") && e.contains("cert_ttl"), "{e}");
        let e = format!("{:#}", parse("listen_addr = \"nowhere\"\n").expect_err("refused"));
        assert!(e.contains("line 1") && e.contains("HOST:PORT"), "{e}");
        let e = format!("{:#}", parse("[resources]\ngpu = \"two\"\n").expect_err("refused"));
        assert!(e.contains("line 2") && e.contains("gpu"), "{e}");
        let e = format!("{:#}", parse("log_format = \"xml\"\n").expect_err("refused"));
        assert!(e.contains("line 1") && e.contains("xml"), "{e}");
    }

    #[test]
    fn join_and_init_are_checked() {
        let e = format!(
            "{:#}",
            parse("init = true\n[join]\nmanagers = [\"a:1\"]\ntoken = \"x\"\n").expect_err("refused")
        );
        assert!(e.contains("either forms a cluster or joins one"), "{e}");
        let e = format!("{:#}", parse("[join]\nmanagers = [\"a:1\"]\n").expect_err("refused"));
        assert!(e.contains("exactly one of"), "{e}");
        let e = format!("{:#}", parse("[join]\nmanagers = []\ntoken_env = \"T\"\n").expect_err("refused"));
        assert!(e.contains("needs `managers`"), "{e}");
        let e = format!("{:#}", parse("data_path_port = 4790\n").expect_err("refused"));
        assert!(e.contains("for `init = true` only"), "{e}");
        let ok = parse("[join]\nmanagers = [\"10.0.0.1:4242\"]\ntoken_env = \"T\"\n").expect("ok");
        assert_eq!(ok.join.map(|j| j.managers), Some(vec!["10.0.0.1:4242".to_string()]));
    }

    #[test]
    fn tokens_come_from_a_file_or_the_environment_and_are_checked() {
        let dir = tempfile::tempdir().expect("ok");
        prepare(&dir.path().join("c")).expect("ok");
        let p = read_prepared(&dir.path().join("c")).expect("ok");
        let file = dir.path().join("c").join(PREPARED_MANAGER_TOKEN);
        let j = JoinSection { managers: vec!["a:1".into()], token_file: Some(file), ..Default::default() };
        assert_eq!(join_token(&j).expect("ok"), p.manager_token);
        let j = JoinSection {
            managers: vec!["a:1".into()],
            token: Some("SHOAL-1-xyz".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", join_token(&j).expect_err("refused")).contains("not valid"));
        let j = JoinSection {
            managers: vec!["a:1".into()],
            token_env: Some("SHOAL_TEST_SURELY_UNSET_VAR".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", join_token(&j).expect_err("refused")).contains("is not set"));
        // A second prepare into the same directory overwrites nothing.
        assert!(prepare(&dir.path().join("c")).is_err());
        // A token of another CA is refused.
        prepare(&dir.path().join("d")).expect("ok");
        std::fs::copy(
            dir.path().join("d").join(PREPARED_WORKER_TOKEN),
            dir.path().join("c").join(PREPARED_WORKER_TOKEN),
        )
        .expect("ok");
        assert!(format!("{:#}", read_prepared(&dir.path().join("c")).err().expect("refused"))
            .contains("another CA"));
    }

    #[test]
    fn prepared_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("ok");
        let out = dir.path().join("p");
        prepare(&out).expect("ok");
        for f in [PREPARED_CA_KEY, PREPARED_MANAGER_TOKEN, PREPARED_WORKER_TOKEN] {
            let mode = std::fs::metadata(out.join(f)).expect("ok").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }

    /// Every key the file takes, each with a value it accepts (one line per key).
    const SAMPLE: &str = r#"data_dir = "/var/lib/shoal"
api_socket = "/run/shoal/shoal.sock"
listen_addr = "0.0.0.0:4242"
advertise_addr = "10.0.0.1:4242"
cert_ttl = "90d"
heartbeat_interval = "50ms"
election_timeout = "350ms"
hostname = "node1"
api_addr = "127.0.0.1:4243"
ui_addr = "127.0.0.1:5050"
docker_socket = "/run/shoal/docker.sock"
etcd_addr = "127.0.0.1:2379"
chronos_addr = "127.0.0.1:4400"
log_level = "info,shoal=debug"
log_format = "json"
labels = { zone = "a", ssd = "true" }
resources = { gpu = 2 }
"#;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// Fuzz target for the configuration file as an operator (or a provisioning tool)
        /// writes it: arbitrary text, and the sample with a line's value replaced, a line
        /// dropped or repeated, or a section appended, is read or refused with a message
        /// naming the file — never a panic.
        #[test]
        fn config_files_never_panic(
            soup in "\\PC{0,80}",
            line in 0usize..17,
            value in proptest::prop_oneof![
                "\\PC{0,16}",
                "\"[a-z0-9:./, =-]{0,20}\"",
                "-?[0-9]{1,22}(\\.[0-9]+)?",
                "\\[(\"[a-z0-9.:]{0,8}\",?){0,3}\\]",
                "\\{ ?([a-z]{1,4} = (\"x\"|1|true|\\[\\]),? ?){0,3}\\}",
            ],
            how in 0u8..4,
            tail in "(\\[join\\]\nmanagers = \\[(\"[a-z0-9.:]{0,12}\",?){0,2}\\]\n(token(_env|_file)? = \"[A-Za-z0-9-]{0,12}\"\n){0,2}|init = (true|false)\n(data_path_port = [0-9]{1,6}\n)?(prepared = \"/p\"\n)?)?",
        ) {
            let path = Path::new("/etc/shoal/shoal.toml");
            if let Err(e) = from_text(path, &soup) {
                proptest::prop_assert!(format!("{e:#}").starts_with("/etc/shoal/shoal.toml: "), "{e:#}");
            }
            let mut lines: Vec<String> = SAMPLE.lines().map(String::from).collect();
            let key = lines[line].split(" = ").next().unwrap_or_default().to_string();
            match how {
                0 => lines[line] = format!("{key} = {value}"),
                1 => {
                    lines.remove(line);
                }
                2 => lines.insert(line, lines[line].clone()),
                _ => lines[line] = format!("{key}{value}"),
            }
            let text = format!("{}\n{tail}", lines.join("\n"));
            match from_text(path, &text) {
                Ok(cfg) => {
                    // What is accepted holds what the later checks rely on.
                    proptest::prop_assert!(!(cfg.init == Some(true) && cfg.join.is_some()));
                    if let Some(j) = &cfg.join {
                        proptest::prop_assert!(!j.managers.is_empty());
                    }
                }
                Err(e) => proptest::prop_assert!(format!("{e:#}").starts_with("/etc/shoal/shoal.toml: "), "{e:#}"),
            }
        }
    }

    #[test]
    fn the_sample_names_every_key_and_is_accepted() {
        let cfg = from_text(Path::new("s.toml"), SAMPLE).expect("the sample is a valid file");
        assert_eq!(cfg.election_timeout, Some(std::time::Duration::from_millis(350)));
        assert_eq!(SAMPLE.lines().count(), 17, "the fuzz target picks lines 0..17");
    }

    #[test]
    fn an_inline_token_is_redacted_when_printed() {
        let j = JoinSection {
            managers: vec!["a:1".into()],
            token: Some("SHOAL-1-secret".into()),
            ..Default::default()
        };
        let s = toml::to_string(&j).expect("ok");
        assert!(s.contains("<redacted>") && !s.contains("secret"), "{s}");
    }
}
