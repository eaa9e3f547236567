//! The persisted status file: one JSON document with an entry per job (last
//! start, end, result, exit code, files/bytes moved, next due), rewritten
//! atomically (temp file, fsync, rename, fsync of the directory) after every
//! change, so a crash or a concurrent `rmirror status` never sees half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Synced.
    Ok,
    /// Nothing to do (marker unchanged).
    Unchanged,
    Failed,
    /// Not run: the destination lock was busy.
    Skipped,
    Running,
    /// Not complete, retried soon: the upstream was being updated, so the
    /// late phase (index files) and deletions were held back.
    Retry,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Ok => "ok",
            RunState::Unchanged => "unchanged",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
            RunState::Running => "running",
            RunState::Retry => "retry",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobStatus {
    /// Seconds since the epoch (fractional).
    pub last_start: Option<f64>,
    pub last_end: Option<f64>,
    pub result: Option<RunState>,
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub deleted: u64,
    #[serde(default)]
    pub sessions: u32,
    pub upstream: Option<String>,
    #[serde(default)]
    pub message: String,
    pub next_due: Option<f64>,
    /// The last successful (ok/unchanged) run's end.
    pub last_success: Option<f64>,
    #[serde(default)]
    pub runs: u64,
    #[serde(default)]
    pub failures: u64,
    /// pid of the process that ran it last.
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StatusDoc {
    pub version: u32,
    pub jobs: BTreeMap<String, JobStatus>,
}

pub fn read(path: &Path) -> Result<StatusDoc, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StatusDoc { version: 1, jobs: BTreeMap::new() }),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Write `doc` to `path` atomically.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp{}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(), std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The status file as this process keeps it.
pub struct StatusStore {
    pub path: PathBuf,
    doc: Mutex<StatusDoc>,
}

impl StatusStore {
    pub fn open(path: &Path) -> Result<StatusStore, String> {
        let mut doc = read(path)?;
        doc.version = 1;
        Ok(StatusStore { path: path.to_path_buf(), doc: Mutex::new(doc) })
    }

    pub fn get(&self, job: &str) -> Option<JobStatus> {
        self.doc.lock().ok()?.jobs.get(job).cloned()
    }

    pub fn snapshot(&self) -> StatusDoc {
        self.doc.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Change one job's entry and write the file.
    pub fn update(&self, job: &str, f: impl FnOnce(&mut JobStatus)) -> Result<(), String> {
        let mut doc = self.doc.lock().map_err(|_| "status lock poisoned".to_string())?;
        f(doc.jobs.entry(job.to_string()).or_default());
        let data = serde_json::to_vec_pretty(&*doc).map_err(|e| e.to_string())?;
        write_atomic(&self.path, &data).map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}
