//! One lock per job destination: an OS file lock (`flock(2)`, through rustix,
//! which the crate already uses — no extra dependency) on a file in the state
//! directory, outside the published tree. The kernel drops a `flock` when its
//! holder dies, so a lock file left by a crashed run is simply taken over; the
//! pid written into it tells whether that happened (and who holds a busy lock).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

pub struct DestLock {
    file: File,
    pub path: PathBuf,
    /// The pid of a dead process whose lock file this one took over.
    pub took_over_from: Option<u32>,
}

#[derive(Debug)]
pub enum LockError {
    /// Another live process (or another job in this one) holds it.
    Busy { path: PathBuf, holder: Option<u32> },
    Io(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy { path, holder: Some(p) } => write!(f, "destination locked by pid {p} ({})", path.display()),
            LockError::Busy { path, holder: None } => write!(f, "destination locked ({})", path.display()),
            LockError::Io(e) => f.write_str(e),
        }
    }
}

/// The lock file for a destination: its absolute path, made one file name.
pub fn lock_path(lock_dir: &Path, dest: &Path) -> PathBuf {
    let s = dest.to_string_lossy();
    let mut name: String = s.trim_start_matches('/').chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    if name.len() > 200 {
        name = format!("{}-{:016x}", &name[name.len() - 180..], fnv(s.as_bytes()));
    }
    lock_dir.join(format!("{name}.lock"))
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100000001b3))
}

fn pid_alive(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => match rustix::process::test_kill_process(p) {
            Ok(()) => true,
            Err(e) => e != rustix::io::Errno::SRCH,
        },
        None => false,
    }
}

impl DestLock {
    pub fn acquire(lock_dir: &Path, dest: &Path, job: &str) -> Result<DestLock, LockError> {
        std::fs::create_dir_all(lock_dir).map_err(|e| LockError::Io(format!("cannot create {}: {e}", lock_dir.display())))?;
        let path = lock_path(lock_dir, dest);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LockError::Io(format!("cannot open {}: {e}", path.display())))?;
        let mut old = String::new();
        let _ = file.read_to_string(&mut old);
        let old_pid: Option<u32> = old.split_whitespace().next().and_then(|w| w.parse().ok());
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                return Err(LockError::Busy { path, holder: old_pid });
            }
            return Err(LockError::Io(format!("cannot lock {}: {e}", path.display())));
        }
        let me = std::process::id();
        let took_over_from = old_pid.filter(|&p| p != me && !pid_alive(p));
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = writeln!(file, "{me} {job} {}", dest.display());
        let _ = file.sync_data();
        Ok(DestLock { file, path, took_over_from })
    }
}

impl Drop for DestLock {
    fn drop(&mut self) {
        // An empty file means "released cleanly"; the flock goes with the fd.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_stale_takeover() {
        let d = tempfile::tempdir().unwrap();
        let dest = Path::new("/srv/mirror/x");
        let a = DestLock::acquire(d.path(), dest, "x").unwrap();
        assert!(matches!(DestLock::acquire(d.path(), dest, "x"), Err(LockError::Busy { holder: Some(p), .. }) if p == std::process::id()));
        drop(a);
        // A lock file left by a dead process (pid far beyond pid_max).
        std::fs::write(lock_path(d.path(), dest), "999999999 x /srv/mirror/x\n").unwrap();
        let b = DestLock::acquire(d.path(), dest, "x").unwrap();
        assert_eq!(b.took_over_from, Some(999999999));
    }
}
