//! `--partial-dir DIR`: keep the received part of an interrupted transfer,
//! never under the file's final name, and use it as the basis next time.
//!
//! rsync's semantics (`rsync.1` `--partial-dir`): a relative DIR lives in each
//! file's own directory (`sub/.rsync-partial/name` for `sub/name`), created
//! when a partial is kept (only its last component, mode 0700) and removed
//! again when it is empty; an absolute DIR is one directory for every file,
//! by base name, and is never removed. A relative DIR is also excluded from
//! the transfer with a perishable rule (`-p DIR/`), which keeps the sender's
//! own partial dirs out of the list and protects ours from `--delete`.
//!
//! How rmirror uses it:
//! * the generator looks for `DIR/name` before it computes block sums: a
//!   file that is already up to date drops its partial; otherwise the partial
//!   (not the old file) is the basis, so only what it lacks is sent;
//! * the receiver, when the stream ends inside a file (connection cut, server
//!   error, a stop signal), moves the temp file to `DIR/name` if any literal
//!   data arrived for it (otherwise the temp holds nothing the basis did not
//!   already have, and an existing partial is kept as it is);
//! * a stopped run moves its verified but unpublished files there too (they
//!   are complete: the next run then sends almost nothing for them);
//! * after a file is published, its partial is removed.
//!
//! Everything goes through [`DirHandle`] (`*at` calls on single names, no
//! symlink followed): a symlink where DIR should be is never used as a basis
//! and is replaced when a partial is kept.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::engine::dest::{self, Dest, DirHandle, Kind, Meta};

/// What `--partial-dir` named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartialDir {
    /// Below each file's own directory (validated: no `..`, no empty or `.` component).
    Relative(Vec<u8>),
    /// One directory for all files, by base name.
    Absolute(PathBuf),
}

impl PartialDir {
    /// Parse the option's value. `""` and `"."` mean no partial dir (as in
    /// rsync); a relative value may not leave the file's directory.
    pub fn parse(s: &OsStr) -> Result<Option<PartialDir>, String> {
        let b = s.as_bytes();
        if b.first() == Some(&b'/') {
            return Ok(Some(PartialDir::Absolute(PathBuf::from(s))));
        }
        // Collapse `./` and `//` and a trailing `/`, as rsync's clean_fname does.
        let comps: Vec<&[u8]> = b.split(|&c| c == b'/').filter(|c| !c.is_empty() && *c != b".").collect();
        if comps.is_empty() {
            return Ok(None);
        }
        let rel = comps.join(&b'/');
        dest::check_rel(&rel).map_err(|e| format!("bad --partial-dir {:?}: {e}", s.to_string_lossy()))?;
        Ok(Some(PartialDir::Relative(rel)))
    }

    /// The filter rule rsync adds for a relative DIR: a perishable exclude of
    /// directories with that name (`-p DIR/`), wildcards taken literally.
    pub fn filter_rule(&self) -> Option<Vec<u8>> {
        let PartialDir::Relative(rel) = self else { return None };
        let mut r = b"-p ".to_vec();
        for &c in rel {
            if matches!(c, b'*' | b'?' | b'[' | b'\\') {
                r.push(b'\\');
            }
            r.push(c);
        }
        r.push(b'/');
        Some(r)
    }
}

/// A partial file found for a file.
pub struct Found {
    /// The partial dir holding it.
    pub dir: DirHandle,
    pub meta: Meta,
}

/// The partial dir of one run.
pub struct Partials {
    dir: PartialDir,
    /// The absolute DIR's handle, once it exists.
    abs: Mutex<Option<DirHandle>>,
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP))
}

impl Partials {
    pub fn new(dir: PartialDir) -> Self {
        let abs = match &dir {
            PartialDir::Absolute(p) => Dest::open(p, false).ok().map(|d| d.root().clone()),
            PartialDir::Relative(_) => None,
        };
        Partials { dir, abs: Mutex::new(abs) }
    }

    pub fn dir(&self) -> &PartialDir {
        &self.dir
    }

    /// The partial dir for files in `file_dir`, if it exists as a real
    /// directory (a symlink or a file there counts as absent).
    pub fn open(&self, file_dir: &DirHandle) -> io::Result<Option<DirHandle>> {
        match &self.dir {
            PartialDir::Absolute(_) => Ok(self.abs.lock().ok().and_then(|g| g.clone())),
            PartialDir::Relative(rel) => {
                let mut cur = file_dir.clone();
                for c in rel.split(|&b| b == b'/') {
                    cur = match cur.open_dir(c) {
                        Ok(h) => h,
                        Err(e) if is_missing(&e) => return Ok(None),
                        Err(e) => return Err(e),
                    };
                }
                Ok(Some(cur))
            }
        }
    }

    /// The partial dir for files in `file_dir`, created if missing (only its
    /// last component, mode 0700; whatever non-directory is there is removed).
    fn open_or_create(&self, file_dir: &DirHandle) -> io::Result<DirHandle> {
        match &self.dir {
            PartialDir::Absolute(p) => {
                let mut g = self.abs.lock().map_err(|_| io::Error::other("partial dir lock poisoned"))?;
                if let Some(h) = g.as_ref() {
                    return Ok(h.clone());
                }
                let h = Dest::open(p, true)?.root().clone();
                *g = Some(h.clone());
                Ok(h)
            }
            PartialDir::Relative(rel) => {
                let (parent, last) = dest::split_parent(rel);
                let mut cur = file_dir.clone();
                if !parent.is_empty() {
                    for c in parent.split(|&b| b == b'/') {
                        cur = cur.open_dir(c)?;
                    }
                }
                match cur.stat(last)? {
                    Some(m) if m.kind == Kind::Dir => {}
                    Some(_) => {
                        cur.unlink(last)?;
                        cur.mkdir(last, 0o700)?;
                    }
                    None => cur.mkdir(last, 0o700)?,
                }
                cur.open_dir(last)
            }
        }
    }

    /// The partial file kept for `base` (a regular file, never a symlink).
    pub fn find(&self, file_dir: &DirHandle, base: &[u8]) -> io::Result<Option<Found>> {
        let Some(dir) = self.open(file_dir)? else { return Ok(None) };
        Self::find_in(dir, base)
    }

    /// The partial file for `base` in the partial dir `dir` (from [`Partials::open`]).
    pub fn find_in(dir: DirHandle, base: &[u8]) -> io::Result<Option<Found>> {
        match dir.stat(base)? {
            Some(meta) if meta.kind == Kind::File => Ok(Some(Found { dir, meta })),
            _ => Ok(None),
        }
    }

    /// Move the temp file `tmp` (in `file_dir`) to the partial file of `base`,
    /// replacing an older partial.
    pub fn keep(&self, file_dir: &DirHandle, tmp: &[u8], base: &[u8]) -> io::Result<()> {
        let dir = self.open_or_create(file_dir)?;
        if let Some(m) = dir.stat(base)? {
            if m.kind == Kind::Dir {
                dir.remove_all(base)?;
            }
        }
        file_dir.rename(tmp, &dir, base)
    }

    /// Remove the partial file of `base` (if any), and a relative partial dir
    /// that is then empty. Returns whether a partial file was removed.
    pub fn remove(&self, file_dir: &DirHandle, base: &[u8]) -> io::Result<bool> {
        let Some(found) = self.find(file_dir, base)? else { return Ok(false) };
        found.dir.unlink(base)?;
        self.remove_dir_if_empty(file_dir);
        Ok(true)
    }

    /// Remove a relative partial dir below `file_dir` when it is empty.
    pub fn remove_dir_if_empty(&self, file_dir: &DirHandle) {
        if let PartialDir::Relative(rel) = &self.dir {
            let (parent, last) = dest::split_parent(rel);
            let mut cur = file_dir.clone();
            if !parent.is_empty() {
                for c in parent.split(|&b| b == b'/') {
                    match cur.open_dir(c) {
                        Ok(h) => cur = h,
                        Err(_) => return,
                    }
                }
            }
            // ENOTEMPTY (other partials still there) and ENOENT are both fine.
            let _ = cur.rmdir(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn parse_values() {
        assert_eq!(PartialDir::parse(os(".rsync-partial")).unwrap(), Some(PartialDir::Relative(b".rsync-partial".to_vec())));
        assert_eq!(PartialDir::parse(os("./a//b/")).unwrap(), Some(PartialDir::Relative(b"a/b".to_vec())));
        assert_eq!(PartialDir::parse(os("")).unwrap(), None);
        assert_eq!(PartialDir::parse(os(".")).unwrap(), None);
        assert_eq!(PartialDir::parse(os("./")).unwrap(), None);
        assert_eq!(PartialDir::parse(os("/var/tmp/p")).unwrap(), Some(PartialDir::Absolute("/var/tmp/p".into())));
        for bad in ["..", "a/../b", "../p"] {
            assert!(PartialDir::parse(os(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_rules() {
        let r = PartialDir::parse(os(".rsync-partial")).unwrap().unwrap();
        assert_eq!(r.filter_rule().unwrap(), b"-p .rsync-partial/");
        let w = PartialDir::parse(os("p*[x]")).unwrap().unwrap();
        assert_eq!(w.filter_rule().unwrap(), b"-p p\\*\\[x]/");
        assert!(PartialDir::Absolute("/x".into()).filter_rule().is_none());
        // The rule parses, excludes that directory name anywhere and protects it.
        let mut fl = crate::filter::FilterList::new();
        fl.add_rule_bytes(&r.filter_rule().unwrap()).unwrap();
        assert!(fl.protects(b"sub/.rsync-partial", true));
        assert!(fl.protects(b".rsync-partial", true));
        assert!(!fl.protects(b".rsync-partial", false), "only directories");
        assert!(!fl.protects(b"sub/file", false));
        assert!(!fl.protects_in_deleted_dir(b"gone/.rsync-partial", true), "perishable");
    }

    fn write(h: &DirHandle, name: &[u8], data: &[u8]) {
        let mut f = h.create_excl(name).unwrap();
        std::io::Write::write_all(&mut f, data).unwrap();
    }

    #[test]
    fn keep_find_remove_relative() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("sub")).unwrap();
        let d = Dest::open(t.path(), false).unwrap();
        let sub = d.dir(b"sub").unwrap();
        let p = Partials::new(PartialDir::Relative(b".rsync-partial".to_vec()));
        assert!(p.find(&sub, b"f").unwrap().is_none());
        write(&sub, b".~rmirror.f.1", b"first part");
        p.keep(&sub, b".~rmirror.f.1", b"f").unwrap();
        assert!(!t.path().join("sub/f").exists(), "never under the final name");
        assert!(!t.path().join("sub/.~rmirror.f.1").exists());
        assert_eq!(std::fs::read(t.path().join("sub/.rsync-partial/f")).unwrap(), b"first part");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.path().join("sub/.rsync-partial")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // A newer partial replaces the older one.
        write(&sub, b".~rmirror.f.2", b"first part, and more");
        p.keep(&sub, b".~rmirror.f.2", b"f").unwrap();
        let found = p.find(&sub, b"f").unwrap().unwrap();
        assert_eq!(found.meta.size, 20);
        // Two partials: removing one keeps the dir, removing the last removes it.
        write(&sub, b".~rmirror.g.3", b"g");
        p.keep(&sub, b".~rmirror.g.3", b"g").unwrap();
        assert!(p.remove(&sub, b"f").unwrap());
        assert!(t.path().join("sub/.rsync-partial").is_dir());
        assert!(!p.remove(&sub, b"f").unwrap());
        assert!(p.remove(&sub, b"g").unwrap());
        assert!(!t.path().join("sub/.rsync-partial").exists());
    }

    #[test]
    fn symlinked_partial_dir_is_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), b"outside").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join(".rsync-partial")).unwrap();
        let d = Dest::open(t.path(), false).unwrap();
        let root = d.root().clone();
        let p = Partials::new(PartialDir::Relative(b".rsync-partial".to_vec()));
        assert!(p.find(&root, b"f").unwrap().is_none(), "a symlinked partial dir is not a basis");
        assert!(!p.remove(&root, b"f").unwrap());
        write(&root, b".~rmirror.f.1", b"mine");
        p.keep(&root, b".~rmirror.f.1", b"f").unwrap();
        assert_eq!(std::fs::read(outside.path().join("f")).unwrap(), b"outside");
        assert!(std::fs::symlink_metadata(t.path().join(".rsync-partial")).unwrap().is_dir());
        assert_eq!(std::fs::read(t.path().join(".rsync-partial/f")).unwrap(), b"mine");
        // A symlink as the partial file itself is not a basis either.
        std::fs::remove_file(t.path().join(".rsync-partial/f")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), t.path().join(".rsync-partial/f")).unwrap();
        assert!(p.find(&root, b"f").unwrap().is_none());
    }

    #[test]
    fn multi_component_and_absolute() {
        let t = tempfile::tempdir().unwrap();
        let d = Dest::open(t.path(), false).unwrap();
        let root = d.root().clone();
        let p = Partials::new(PartialDir::Relative(b"tmp/partial".to_vec()));
        write(&root, b".~rmirror.f.1", b"x");
        // Only the last component is created (as rsync does).
        assert!(p.keep(&root, b".~rmirror.f.1", b"f").is_err());
        std::fs::create_dir(t.path().join("tmp")).unwrap();
        p.keep(&root, b".~rmirror.f.1", b"f").unwrap();
        assert!(p.find(&root, b"f").unwrap().is_some());
        assert!(p.remove(&root, b"f").unwrap());
        assert!(t.path().join("tmp").is_dir() && !t.path().join("tmp/partial").exists());

        let abs = tempfile::tempdir().unwrap();
        let dir = abs.path().join("parts");
        let a = Partials::new(PartialDir::Absolute(dir.clone()));
        assert!(a.find(&root, b"f").unwrap().is_none());
        write(&root, b".~rmirror.f.2", b"abs");
        a.keep(&root, b".~rmirror.f.2", b"f").unwrap();
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"abs");
        assert!(a.remove(&root, b"f").unwrap());
        assert!(dir.is_dir(), "an absolute partial dir is never removed");
    }
}
