//! The agent's local record of its tasks, one directory per task under `<data>/agent/tasks/`:
//! `task.json` holds the task as last assigned, the driver's handle once started, and the last
//! status observed here. Written atomically (temporary file, fsync, rename), so a crash leaves
//! either the old or the new record. The driver's own files live in `run/` beside it.
//!
//! Each record names its format (`"format": 1`, [`FORMAT_VERSION`]; a record without one was
//! written before formats were numbered and is format 1). A record of a newer format — written
//! by a newer Shoal — makes [`Store::open`] fail, so the daemon refuses to start instead of
//! misreading the task (and reporting it lost, which would run it twice).

use serde::{Deserialize, Serialize};
use shoal_driver::Handle;
use shoal_types::{Task, TaskId, TaskStatus};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The format of the task records this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The format a record names (none: 1).
fn record_format(v: &serde_json::Value) -> u32 {
    v.get("format").and_then(|f| f.as_u64()).map_or(1, |f| u32::try_from(f).unwrap_or(u32::MAX))
}

fn newer_format(path: &Path, found: u32) -> String {
    format!(
        "task record {} was written by a newer Shoal (format {found}, this binary knows up to {FORMAT_VERSION}): \
         upgrade this binary",
        path.display()
    )
}

/// Reads one record, refusing a newer format.
fn read_record(path: &Path) -> Result<LocalTask, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let found = record_format(&v);
    if found > FORMAT_VERSION {
        return Err(newer_format(path, found));
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalTask {
    pub task: Task,
    /// The driver that runs it (chosen once, on acceptance).
    pub driver: String,
    pub handle: Option<Handle>,
    pub status: TaskStatus,
}

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the records in `root`; fails if any of them is of a newer format (see the module).
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Store> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        check_formats(&root)?;
        Ok(Store { root })
    }

    pub fn task_dir(&self, id: &TaskId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// The directory a driver keeps the task's files in.
    pub fn run_dir(&self, id: &TaskId) -> PathBuf {
        self.task_dir(id).join("run")
    }

    pub fn save(&self, t: &LocalTask) -> std::io::Result<()> {
        let dir = self.task_dir(&t.task.id);
        std::fs::create_dir_all(dir.join("run"))?;
        let mut v = serde_json::to_value(t).map_err(std::io::Error::other)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("format".into(), FORMAT_VERSION.into());
        }
        let bytes = serde_json::to_vec_pretty(&v).map_err(std::io::Error::other)?;
        let tmp = dir.join("task.json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join("task.json"))?;
        Ok(())
    }

    /// Every task recorded here; unreadable records are reported, not fatal.
    pub fn load_all(&self) -> Vec<Result<LocalTask, (PathBuf, String)>> {
        let Ok(rd) = std::fs::read_dir(&self.root) else { return Vec::new() };
        let mut dirs: Vec<PathBuf> =
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
        dirs.sort();
        dirs.into_iter().map(|d| read_record(&d.join("task.json")).map_err(|e| (d.clone(), e))).collect()
    }

    pub fn remove(&self, id: &TaskId) -> std::io::Result<()> {
        remove_dir(&self.task_dir(id))
    }
}

/// Fails if a record under `root` (a missing directory has none) is of a newer format than
/// this binary knows; the daemon checks this before it starts anything.
pub fn check_formats(root: &Path) -> std::io::Result<()> {
    let Ok(rd) = std::fs::read_dir(root) else { return Ok(()) };
    for e in rd.flatten() {
        let path = e.path().join("task.json");
        let Ok(bytes) = std::fs::read(&path) else { continue };
        // Unreadable records are reported when the agent recovers; only a newer format is fatal.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            let found = record_format(&v);
            if found > FORMAT_VERSION {
                return Err(std::io::Error::other(newer_format(&path, found)));
            }
        }
    }
    Ok(())
}

pub fn remove_dir(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;

    fn record(dir: &Path, json: &serde_json::Value) -> PathBuf {
        let d = dir.join("t1");
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("task.json"), serde_json::to_vec(json).expect("json")).expect("write");
        d.join("task.json")
    }

    #[test]
    fn a_record_of_a_newer_format_is_refused_and_one_without_a_format_is_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("tasks");
        let path = record(&root, &serde_json::json!({"format": FORMAT_VERSION + 1}));
        let e = Store::open(&root).expect_err("newer format refused");
        assert_eq!(e.to_string(), newer_format(&path, FORMAT_VERSION + 1));
        assert!(e.to_string().contains("upgrade this binary"), "{e}");
        // Without a format (as before formats were numbered) it is format 1 and passes the
        // check (this one is no task, so recovery reports it as unreadable).
        record(&root, &serde_json::json!({"driver": "process"}));
        let store = Store::open(&root).expect("format 1");
        let all = store.load_all();
        assert_eq!(all.len(), 1);
        assert!(all[0].as_ref().is_err_and(|(_, e)| !e.contains("newer")), "{all:?}");
    }
}
