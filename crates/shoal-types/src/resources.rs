//! Resource vectors: CPU (nano-CPUs, 1e9 = one core), memory (bytes), named generic resources
//! (`gpu=2`) and, as limits only, pids. Arithmetic saturates; `fits` is the one place that decides
//! whether a reservation can be granted, so "never overcommit" has a single definition.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub const NANO_CPUS_PER_CPU: u64 = 1_000_000_000;

/// A decimal number of CPUs (`0.5`, `2`) in nano-CPUs, exact to 9 decimal places (the CLI's
/// `--limit-cpu`/`--reserve-cpu` and compose's `cpus`).
pub fn parse_cpus(s: &str) -> Result<u64, String> {
    let err = || format!("invalid CPU count {s:?}: use a decimal number of CPUs (e.g. 0.5, 2)");
    let t = s.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return Err(err());
    }
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| err())? };
    let frac_nanos: u64 =
        if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| err())? };
    whole
        .checked_mul(NANO_CPUS_PER_CPU)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or_else(|| format!("CPU count {s:?} is too large"))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct Resources {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub generic: BTreeMap<String, u64>,
    /// The most processes and threads the task may have at once (its cgroup's `pids.max`);
    /// 0: no limit of its own. Meaningful in limits only: nodes do not advertise pids and
    /// [`Resources::fits`], [`Resources::add`] and [`Resources::sub`] ignore them.
    #[serde(skip_serializing_if = "is_zero")]
    pub pids: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Which dimension of a reservation did not fit (used to explain scheduling failures).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shortfall {
    Cpu,
    Memory,
    Generic(String),
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shortfall::Cpu => f.write_str("insufficient cpu"),
            Shortfall::Memory => f.write_str("insufficient memory"),
            Shortfall::Generic(n) => write!(f, "insufficient generic resource {n}"),
        }
    }
}

impl Resources {
    pub fn is_zero(&self) -> bool {
        self.nano_cpus == 0
            && self.memory_bytes == 0
            && self.pids == 0
            && self.generic.values().all(|&v| v == 0)
    }

    /// Whether `req` fits in `self` (self = what is still available). Returns the first
    /// dimension that does not fit.
    pub fn fits(&self, req: &Resources) -> Result<(), Shortfall> {
        if req.memory_bytes > self.memory_bytes {
            return Err(Shortfall::Memory);
        }
        if req.nano_cpus > self.nano_cpus {
            return Err(Shortfall::Cpu);
        }
        for (name, &want) in &req.generic {
            if want > 0 && want > self.generic.get(name).copied().unwrap_or(0) {
                return Err(Shortfall::Generic(name.clone()));
            }
        }
        Ok(())
    }

    pub fn add(&mut self, other: &Resources) {
        self.nano_cpus = self.nano_cpus.saturating_add(other.nano_cpus);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        for (k, v) in &other.generic {
            let e = self.generic.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.nano_cpus = self.nano_cpus.saturating_sub(other.nano_cpus);
        self.memory_bytes = self.memory_bytes.saturating_sub(other.memory_bytes);
        for (k, v) in &other.generic {
            if let Some(e) = self.generic.get_mut(k) {
                *e = e.saturating_sub(*v);
                if *e == 0 {
                    self.generic.remove(k);
                }
            }
        }
    }

    /// `total - used`, never below zero.
    pub fn minus(&self, used: &Resources) -> Resources {
        let mut r = self.clone();
        r.sub(used);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cpu: u64, mem: u64) -> Resources {
        Resources { nano_cpus: cpu, memory_bytes: mem, ..Default::default() }
    }

    #[test]
    fn fits_checks_every_dimension() {
        let avail = r(2, 100);
        assert_eq!(avail.fits(&r(2, 100)), Ok(()));
        assert_eq!(avail.fits(&r(3, 1)), Err(Shortfall::Cpu));
        assert_eq!(avail.fits(&r(1, 101)), Err(Shortfall::Memory));
        let mut gpu = r(0, 0);
        gpu.generic.insert("gpu".into(), 1);
        assert_eq!(avail.fits(&gpu), Err(Shortfall::Generic("gpu".into())));
        let mut with_gpu = avail.clone();
        with_gpu.generic.insert("gpu".into(), 1);
        assert_eq!(with_gpu.fits(&gpu), Ok(()));
    }

    #[test]
    fn pids_are_a_limit_only() {
        // Not a schedulable quantity: a node (which advertises none) fits any pids limit.
        let limits = Resources { pids: 50, ..Default::default() };
        assert_eq!(r(1, 1).fits(&limits), Ok(()));
        assert!(!limits.is_zero());
        let mut used = r(1, 1);
        used.add(&limits);
        assert_eq!(used, r(1, 1));
        // JSON: absent when 0 (older specs and readers unchanged), read when present.
        assert_eq!(
            serde_json::to_value(r(1, 2)).expect("json"),
            serde_json::json!({"nano_cpus": 1, "memory_bytes": 2})
        );
        assert_eq!(serde_json::to_value(&limits).expect("json")["pids"], 50);
        let back: Resources = serde_json::from_str(r#"{"memory_bytes": 5, "pids": 7}"#).expect("parse");
        assert_eq!((back.memory_bytes, back.pids), (5, 7));
        let old: Resources = serde_json::from_str(r#"{"memory_bytes": 5}"#).expect("parse");
        assert_eq!(old.pids, 0);
    }

    #[test]
    fn add_sub_saturate() {
        let mut a = r(5, 5);
        a.sub(&r(10, 1));
        assert_eq!(a, r(0, 4));
        a.add(&r(u64::MAX, 0));
        assert_eq!(a.nano_cpus, u64::MAX);
    }
}
