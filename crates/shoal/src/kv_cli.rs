//! `shoal kv get|put|del|watch|compaction|lease …`: the cluster's key-value store from the CLI,
//! printed the way `etcdctl` prints (so scripts read the same lines), or `--format json`. Over
//! Shoal's own API (`/v1/kv/…`); `etcdctl` itself talks to the etcd listener.

use crate::cli::print_json;
use crate::format::Format;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use shoal_api::Client;
use shoal_kv::{
    DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyValue, LeaseGrantResponse,
    LeaseRevokeResponse, LeaseTimeToLiveResponse, Op, OpResponse, PutRequest, RangeRequest, RangeResponse,
};

#[derive(Subcommand)]
pub enum KvCmd {
    /// Keys and their values (etcdctl's simple format: key, then value, one line each).
    Get {
        key: String,
        /// Everything under KEY as a prefix.
        #[arg(long)]
        prefix: bool,
        /// Every key from KEY on.
        #[arg(long)]
        from_key: bool,
        /// The store as it was at this revision (0: now).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// At most this many keys (0: all).
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Keys only.
        #[arg(long)]
        keys_only: bool,
        /// Values only.
        #[arg(long)]
        print_value_only: bool,
        /// `l`: linearizable (default); `s`: this manager's replica as it is.
        #[arg(long, default_value = "l", value_parser = ["l", "s"])]
        consistency: String,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// Sets KEY to VALUE; prints OK.
    Put {
        key: String,
        value: String,
        /// Attach the key to this lease (hex, as `lease grant` prints it).
        #[arg(long, value_parser = parse_lease)]
        lease: Option<i64>,
        /// Print the previous pair.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Deletes KEY (or a prefix, or from KEY on); prints how many keys went.
    Del {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        from_key: bool,
        /// Print the deleted pairs.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Prints changes as they happen (`PUT`/`DELETE`, key, value), from --rev if given.
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Print each change's previous pair too.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Drops history below REVISION (reads and watches before it fail afterwards).
    Compaction { revision: i64 },
    /// Leases: keys that go when the lease expires or is revoked.
    #[command(subcommand)]
    Lease(LeaseCmd),
}

#[derive(Subcommand)]
pub enum LeaseCmd {
    /// A new lease of TTL seconds (at least 2).
    Grant { ttl: i64 },
    /// Ends a lease and deletes its keys.
    Revoke {
        #[arg(value_parser = parse_lease)]
        id: i64,
    },
    /// Keeps a lease alive (every TTL/3 until interrupted, or once).
    KeepAlive {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[arg(long)]
        once: bool,
    },
    /// A lease's remaining time (and keys).
    Timetolive {
        #[arg(value_parser = parse_lease)]
        id: i64,
        #[arg(long)]
        keys: bool,
    },
    /// Every lease.
    #[command(alias = "list")]
    Ls,
}

/// Lease ids are hex, as etcdctl prints and reads them.
fn parse_lease(s: &str) -> Result<i64, String> {
    i64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| format!("{s:?} is not a lease id (hex)"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn print_kv(kv: &KeyValue, keys_only: bool, value_only: bool) {
    if !value_only {
        println!("{}", text(&kv.key));
    }
    if !keys_only {
        println!("{}", text(&kv.value));
    }
}

/// `(key, range_end)` for a key, a prefix or everything from the key on.
fn span(key: &str, prefix: bool, from_key: bool) -> Result<(Vec<u8>, Vec<u8>)> {
    if prefix && from_key {
        bail!("--prefix and --from-key cannot go together");
    }
    let k = key.as_bytes().to_vec();
    Ok(match (prefix, from_key) {
        (true, _) => (k.clone(), shoal_kv::prefix_end(&k)),
        (_, true) => (k, vec![0]),
        _ => (k, Vec::new()),
    })
}

async fn write(c: &Client, op: Op) -> Result<OpResponse> {
    Ok(c.post("/v1/kv/ops", &op).await?)
}

pub async fn run(c: &Client, cmd: KvCmd) -> Result<()> {
    match cmd {
        KvCmd::Get {
            key,
            prefix,
            from_key,
            rev,
            limit,
            keys_only,
            print_value_only,
            consistency,
            format,
        } => {
            let (key, range_end) = span(&key, prefix, from_key)?;
            let req = RangeRequest { key, range_end, revision: rev, limit, keys_only, ..Default::default() };
            let mut body = serde_json::to_value(&req)?;
            body["serializable"] = serde_json::Value::Bool(consistency == "s");
            let r: RangeResponse = c.post("/v1/kv/range", &body).await?;
            if format == Format::Json {
                return print_json(&r);
            }
            for kv in &r.kvs {
                print_kv(kv, keys_only, print_value_only);
            }
        }
        KvCmd::Put { key, value, lease, prev_kv } => {
            let req = PutRequest { lease: lease.unwrap_or(0), prev_kv, ..PutRequest::new(key, value) };
            let OpResponse::Put(r) = write(c, Op::Put(req)).await? else { bail!("unexpected answer") };
            println!("OK");
            if let Some(p) = r.prev_kv {
                print_kv(&p, false, false);
            }
        }
        KvCmd::Del { key, prefix, from_key, prev_kv } => {
            let (key, range_end) = span(&key, prefix, from_key)?;
            let req = DeleteRangeRequest { key, range_end, prev_kv };
            let OpResponse::DeleteRange(DeleteRangeResponse { deleted, prev_kvs, .. }) =
                write(c, Op::DeleteRange(req)).await?
            else {
                bail!("unexpected answer")
            };
            println!("{deleted}");
            for p in &prev_kvs {
                print_kv(p, false, false);
            }
        }
        KvCmd::Watch { key, prefix, rev, prev_kv } => {
            let (key, range_end) = span(&key, prefix, false)?;
            let path = format!(
                "/v1/kv/watch?key={}&range_end={}&start_revision={rev}",
                crate::service_cli::enc(&shoal_kv::base64::encode(&key)),
                crate::service_cli::enc(&shoal_kv::base64::encode(&range_end)),
            );
            crate::logs_cli::print_stream(c, &path, |line| watch_line(line, prev_kv)).await?;
        }
        KvCmd::Compaction { revision } => {
            write(c, Op::Compact { revision }).await?;
            println!("compacted revision {revision}");
        }
        KvCmd::Lease(l) => lease(c, l).await?,
    }
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum WatchLine {
    Events { events: Vec<Event> },
    Compacted { compact_revision: i64 },
}

/// etcdctl's watch output: `PUT`/`DELETE`, then (previous pair,) key and value per change.
fn watch_line(line: &[u8], prev_kv: bool) -> Option<String> {
    match serde_json::from_slice::<WatchLine>(line).ok()? {
        WatchLine::Events { events } => {
            let mut out = Vec::new();
            for e in events {
                out.push(match e.kind {
                    EventKind::Put => "PUT".to_string(),
                    EventKind::Delete => "DELETE".to_string(),
                });
                if prev_kv {
                    if let Some(p) = &e.prev_kv {
                        out.push(text(&p.key));
                        out.push(text(&p.value));
                    }
                }
                out.push(text(&e.kv.key));
                out.push(text(&e.kv.value));
            }
            Some(out.join("\n"))
        }
        WatchLine::Compacted { compact_revision } => Some(format!(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted; compact revision {compact_revision})"
        )),
    }
}

async fn lease(c: &Client, cmd: LeaseCmd) -> Result<()> {
    match cmd {
        LeaseCmd::Grant { ttl } => {
            let OpResponse::LeaseGrant(LeaseGrantResponse { id, ttl, .. }) =
                write(c, Op::LeaseGrant { id: 0, ttl }).await?
            else {
                bail!("unexpected answer")
            };
            println!("lease {id:016x} granted with TTL({ttl}s)");
        }
        LeaseCmd::Revoke { id } => {
            let OpResponse::LeaseRevoke(LeaseRevokeResponse { .. }) =
                write(c, Op::LeaseRevoke { id }).await?
            else {
                bail!("unexpected answer")
            };
            println!("lease {id:016x} revoked");
        }
        LeaseCmd::KeepAlive { id, once } => loop {
            let r: serde_json::Value =
                c.post(&format!("/v1/kv/leases/{id}/keepalive"), &serde_json::json!({})).await?;
            let ttl = r["ttl"].as_i64().context("the daemon's answer has no ttl")?;
            println!("lease {id:016x} keepalived with TTL({ttl})");
            if once {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(u64::try_from(ttl / 3).unwrap_or(0).max(1)))
                .await;
        },
        LeaseCmd::Timetolive { id, keys } => {
            let r: LeaseTimeToLiveResponse = c.get(&format!("/v1/kv/leases/{id}?keys={keys}")).await?;
            let mut line =
                format!("lease {id:016x} granted with TTL({}s), remaining({}s)", r.granted_ttl, r.ttl);
            if keys {
                let names: Vec<String> = r.keys.iter().map(|k| text(k)).collect();
                line.push_str(&format!(", attached keys([{}])", names.join(" ")));
            }
            println!("{line}");
        }
        LeaseCmd::Ls => {
            let ids: Vec<i64> = c.get("/v1/kv/leases").await?;
            println!("found {} leases", ids.len());
            for id in ids {
                println!("{id:016x}");
            }
        }
    }
    Ok(())
}
