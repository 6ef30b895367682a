//! The agent's local record of its tasks, one directory per task under `<data>/agent/tasks/`:
//! `task.json` holds the task as last assigned, the driver's handle once started, and the last
//! status observed here. Written atomically (temporary file, fsync, rename), so a crash leaves
//! either the old or the new record. The driver's own files live in `run/` beside it.

use serde::{Deserialize, Serialize};
use shoal_driver::Handle;
use shoal_types::{Task, TaskId, TaskStatus};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Store> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
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
        let bytes = serde_json::to_vec_pretty(t).map_err(std::io::Error::other)?;
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
        dirs.into_iter()
            .map(|d| {
                let path = d.join("task.json");
                std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<LocalTask>(&b).map_err(|e| e.to_string()))
                    .map_err(|e| (d.clone(), e))
            })
            .collect()
    }

    pub fn remove(&self, id: &TaskId) -> std::io::Result<()> {
        remove_dir(&self.task_dir(id))
    }
}

pub fn remove_dir(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
