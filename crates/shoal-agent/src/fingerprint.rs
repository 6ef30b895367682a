//! What this node is: hostname, platform, CPUs and memory (the smaller of the machine's and this
//! process's cgroup limits), generic resources from the command line, and the drivers it offers.

use shoal_types::{DriverInfo, NodeDescription, Platform, Resources, NANO_CPUS_PER_CPU};
use std::collections::BTreeMap;
use std::path::Path;

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn meminfo_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// A cgroup memory limit file's value (`max` or an absurdly large v1 value means none).
fn parse_memory_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|&v| v < (1u64 << 60))
}

/// cgroup v2 `cpu.max` ("quota period" or "max period") or v1 quota/period → CPUs in nanos.
fn parse_cpu_max(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    let quota = it.next()?.parse::<u64>().ok()?;
    let period = it.next()?.parse::<u64>().ok().filter(|&p| p > 0)?;
    Some(quota.saturating_mul(NANO_CPUS_PER_CPU) / period)
}

fn cgroup_limits(root: &Path) -> (Option<u64>, Option<u64>) {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    let mem = read("memory.max")
        .as_deref()
        .and_then(parse_memory_limit)
        .or_else(|| read("memory/memory.limit_in_bytes").as_deref().and_then(parse_memory_limit));
    let cpu = read("cpu.max").as_deref().and_then(parse_cpu_max).or_else(|| {
        let q = read("cpu/cpu.cfs_quota_us")?;
        let p = read("cpu/cpu.cfs_period_us")?;
        if q.trim().starts_with('-') {
            return None;
        }
        parse_cpu_max(&format!("{} {}", q.trim(), p.trim()))
    });
    (mem, cpu)
}

pub fn describe(
    hostname: String,
    labels: BTreeMap<String, String>,
    generic: BTreeMap<String, u64>,
    drivers: Vec<DriverInfo>,
) -> NodeDescription {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * NANO_CPUS_PER_CPU;
    let mem = std::fs::read_to_string("/proc/meminfo").ok().as_deref().and_then(meminfo_total).unwrap_or(0);
    let (cg_mem, cg_cpu) = cgroup_limits(Path::new("/sys/fs/cgroup"));
    NodeDescription {
        hostname,
        platform: Platform { os: std::env::consts::OS.into(), arch: std::env::consts::ARCH.into() },
        resources: Resources {
            nano_cpus: cg_cpu.map_or(cpus, |c| c.min(cpus)),
            memory_bytes: cg_mem.map_or(mem, |m| m.min(mem)),
            generic,
            pids: 0,
        },
        drivers,
        engine_version: env!("CARGO_PKG_VERSION").into(),
        engine_labels: labels,
        // Filled by the agent from the oci image store.
        images: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("150000 100000"), Some(1_500_000_000));
        assert_eq!(meminfo_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), Some(24576000 * 1024));
    }

    #[test]
    fn reads_a_v2_and_a_v1_layout() {
        let d = tempfile::tempdir().expect("tmp");
        std::fs::write(d.path().join("memory.max"), "536870912\n").expect("w");
        std::fs::write(d.path().join("cpu.max"), "200000 100000\n").expect("w");
        assert_eq!(cgroup_limits(d.path()), (Some(512 << 20), Some(2 * NANO_CPUS_PER_CPU)));
        let d = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(d.path().join("memory")).expect("mk");
        std::fs::create_dir_all(d.path().join("cpu")).expect("mk");
        std::fs::write(d.path().join("memory/memory.limit_in_bytes"), "9223372036854771712\n").expect("w");
        std::fs::write(d.path().join("cpu/cpu.cfs_quota_us"), "-1\n").expect("w");
        std::fs::write(d.path().join("cpu/cpu.cfs_period_us"), "100000\n").expect("w");
        assert_eq!(cgroup_limits(d.path()), (None, None));
    }
}
