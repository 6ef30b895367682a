//! `ExecStart=` command lines: split into words as systemd splits them (quotes, C escapes,
//! `${VAR}` expansion, the `-@+!:` prefixes), and the `docker run …` command lines of fleet's
//! container units read back into the container they describe ([`DockerRun`]), plus the
//! `docker kill|rm|pull|stop` housekeeping around them ([`DockerHousekeeping`]).

use shoal_types::container::{normalize_capability, parse_ulimit};
use shoal_types::{
    parse_cpus, DnsConfig, Mount, MountType, PortConfig, Protocol, PublishMode, Resources, RestartCondition,
    Ulimit,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// The systemd prefixes of a command (`ExecStart=-/bin/foo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecPrefix {
    /// `-`: a failing exit status is ignored.
    pub ignore_failure: bool,
    /// `@`: the second word is the process's `argv[0]` ([`ExecCommand::argv0`]).
    pub argv0: bool,
    /// `+`: runs with full privileges (`User=` and sandboxing not applied).
    pub full_privileges: bool,
    /// `!` or `!!`: runs as `User=` with raised privileges (ambient capabilities).
    pub elevated: bool,
    /// `:`: no `$VAR` expansion.
    pub no_expand: bool,
}

/// A command line of an `Exec*=` setting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecCommand {
    pub prefix: ExecPrefix,
    /// The program and its arguments (without the `@` prefix's `argv[0]`).
    pub argv: Vec<String>,
    /// With `@`: the name the process is given as `argv[0]`.
    pub argv0: Option<String>,
    /// The variables `${NAME}` and `$NAME` expanded, in order of first use.
    pub env_used: Vec<String>,
}

/// Splits a value into words as systemd does: whitespace separates, `"…"` and `'…'` quote
/// (anywhere in a word), and C escapes (`\n`, `\t`, `\s`, `\\`, `\"`, `\xNN`, `\NNN`, `\uNNNN`…)
/// are decoded inside and outside quotes.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    split_words_with(s, true)
}

/// [`split_words`], with C escapes decoded (`escapes`) or kept as written (`[X-Fleet]` values,
/// where unit names escape with backslashes).
pub(crate) fn split_words_with(s: &str, escapes: bool) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) if escapes => {
                cur.push(unescape_one(&mut chars)?);
                in_word = true;
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                in_word = true;
            }
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (c, _) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn unescape_one(chars: &mut std::str::Chars<'_>) -> Result<char, String> {
    let c = chars.next().ok_or("a backslash at the end of the value")?;
    let mut code = |first: Option<char>, n: usize, radix: u32| {
        let digits: String = first.into_iter().chain(chars.by_ref().take(n)).collect();
        u32::from_str_radix(&digits, radix)
            .ok()
            .filter(|_| digits.len() == n + usize::from(first.is_some()))
            .and_then(char::from_u32)
            .filter(|&c| c != '\0')
            .ok_or_else(|| format!("invalid escape \\{c}{}", &digits[usize::from(first.is_some())..]))
    };
    Ok(match c {
        'a' => '\x07',
        'b' => '\x08',
        'f' => '\x0c',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\x0b',
        's' => ' ',
        '\\' | '"' | '\'' | ';' => c,
        'x' => code(None, 2, 16)?,
        'u' => code(None, 4, 16)?,
        'U' => code(None, 8, 16)?,
        '0'..='7' => code(Some(c), 2, 8)?,
        _ => return Err(format!("invalid escape \\{c}")),
    })
}

/// Parses an `Exec*=` value: its prefixes, its words, and `${NAME}`/`$NAME` expanded from
/// `env` (the unit's `Environment=`). A variable the unit does not set is refused: systemd would
/// take it from `EnvironmentFile=` or the node, which an import cannot read.
pub fn parse_exec(value: &str, env: &BTreeMap<String, String>) -> Result<ExecCommand, String> {
    let mut prefix = ExecPrefix::default();
    let mut rest = value.trim_start();
    loop {
        match rest.chars().next() {
            Some('-') => prefix.ignore_failure = true,
            Some('@') => prefix.argv0 = true,
            Some(':') => prefix.no_expand = true,
            Some('+') => prefix.full_privileges = true,
            Some('!') => {
                prefix.elevated = true;
                if rest.starts_with("!!") {
                    rest = &rest[1..];
                }
            }
            Some('|') => return Err("the '|' prefix (run through the user's shell) is not supported".into()),
            _ => break,
        }
        rest = &rest[1..];
    }
    let mut argv = split_words(rest)?;
    if argv.iter().any(|w| w == ";") {
        return Err("several commands on one line (\";\") are not supported: give one command".into());
    }
    let mut argv0 = None;
    if prefix.argv0 {
        if argv.len() < 2 {
            return Err("the '@' prefix needs the program and then its argv[0]".into());
        }
        argv0 = Some(argv.remove(1));
    }
    let mut env_used = Vec::new();
    if !prefix.no_expand {
        argv = expand_env(argv, env, &mut env_used)?;
    }
    if argv.first().is_none_or(|p| p.is_empty()) {
        return Err("empty command".into());
    }
    Ok(ExecCommand { prefix, argv, argv0, env_used })
}

fn valid_name(n: &str) -> bool {
    n.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// systemd's expansion: a word that is exactly `$NAME` becomes the value's words; `${NAME}`
/// anywhere is replaced by the value; `$$` is a dollar sign.
fn expand_env(
    argv: Vec<String>,
    env: &BTreeMap<String, String>,
    used: &mut Vec<String>,
) -> Result<Vec<String>, String> {
    let mut lookup = |name: &str| {
        let v = env.get(name).ok_or_else(|| {
            format!(
                "refers to ${{{name}}}, which no Environment= line of the unit sets (EnvironmentFile= and the \
                 node's environment cannot be read when importing; write $$ for a literal '$')"
            )
        })?;
        if !used.iter().any(|u| u == name) {
            used.push(name.to_string());
        }
        Ok::<_, String>(v.clone())
    };
    let mut out = Vec::with_capacity(argv.len());
    for word in argv {
        if let Some(name) = word.strip_prefix('$').filter(|n| valid_name(n)) {
            out.extend(lookup(name)?.split_whitespace().map(str::to_string));
            continue;
        }
        let mut w = String::with_capacity(word.len());
        let mut rest = word.as_str();
        while let Some(i) = rest.find('$') {
            w.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(r) = rest.strip_prefix("$$") {
                w.push('$');
                rest = r;
            } else if let Some((name, r)) = rest.strip_prefix("${").and_then(|r| r.split_once('}')) {
                if !valid_name(name) {
                    return Err(format!("invalid variable reference ${{{name}}}"));
                }
                w.push_str(&lookup(name)?);
                rest = r;
            } else {
                w.push('$');
                rest = &rest[1..];
            }
        }
        w.push_str(rest);
        out.push(w);
    }
    Ok(out)
}

/// Whether a program is the docker CLI (`docker`, `/usr/bin/docker`).
pub fn is_docker(program: &str) -> bool {
    program.rsplit('/').next() == Some("docker")
}

/// `docker VERB args…` or `docker container|image VERB args…`: the verb and its arguments.
/// `None` for anything else (also docker's own options before the verb).
pub fn docker_verb(argv: &[String]) -> Option<(&str, &[String])> {
    let (program, rest) = argv.split_first()?;
    if !is_docker(program) {
        return None;
    }
    match rest {
        [group, verb, rest @ ..] if group == "container" || group == "image" => Some((verb.as_str(), rest)),
        [verb, rest @ ..] if !verb.starts_with('-') => Some((verb.as_str(), rest)),
        _ => None,
    }
}

/// A `docker run` command line read back into the container it describes. String settings are
/// empty when not given (as in `TaskTemplate`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerRun {
    pub image: String,
    /// The words after the image: the command, or the arguments of `--entrypoint`.
    pub args: Vec<String>,
    /// `--name`: only matched against the housekeeping commands (Shoal names its containers).
    pub name: Option<String>,
    pub entrypoint: Option<String>,
    /// `-e K=V`, and `-e K` resolved from the unit's `Environment=` (the docker client's).
    pub env: BTreeMap<String, String>,
    /// The names `-e K` took from the unit's `Environment=`.
    pub client_env_used: Vec<String>,
    /// `-p`: published on the node (host mode).
    pub ports: Vec<PortConfig>,
    /// `-v SRC:DST[:ro]`: binds for absolute sources, named volumes otherwise.
    pub mounts: Vec<Mount>,
    /// `--restart` other than `no`: the condition and its attempt limit (`on-failure:N`).
    pub restart: Option<(RestartCondition, u64)>,
    pub workdir: String,
    pub user: String,
    pub hostname: String,
    pub read_only: bool,
    pub init: bool,
    pub tty: bool,
    /// Normalized (`CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `--net=host` / `--network host`.
    pub host_network: bool,
    /// `-l`/`--label`: the container's labels.
    pub labels: BTreeMap<String, String>,
    pub dns: DnsConfig,
    pub ulimits: Vec<Ulimit>,
    /// `--group-add`.
    pub groups: Vec<String>,
    /// `-m`/`--memory`, `--cpus`, `--pids-limit`.
    pub limits: Resources,
    /// `--log-driver` and its `--log-opt`s.
    pub log_driver: Option<String>,
    pub log_opts: BTreeMap<String, String>,
    /// `--stop-timeout`.
    pub stop_timeout: Option<Duration>,
    /// Options Shoal cannot honour, as written (with a reason where one helps). Never dropped
    /// silently: the mapping refuses a unit that has any.
    pub unsupported: Vec<String>,
}

/// docker run's options that take a value (long names; for knowing where the image starts).
#[rustfmt::skip]
const VALUE_OPTIONS: &[&str] = &[
    "add-host", "annotation", "attach", "blkio-weight", "blkio-weight-device", "cap-add", "cap-drop",
    "cgroup-parent", "cgroupns", "cidfile", "cpu-count", "cpu-percent", "cpu-period", "cpu-quota",
    "cpu-rt-period", "cpu-rt-runtime", "cpu-shares", "cpus", "cpuset-cpus", "cpuset-mems", "detach-keys",
    "device", "device-cgroup-rule", "device-read-bps", "device-read-iops", "device-write-bps",
    "device-write-iops", "dns", "dns-opt", "dns-option", "dns-search", "domainname", "entrypoint", "env",
    "env-file", "expose", "gpus", "group-add", "health-cmd", "health-interval", "health-retries",
    "health-start-interval", "health-start-period", "health-timeout", "hostname", "io-maxbandwidth",
    "io-maxiops", "ip", "ip6", "ipc", "isolation", "kernel-memory", "label", "label-file", "link",
    "link-local-ip", "log-driver", "log-opt", "mac-address", "memory", "memory-reservation", "memory-swap",
    "memory-swappiness", "mount", "name", "net", "net-alias", "network", "network-alias", "oom-score-adj",
    "pid", "pids-limit", "platform", "publish", "pull", "restart", "runtime", "security-opt", "shm-size",
    "stop-signal", "stop-timeout", "storage-opt", "sysctl", "tmpfs", "ulimit", "user", "userns", "uts",
    "volume", "volume-driver", "volumes-from", "workdir",
];

fn short_option(c: char) -> Option<&'static str> {
    Some(match c {
        'a' => "attach",
        'c' => "cpu-shares",
        'd' => "detach",
        'e' => "env",
        'h' => "hostname",
        'i' => "interactive",
        'l' => "label",
        'm' => "memory",
        'p' => "publish",
        'P' => "publish-all",
        'q' => "quiet",
        't' => "tty",
        'u' => "user",
        'v' => "volume",
        'w' => "workdir",
        _ => return None,
    })
}

fn takes_value(long: &str) -> bool {
    VALUE_OPTIONS.contains(&long)
}

/// A docker option as written: its long name, the value (`None` for a flag), and how it was
/// written (for messages).
struct Opt {
    long: String,
    value: Option<String>,
    written: String,
}

impl DockerRun {
    /// Reads `docker run`'s arguments (the words after `run`). `client_env` is the docker
    /// client's environment as the unit sets it (`Environment=`), for `-e NAME`.
    pub fn parse(args: &[String], client_env: &BTreeMap<String, String>) -> Result<DockerRun, String> {
        let mut run = DockerRun::default();
        let mut i = 0;
        while let Some(a) = args.get(i) {
            i += 1;
            if a == "--" {
                break;
            }
            let opts = if let Some(long) = a.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let value = match inline {
                    None if takes_value(name) => {
                        i += 1;
                        Some(args.get(i - 1).ok_or_else(|| format!("{a} needs a value"))?.clone())
                    }
                    v => v,
                };
                vec![Opt { long: name.to_string(), value, written: format!("--{name}") }]
            } else if a.len() > 1 && a.starts_with('-') {
                let mut opts = Vec::new();
                let cluster = &a[1..];
                for (at, c) in cluster.char_indices() {
                    let Some(long) = short_option(c) else {
                        opts.push(Opt { long: format!("-{c}"), value: None, written: format!("-{c}") });
                        continue;
                    };
                    let rest = &cluster[at + c.len_utf8()..];
                    if takes_value(long) {
                        let value = if rest.is_empty() {
                            i += 1;
                            args.get(i - 1).ok_or_else(|| format!("-{c} needs a value"))?.clone()
                        } else {
                            rest.strip_prefix('=').unwrap_or(rest).to_string()
                        };
                        opts.push(Opt { long: long.into(), value: Some(value), written: format!("-{c}") });
                        break;
                    }
                    let value = rest.strip_prefix('=').map(str::to_string);
                    opts.push(Opt { long: long.into(), value: value.clone(), written: format!("-{c}") });
                    if value.is_some() {
                        break;
                    }
                }
                opts
            } else {
                i -= 1;
                break;
            };
            for o in opts {
                run.apply(o, client_env)?;
            }
        }
        run.image = args.get(i).cloned().ok_or("docker run without an image")?;
        run.args = args[i + 1..].to_vec();
        if run.log_driver.is_none() && !run.log_opts.is_empty() {
            run.log_driver = Some("json-file".into());
        }
        Ok(run)
    }

    fn apply(&mut self, o: Opt, client_env: &BTreeMap<String, String>) -> Result<(), String> {
        let shown = match &o.value {
            Some(v) => format!("{} {v}", o.written),
            None => o.written.clone(),
        };
        let mut unsupported = |why: &str| {
            self.unsupported.push(if why.is_empty() { shown.clone() } else { format!("{shown} ({why})") })
        };
        let flag = |v: &Option<String>| match v.as_deref() {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(x) => Err(format!("{}: expected true or false, got {x:?}", o.written)),
        };
        let value = o.value.clone().unwrap_or_default();
        match o.long.as_str() {
            // Shoal runs containers attached and removes them itself; units have no terminal.
            "rm" | "detach" | "interactive" | "sig-proxy" => {
                flag(&o.value)?;
            }
            "tty" => self.tty = flag(&o.value)?,
            "read-only" => self.read_only = flag(&o.value)?,
            "init" => self.init = flag(&o.value)?,
            "name" => self.name = Some(value),
            "entrypoint" if value.is_empty() => unsupported("clearing the image's entrypoint"),
            "entrypoint" => self.entrypoint = Some(value),
            "workdir" => self.workdir = value,
            "user" => self.user = value,
            "hostname" => self.hostname = value,
            "env" => match value.split_once('=') {
                Some(("", _)) => return Err(format!("{shown}: empty variable name")),
                Some((k, v)) => {
                    self.env.insert(k.to_string(), v.to_string());
                }
                None => match client_env.get(&value) {
                    Some(v) => {
                        self.env.insert(value.clone(), v.clone());
                        self.client_env_used.push(value);
                    }
                    None => {
                        return Err(format!(
                            "{shown} passes the docker client's variable {value}, which no Environment= line \
                             of the unit sets (the caller's environment cannot be read when importing): \
                             write {} {value}=VALUE",
                            o.written
                        ))
                    }
                },
            },
            "env-file" => {
                return Err(format!(
                    "{shown}: the file is read on the node when the unit starts and cannot be read when \
                     importing: pass its variables with -e NAME=VALUE"
                ))
            }
            "publish" => match parse_publish(&value) {
                Ok(mut ports) => self.ports.append(&mut ports),
                Err(Problem::Unsupported(why)) => unsupported(&why),
                Err(Problem::Invalid(why)) => return Err(format!("{shown}: {why}")),
            },
            "volume" => match parse_volume(&value) {
                Ok(m) => self.mounts.push(m),
                Err(why) => unsupported(&why),
            },
            "restart" => match value.split_once(':').unwrap_or((&value, "")) {
                ("no", "") => {}
                ("always" | "unless-stopped", "") => self.restart = Some((RestartCondition::Any, 0)),
                ("on-failure", n) => {
                    let n = if n.is_empty() { Ok(0) } else { n.parse() };
                    let n = n.map_err(|_| format!("{shown}: expected on-failure[:MAX-RETRIES]"))?;
                    self.restart = Some((RestartCondition::OnFailure, n));
                }
                _ => return Err(format!("{shown}: expected no, always, unless-stopped or on-failure[:N]")),
            },
            "cap-add" | "cap-drop" => {
                let cap = normalize_capability(&value).map_err(|e| format!("{shown}: {e}"))?;
                if o.long == "cap-add" { &mut self.cap_add } else { &mut self.cap_drop }.push(cap);
            }
            "net" | "network" if value == "host" => self.host_network = true,
            "net" | "network" => unsupported("Shoal attaches its own networks: see shoal network create"),
            "label" => {
                let (k, v) = value.split_once('=').unwrap_or((&value, ""));
                self.labels.insert(k.to_string(), v.to_string());
            }
            "dns" => self.dns.nameservers.push(value),
            "dns-search" => self.dns.search.push(value),
            "dns-opt" | "dns-option" => self.dns.options.push(value),
            "ulimit" => self.ulimits.push(parse_ulimit(&value).map_err(|e| format!("{shown}: {e}"))?),
            "group-add" => self.groups.push(value),
            "memory" => {
                self.limits.memory_bytes = parse_bytes(&value).map_err(|e| format!("{shown}: {e}"))?
            }
            "cpus" => self.limits.nano_cpus = parse_cpus(&value).map_err(|e| format!("{shown}: {e}"))?,
            "pids-limit" => match value.parse::<i64>() {
                Ok(n) => self.limits.pids = u64::try_from(n).unwrap_or(0),
                Err(_) => return Err(format!("{shown}: expected a number")),
            },
            "log-driver" => self.log_driver = Some(value),
            "log-opt" => {
                let (k, v) = value.split_once('=').ok_or_else(|| format!("{shown}: expected KEY=VALUE"))?;
                self.log_opts.insert(k.to_string(), v.to_string());
            }
            "stop-timeout" => match value.parse::<u64>() {
                Ok(s) => self.stop_timeout = Some(Duration::from_secs(s)),
                Err(_) => unsupported("Shoal always stops a task within a time: give seconds"),
            },
            l if l.starts_with('-') => unsupported("unknown option"),
            l if !takes_value(l) && !BOOL_OPTIONS.contains(&l) => unsupported("unknown option"),
            _ => unsupported(""),
        }
        Ok(())
    }
}

/// docker run's flags (no value) that Shoal does not honour, and the ones it does.
const BOOL_OPTIONS: &[&str] = &[
    "detach",
    "disable-content-trust",
    "help",
    "init",
    "interactive",
    "no-healthcheck",
    "oom-kill-disable",
    "privileged",
    "publish-all",
    "quiet",
    "read-only",
    "rm",
    "sig-proxy",
    "tty",
];

enum Problem {
    /// Valid for docker, but Shoal cannot honour it.
    Unsupported(String),
    /// Not valid at all.
    Invalid(String),
}

/// `-p [IP:]HOST:CONTAINER[/PROTO]`, with port ranges (`8000-8001:8000-8001`).
fn parse_publish(s: &str) -> Result<Vec<PortConfig>, Problem> {
    let (spec, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => return Err(Problem::Unsupported("Shoal publishes tcp and udp only".into())),
        p => return Err(Problem::Invalid(format!("unknown protocol {p:?}"))),
    };
    let Some((rest, container)) = spec.rsplit_once(':') else {
        return Err(Problem::Unsupported(
            "docker would publish it on a random host port: write HOST:CONTAINER".into(),
        ));
    };
    let host = match rest.rsplit_once(':') {
        None => rest,
        Some(("" | "0.0.0.0" | "::" | "[::]", host)) => host,
        Some((ip, _)) => {
            return Err(Problem::Unsupported(format!(
                "binds to the address {ip} only; Shoal publishes on all of the node's addresses"
            )))
        }
    };
    if host.is_empty() {
        return Err(Problem::Unsupported(
            "docker would pick a random host port: write HOST:CONTAINER".into(),
        ));
    }
    let range = |r: &str| -> Result<(u16, u16), Problem> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
        match (port(a), port(b)) {
            (Some(a), Some(b)) if a <= b => Ok((a, b)),
            _ => Err(Problem::Invalid(format!("invalid port or port range {r:?}"))),
        }
    };
    let (h0, h1) = range(host)?;
    let (c0, c1) = range(container)?;
    if h1 - h0 != c1 - c0 {
        return Err(Problem::Unsupported("host and container ranges of different sizes".into()));
    }
    Ok((0..=c1 - c0)
        .map(|k| PortConfig { published: h0 + k, target: c0 + k, protocol, mode: PublishMode::Host })
        .collect())
}

/// `-v SRC:DST[:OPTIONS]`: an absolute source binds a host path, a name a volume.
fn parse_volume(s: &str) -> Result<Mount, String> {
    let mut parts = s.split(':');
    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
        return Err("an anonymous volume: give a volume name or a host path, SRC:DST".into());
    };
    let mut readonly = false;
    for opt in parts.flat_map(|o| o.split(',')) {
        match opt {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "z" | "Z" => return Err("SELinux relabelling is not supported".into()),
            o => return Err(format!("mount option {o:?} is not supported")),
        }
    }
    let kind = if source.starts_with('/') {
        MountType::Bind
    } else if source.starts_with('.') || source.starts_with('~') || source.is_empty() {
        return Err("a relative host path: give an absolute one".into());
    } else {
        MountType::Volume
    };
    Ok(Mount { kind, source: source.into(), target: target.into(), readonly })
}

/// Bytes with an optional binary suffix (`512m`, `1.5G`, `64K`, `1024`; b/k/m/g/t/p/e, any
/// case), as docker's `--memory` and systemd's `MemoryMax=` take them.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let err = || format!("invalid size {s:?}: expected bytes or a number with K, M, G or T (e.g. 512M)");
    let t = s.trim();
    let t =
        t.strip_suffix(['b', 'B']).filter(|r| r.ends_with(|c: char| c.is_ascii_alphabetic())).unwrap_or(t);
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        Some('p') => (&t[..t.len() - 1], 50),
        Some('e') => (&t[..t.len() - 1], 60),
        Some('b') => (&t[..t.len() - 1], 0),
        _ => (t, 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    let whole = int.parse::<u64>().ok().and_then(|n| n.checked_mul(1u64 << shift)).ok_or_else(err)?;
    // The fraction, exactly where it is whole bytes (1.5K = 1536), truncated otherwise.
    let mut part = 0u128;
    let mut scale = 1u128;
    for d in frac.bytes().take(18) {
        part = part * 10 + u128::from(d - b'0');
        scale *= 10;
    }
    let extra = u64::try_from((part << shift) / scale).map_err(|_| err())?;
    whole.checked_add(extra).ok_or_else(err)
}

/// A `docker kill|rm|pull|stop` command: what it acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerHousekeeping {
    /// `kill`, `rm`, `pull` or `stop`.
    pub verb: String,
    /// Container names (kill, rm, stop) or images (pull).
    pub targets: Vec<String>,
    /// `docker stop -t N`.
    pub stop_timeout: Option<Duration>,
}

/// Reads a `docker kill|rm|pull|stop` command; `None` for any other command, or one with an
/// option this does not know.
pub fn docker_housekeeping(argv: &[String]) -> Option<DockerHousekeeping> {
    let (verb, args) = docker_verb(argv)?;
    let (flags, values): (&[&str], &[&str]) = match verb {
        "kill" => (&[], &["-s", "--signal"]),
        "rm" => (&["-f", "--force", "-v", "--volumes", "-l", "--link", "-fv", "-vf"], &[]),
        "pull" => (&["-a", "--all-tags", "-q", "--quiet", "--disable-content-trust"], &["--platform"]),
        "stop" => (&[], &["-t", "--time", "--timeout", "-s", "--signal"]),
        _ => return None,
    };
    let mut out = DockerHousekeeping { verb: verb.to_string(), targets: Vec::new(), stop_timeout: None };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if !a.starts_with('-') {
            out.targets.push(a.clone());
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        if flags.contains(&name) && inline.is_none() {
            continue;
        }
        if !values.contains(&name) {
            return None;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next()?.clone(),
        };
        if matches!(name, "-t" | "--time" | "--timeout") {
            out.stop_timeout = Some(Duration::from_secs(value.parse().ok()?));
        }
    }
    (!out.targets.is_empty()).then_some(out)
}

/// An image reference compared as docker resolves it: `nginx` is `docker.io/library/nginx:latest`.
pub fn normalize_image(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let name =
        if digest.is_none() && !last.contains(':') { format!("{name}:latest") } else { name.to_string() };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry = name.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    let name = match (has_registry, name.contains('/')) {
        (true, _) => name,
        (false, true) => format!("docker.io/{name}"),
        (false, false) => format!("docker.io/library/{name}"),
    };
    match digest {
        Some(d) => format!("{name}@{d}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        split_words(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn argv(s: &str) -> Vec<String> {
        words(s)
    }

    #[test]
    fn splitting_like_systemd() {
        assert_eq!(words("  /bin/echo  a   b "), ["/bin/echo", "a", "b"]);
        assert_eq!(
            words(r#"/bin/sh -c "echo 'hi there'; exit 1""#),
            ["/bin/sh", "-c", "echo 'hi there'; exit 1"]
        );
        assert_eq!(words(r#"'a b'"c d" e'f'"#), ["a bc d", "ef"]);
        assert_eq!(words(r#"a\sb "x\"y" \x41\101\u00e9 tab\there"#), ["a b", "x\"y", "AAé", "tab\there"]);
        assert_eq!(words(r#""" ''"#), ["", ""]);
        assert_eq!(split_words("\"open").expect_err("quote"), "unterminated \" quote");
        assert_eq!(split_words("'open").expect_err("quote"), "unterminated ' quote");
        assert_eq!(split_words("a\\").expect_err("end"), "a backslash at the end of the value");
        assert_eq!(split_words("a\\q").expect_err("escape"), "invalid escape \\q");
        assert_eq!(split_words("\\xZZ").expect_err("hex"), "invalid escape \\xZZ");
    }

    #[test]
    fn exec_prefixes_and_variables() {
        let none = BTreeMap::new();
        let c = parse_exec("-/usr/bin/docker rm web", &none).expect("dash");
        assert!(c.prefix.ignore_failure);
        assert_eq!(c.argv, ["/usr/bin/docker", "rm", "web"]);
        let c = parse_exec("@-/bin/sleep my-sleep 10", &none).expect("at");
        assert!(c.prefix.argv0 && c.prefix.ignore_failure);
        assert_eq!(
            (c.argv, c.argv0.as_deref()),
            (vec!["/bin/sleep".to_string(), "10".into()], Some("my-sleep"))
        );
        for bang in ["!!/bin/true", "!/bin/true"] {
            let c = parse_exec(bang, &none).expect("bang");
            assert!(c.prefix.elevated && !c.prefix.full_privileges);
            assert_eq!(c.argv, ["/bin/true"]);
        }
        assert!(parse_exec("+/bin/true", &none).expect("plus").prefix.full_privileges);
        let e = env(&[("IP", "10.0.0.1"), ("OPTS", "-a  -b")]);
        let c = parse_exec("/bin/run --ip=${IP} $OPTS $$HOME ${IP}:80 a$IP", &e).expect("vars");
        assert_eq!(c.argv, ["/bin/run", "--ip=10.0.0.1", "-a", "-b", "$HOME", "10.0.0.1:80", "a$IP"]);
        assert_eq!(c.env_used, ["IP", "OPTS"]);
        let c = parse_exec(":/bin/echo ${IP} $$", &e).expect("no expansion");
        assert_eq!(c.argv, ["/bin/echo", "${IP}", "$$"]);
        let err = parse_exec("/usr/bin/docker run -e IP=${COREOS_PUBLIC_IPV4} x", &e).expect_err("unset");
        assert!(err.starts_with("refers to ${COREOS_PUBLIC_IPV4}, which no Environment= line"), "{err}");
        assert!(parse_exec("/bin/a ; /bin/b", &none).expect_err("semicolon").contains("several commands"));
        assert_eq!(parse_exec("-", &none).expect_err("empty"), "empty command");
        assert!(parse_exec("@/bin/a", &none).expect_err("argv0").contains("'@' prefix"));
        assert!(parse_exec("|/bin/a", &none).is_err());
    }

    fn run(s: &str) -> DockerRun {
        let a = argv(s);
        let (verb, rest) = docker_verb(&a).expect("docker");
        assert_eq!(verb, "run");
        DockerRun::parse(rest, &env(&[("FROM_UNIT", "u")])).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn run_err(s: &str) -> String {
        let a = argv(s);
        let (_, rest) = docker_verb(&a).expect("docker");
        DockerRun::parse(rest, &BTreeMap::new()).expect_err(s)
    }

    #[test]
    fn docker_run_options() {
        let r = run("/usr/bin/docker run --rm -d --name=web -p 80:80 -p8443:443/tcp --publish 53:53/udp \
             -e A=1 --env B=x=y -v /srv:/usr/share/nginx/html:ro --volume data:/data -w /app -u 1000:1000 \
             --hostname h --read-only --cap-add net_admin --cap-drop=ALL --init --net=host -it \
             -l tier=web --dns 1.1.1.1 --ulimit nofile=1024:2048 -m 512m --cpus 1.5 --pids-limit 100 \
             --restart on-failure:3 --stop-timeout 20 nginx:1.25 nginx -g 'daemon off;'");
        assert_eq!(r.image, "nginx:1.25");
        assert_eq!(r.args, ["nginx", "-g", "daemon off;"]);
        assert_eq!(r.name.as_deref(), Some("web"));
        let ports: Vec<_> = r.ports.iter().map(|p| (p.published, p.target, p.protocol)).collect();
        assert_eq!(ports, [(80, 80, Protocol::Tcp), (8443, 443, Protocol::Tcp), (53, 53, Protocol::Udp)]);
        assert_eq!(r.env, env(&[("A", "1"), ("B", "x=y")]));
        assert_eq!(
            r.mounts[0],
            Mount {
                kind: MountType::Bind,
                source: "/srv".into(),
                target: "/usr/share/nginx/html".into(),
                readonly: true
            }
        );
        assert_eq!(r.mounts[1].kind, MountType::Volume);
        assert_eq!((r.workdir.as_str(), r.user.as_str(), r.hostname.as_str()), ("/app", "1000:1000", "h"));
        assert!(r.read_only && r.init && r.tty && r.host_network);
        assert_eq!(
            (r.cap_add.as_slice(), r.cap_drop.as_slice()),
            (&["CAP_NET_ADMIN".to_string()][..], &["ALL".to_string()][..])
        );
        assert_eq!(r.labels, env(&[("tier", "web")]));
        assert_eq!(r.dns.nameservers, ["1.1.1.1"]);
        assert_eq!(r.ulimits, [Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 }]);
        assert_eq!(
            (r.limits.memory_bytes, r.limits.nano_cpus, r.limits.pids),
            (512 << 20, 1_500_000_000, 100)
        );
        assert_eq!(r.restart, Some((RestartCondition::OnFailure, 3)));
        assert_eq!(r.stop_timeout, Some(Duration::from_secs(20)));
        assert!(r.unsupported.is_empty(), "{:?}", r.unsupported);
        // --entrypoint, `--`, -e from the unit's Environment=, port ranges.
        let r = run("docker container run --entrypoint /bin/sh -e FROM_UNIT -p 7000-7001:8000-8001 -- busybox -c 'echo hi'");
        assert_eq!((r.entrypoint.as_deref(), r.image.as_str()), (Some("/bin/sh"), "busybox"));
        assert_eq!(r.args, ["-c", "echo hi"]);
        assert_eq!(
            (r.env.get("FROM_UNIT").map(String::as_str), r.client_env_used.as_slice()),
            (Some("u"), &["FROM_UNIT".to_string()][..])
        );
        assert_eq!(
            r.ports.iter().map(|p| (p.published, p.target)).collect::<Vec<_>>(),
            [(7000, 8000), (7001, 8001)]
        );
    }

    #[test]
    fn docker_run_unsupported_and_refused() {
        let r = run(
            "docker run --privileged --memory-swap 1g -P -p 80 -p 127.0.0.1:81:81 -v /x --network=backend \
             --frobnicate -Z --log-driver=journald img arg",
        );
        assert_eq!((r.image.as_str(), r.args.as_slice()), ("img", &["arg".to_string()][..]));
        assert_eq!(
            r.unsupported,
            [
                "--privileged",
                "--memory-swap 1g",
                "-P",
                "-p 80 (docker would publish it on a random host port: write HOST:CONTAINER)",
                "-p 127.0.0.1:81:81 (binds to the address 127.0.0.1 only; Shoal publishes on all of the node's addresses)",
                "-v /x (an anonymous volume: give a volume name or a host path, SRC:DST)",
                "--network backend (Shoal attaches its own networks: see shoal network create)",
                "--frobnicate (unknown option)",
                "-Z (unknown option)",
            ]
        );
        assert_eq!(r.log_driver.as_deref(), Some("journald"));
        assert!(run_err("docker run -e HOME img").contains("passes the docker client's variable HOME"));
        assert!(run_err("docker run --env-file ./env img")
            .starts_with("--env-file ./env: the file is read on the node"));
        assert_eq!(run_err("docker run --rm"), "docker run without an image");
        assert_eq!(run_err("docker run --name"), "--name needs a value");
        assert!(run_err("docker run -p 80:x img").contains("invalid port"));
        assert!(run_err("docker run --restart sometimes img").contains("expected no, always"));
        assert!(run_err("docker run --cap-add FLY img").contains("unknown capability"));
        assert!(run_err("docker run --rm=maybe img").contains("expected true or false"));
    }

    #[test]
    fn housekeeping_and_images() {
        let h = |s: &str| docker_housekeeping(&argv(s));
        assert_eq!(h("/usr/bin/docker kill web").map(|h| h.targets), Some(vec!["web".to_string()]));
        assert_eq!(h("docker rm -f web").map(|h| h.verb), Some("rm".into()));
        assert_eq!(h("docker stop -t 30 web").and_then(|h| h.stop_timeout), Some(Duration::from_secs(30)));
        assert_eq!(
            h("docker image pull quay.io/x/y:1").map(|h| h.targets),
            Some(vec!["quay.io/x/y:1".to_string()])
        );
        assert_eq!(h("docker rm --weird web"), None);
        assert_eq!(h("docker ps"), None);
        assert_eq!(h("/bin/docker-compose rm x"), None);
        assert_eq!(normalize_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize_image("docker.io/library/nginx:latest"), "docker.io/library/nginx:latest");
        assert_eq!(normalize_image("me/app"), "docker.io/me/app:latest");
        assert_eq!(normalize_image("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(normalize_image("app@sha256:ab"), "docker.io/library/app@sha256:ab");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("2gb"), Ok(2 << 30));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("50%").is_err());
    }
}
