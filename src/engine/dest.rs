//! The destination tree, confined: every filesystem effect goes through a held
//! directory handle and `*at` system calls, walking one component at a time with
//! `O_NOFOLLOW`, so neither a hostile server nor a local process swapping a
//! directory for a symlink can make rmirror write outside DEST.
//!
//! Paths handed in are wire names (raw bytes, `/`-separated, relative). They
//! are validated again here ([`check_rel`]) even though the file-list decoder
//! already refused unsafe names: this type is the last line.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

/// Prefix of the hidden temp files rmirror writes next to their final names.
pub const TMP_PREFIX: &[u8] = b".~rmirror.";

/// Longest wire path accepted (MAXPATHLEN).
pub const MAX_PATH: usize = 4096;

/// Validate a relative wire path: no empty components, no `.`/`..`, no NUL, not
/// absolute, not longer than [`MAX_PATH`]. The lone root `"."` is allowed.
pub fn check_rel(name: &[u8]) -> io::Result<()> {
    if name == b"." {
        return Ok(());
    }
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsafe path {:?}: {why}", crate::text::escape_name(name)),
        ))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_PATH {
        return bad("too long");
    }
    if name[0] == b'/' {
        return bad("absolute");
    }
    if name.contains(&0) {
        return bad("contains NUL");
    }
    for c in name.split(|&b| b == b'/') {
        if c.is_empty() || c == b"." || c == b".." {
            return bad("empty, '.' or '..' component");
        }
        if c.len() > 255 {
            return bad("component longer than 255 bytes");
        }
    }
    Ok(())
}

/// Split `a/b/c` into (`a/b`, `c`); the root `"."` and top-level names have parent `""`.
pub fn split_parent(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&b""[..], name),
    }
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// What is at a path, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    pub size: i64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

fn meta_from(st: &rfs::Stat) -> Meta {
    let ft = FileType::from_raw_mode(st.st_mode as _);
    let kind = match ft {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    Meta {
        kind,
        mode: st.st_mode as u32,
        size: st.st_size as i64,
        mtime: st.st_mtime as i64,
        mtime_nsec: st.st_mtime_nsec as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        nlink: st.st_nlink as u64,
        rdev: st.st_rdev as u64,
    }
}

/// A held directory inside DEST.
#[derive(Clone)]
pub struct DirHandle {
    fd: Arc<OwnedFd>,
}

impl DirHandle {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn stat(&self, name: &[u8]) -> io::Result<Option<Meta>> {
        match rfs::statat(self.fd(), os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(meta_from(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(errno_io(e)),
        }
    }

    /// Open a regular file for reading, refusing symlinks and non-files.
    pub fn open_read(&self, name: &[u8]) -> io::Result<std::fs::File> {
        let fd = rfs::openat(
            self.fd(),
            os(name),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        let st = rfs::fstat(&fd).map_err(errno_io)?;
        if FileType::from_raw_mode(st.st_mode as _) != FileType::RegularFile {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let f = std::fs::File::from(fd);
        Ok(f)
    }

    /// Create a new file exclusively (never through a symlink), mode 0600.
    pub fn create_excl(&self, name: &[u8]) -> io::Result<std::fs::File> {
        let fd = rfs::openat(
            self.fd(),
            os(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno_io)?;
        Ok(std::fs::File::from(fd))
    }

    pub fn mkdir(&self, name: &[u8], mode: u32) -> io::Result<()> {
        rfs::mkdirat(self.fd(), os(name), Mode::from_raw_mode(mode as _)).map_err(errno_io)
    }

    pub fn symlink(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        rfs::symlinkat(os(target), self.fd(), os(name)).map_err(errno_io)
    }

    pub fn readlink(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        let t = rfs::readlinkat(self.fd(), os(name), Vec::new()).map_err(errno_io)?;
        Ok(t.into_bytes())
    }

    pub fn rename(&self, from: &[u8], to_dir: &DirHandle, to: &[u8]) -> io::Result<()> {
        rfs::renameat(self.fd(), os(from), to_dir.fd(), os(to)).map_err(errno_io)
    }

    /// Hard-link `from` (in this dir) as `to` in `to_dir`; never follows a symlink.
    pub fn link(&self, from: &[u8], to_dir: &DirHandle, to: &[u8]) -> io::Result<()> {
        rfs::linkat(self.fd(), os(from), to_dir.fd(), os(to), AtFlags::empty()).map_err(errno_io)
    }

    pub fn unlink(&self, name: &[u8]) -> io::Result<()> {
        rfs::unlinkat(self.fd(), os(name), AtFlags::empty()).map_err(errno_io)
    }

    pub fn rmdir(&self, name: &[u8]) -> io::Result<()> {
        rfs::unlinkat(self.fd(), os(name), AtFlags::REMOVEDIR).map_err(errno_io)
    }

    /// Open a sub-directory without following symlinks.
    pub fn open_dir(&self, name: &[u8]) -> io::Result<DirHandle> {
        let fd = rfs::openat(
            self.fd(),
            os(name),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        Ok(DirHandle { fd: Arc::new(fd) })
    }

    /// Names in this directory (without `.` and `..`).
    pub fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        let fd = rfs::openat(self.fd(), os(b"."), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(errno_io)?;
        let mut dir = rfs::Dir::read_from(&fd).map_err(errno_io)?;
        let mut out = Vec::new();
        while let Some(ent) = dir.read() {
            let ent = ent.map_err(errno_io)?;
            let n = ent.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            out.push(n.to_vec());
        }
        Ok(out)
    }

    /// Remove whatever is at `name`: a file, a symlink, or a directory tree.
    /// Returns how many entries were removed.
    pub fn remove_all(&self, name: &[u8]) -> io::Result<u64> {
        match self.stat(name)? {
            None => Ok(0),
            Some(m) if m.kind == Kind::Dir => {
                let sub = self.open_dir(name)?;
                let mut n = 0;
                for child in sub.list()? {
                    n += sub.remove_all(&child)?;
                }
                self.rmdir(name)?;
                Ok(n + 1)
            }
            Some(_) => {
                self.unlink(name)?;
                Ok(1)
            }
        }
    }

    /// Set permission bits on a name that is not a symlink.
    pub fn chmod(&self, name: &[u8], mode: u32) -> io::Result<()> {
        rfs::chmodat(self.fd(), os(name), Mode::from_raw_mode((mode & 0o7777) as _), AtFlags::empty())
            .map_err(errno_io)
    }

    /// Set the mtime of `name` without following a symlink (atime left as now).
    pub fn set_mtime(&self, name: &[u8], sec: i64, nsec: u32) -> io::Result<()> {
        let ts = Timestamps {
            last_access: Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT as _ },
            last_modification: Timespec { tv_sec: sec as _, tv_nsec: nsec as _ },
        };
        rfs::utimensat(self.fd(), os(name), &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(errno_io)
    }

    pub fn chown(&self, name: &[u8], uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        rfs::chownat(
            self.fd(),
            os(name),
            uid.map(|u| rustix::fs::Uid::from_raw(u)),
            gid.map(|g| rustix::fs::Gid::from_raw(g)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno_io)
    }

    pub fn mknod(&self, name: &[u8], mode: u32, rdev: u64) -> io::Result<()> {
        let ft = FileType::from_raw_mode(mode as _);
        rfs::mknodat(self.fd(), os(name), ft, Mode::from_raw_mode((mode & 0o7777) as _), rdev as _).map_err(errno_io)
    }
}

/// Set mode and mtime on an open file.
pub fn set_file_attrs(f: &std::fs::File, mode: Option<u32>, mtime: Option<(i64, u32)>) -> io::Result<()> {
    if let Some(m) = mode {
        rfs::fchmod(f, Mode::from_raw_mode((m & 0o7777) as _)).map_err(errno_io)?;
    }
    if let Some((sec, nsec)) = mtime {
        let ts = Timestamps {
            last_access: Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT as _ },
            last_modification: Timespec { tv_sec: sec as _, tv_nsec: nsec as _ },
        };
        rfs::futimens(f, &ts).map_err(errno_io)?;
    }
    Ok(())
}

/// The destination root.
#[derive(Clone)]
pub struct Dest {
    root: DirHandle,
    path: PathBuf,
}

impl Dest {
    /// Open DEST (following a symlink only for DEST itself, as rsync does),
    /// creating the last component when `create` is set.
    pub fn open(path: &Path, create: bool) -> io::Result<Dest> {
        if create {
            match std::fs::create_dir(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let fd = rfs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(errno_io)?;
        Ok(Dest { root: DirHandle { fd: Arc::new(fd) }, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn root(&self) -> &DirHandle {
        &self.root
    }

    /// Open the directory `dir` (a relative wire path, `""` or `"."` for the root),
    /// one component at a time, never following a symlink.
    pub fn dir(&self, dir: &[u8]) -> io::Result<DirHandle> {
        if dir.is_empty() || dir == b"." {
            return Ok(self.root.clone());
        }
        check_rel(dir)?;
        let mut cur = self.root.clone();
        for comp in dir.split(|&b| b == b'/') {
            cur = open_component(&cur, comp, dir)?;
        }
        Ok(cur)
    }
}

/// One step of a confined walk: `comp` inside `parent`, with `O_NOFOLLOW |
/// O_DIRECTORY`, so a symlink or a non-directory there is refused (named
/// after the whole path `full` being opened).
fn open_component(parent: &DirHandle, comp: &[u8], full: &[u8]) -> io::Result<DirHandle> {
    parent.open_dir(comp).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to write through a symlink or non-directory at {:?}", crate::text::escape_name(full)),
            )
        } else {
            e
        }
    })
}

/// Handles kept at most by one [`DirCache`] for the ancestor chain (bounds
/// its open descriptors on absurdly deep paths; deeper levels are re-walked
/// from the deepest kept one).
const CHAIN_MAX: usize = 32;

/// A cache of the directories on the path to the last directory looked up:
/// file lists are sorted by directory (depth first), so the next directory
/// almost always shares all but its last component or two with the previous
/// one. A lookup reuses the deepest cached ancestor and opens only the
/// components below it, one at a time with `O_NOFOLLOW` as [`Dest::dir`]
/// does; the chain is then cut back to the new path's ancestors.
///
/// Why reusing handles is safe: every handle in the chain was opened by that
/// same confined walk, so it refers to a real directory reached from DEST
/// without following a symlink *at the time it was opened*. An open directory
/// descriptor keeps naming that directory inode; if a local process later
/// renames it away or replaces its path with a symlink, writes through the
/// handle still land in that same real directory — never at the symlink's
/// target. That is exactly the guarantee the uncached walk gives, whose own
/// handles (the root's, and each component's until the next is opened) are
/// subject to the same swap between open and use; no cached handle is ever
/// derived from a path that resolved through a symlink. A component *newly*
/// opened below a cached ancestor is checked with `O_NOFOLLOW` like any other.
///
/// Staleness: the chain only ever holds the ancestors of (and) the last
/// directory looked up, so entries removed through a handle this cache
/// returned (`parent_of(name)` → operate on the base name) are below the
/// chain, never in it, exactly as with a one-entry cache. Code that replaces
/// a directory at or above the current one calls [`DirCache::invalidate`],
/// which drops every handle.
pub struct DirCache {
    dest: Dest,
    /// The last directory looked up (`""` = the root).
    path: Vec<u8>,
    /// `chain[i]` = (end of component `i` in `path`, handle of `path[..end]`),
    /// for the first `chain.len()` (≤ [`CHAIN_MAX`]) components of `path`.
    chain: Vec<(usize, DirHandle)>,
    /// The handle of `path` itself, if the last lookup succeeded.
    last: Option<DirHandle>,
    /// Directory opens done by this cache (for the tests).
    #[cfg(test)]
    opens: usize,
}

impl DirCache {
    pub fn new(dest: Dest) -> Self {
        DirCache {
            dest,
            path: Vec::new(),
            chain: Vec::new(),
            last: None,
            #[cfg(test)]
            opens: 0,
        }
    }

    pub fn dest(&self) -> &Dest {
        &self.dest
    }

    /// The parent directory handle and final component of a wire path.
    pub fn parent_of<'n>(&mut self, name: &'n [u8]) -> io::Result<(DirHandle, &'n [u8])> {
        check_rel(name)?;
        let (dir, base) = split_parent(name);
        let h = self.dir(dir)?;
        Ok((h, base))
    }

    pub fn dir(&mut self, dir: &[u8]) -> io::Result<DirHandle> {
        if dir.is_empty() || dir == b"." {
            return Ok(self.dest.root.clone());
        }
        if let Some(h) = &self.last {
            if self.path == dir {
                return Ok(h.clone());
            }
        }
        check_rel(dir)?;
        // Keep the cached ancestors that are also ancestors (or self) of `dir`.
        let keep = self
            .chain
            .iter()
            .take_while(|&&(end, _)| {
                dir.len() >= end && dir[..end] == self.path[..end] && (dir.len() == end || dir[end] == b'/')
            })
            .count();
        self.chain.truncate(keep);
        self.last = None;
        self.path.clear();
        self.path.extend_from_slice(dir);
        let (mut cur, mut start) = match self.chain.last() {
            Some((end, h)) => (h.clone(), end + 1),
            None => (self.dest.root.clone(), 0),
        };
        while start <= dir.len() {
            let end = dir[start..].iter().position(|&b| b == b'/').map_or(dir.len(), |i| start + i);
            cur = open_component(&cur, &dir[start..end], dir)?;
            #[cfg(test)]
            {
                self.opens += 1;
            }
            if self.chain.len() < CHAIN_MAX {
                self.chain.push((end, cur.clone()));
            }
            start = end + 1;
        }
        self.last = Some(cur.clone());
        Ok(cur)
    }

    /// Forget every cached handle (after a directory was replaced).
    pub fn invalidate(&mut self) {
        self.chain.clear();
        self.last = None;
        self.path.clear();
    }
}

/// A temp name for `base` in the same directory: hidden, recognisable, unique.
pub fn tmp_name(base: &[u8], unique: u64) -> Vec<u8> {
    let keep = base.len().min(200);
    let mut n = TMP_PREFIX.to_vec();
    n.extend_from_slice(&base[..keep]);
    n.extend_from_slice(format!(".{unique:08x}").as_bytes());
    n
}

/// True for names rmirror's own temp files use.
pub fn is_tmp_name(name: &[u8]) -> bool {
    name.starts_with(TMP_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        assert!(check_rel(b"a/b").is_ok());
        assert!(check_rel(b".").is_ok());
        for bad in [&b"/a"[..], b"a/../b", b"..", b"a//b", b"a/", b"", b"a\0b", b"./a", b"a/."] {
            assert!(check_rel(bad).is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn refuses_symlinked_parent() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("evil")).unwrap();
        let d = Dest::open(t.path(), false).unwrap();
        assert!(d.dir(b"evil").is_err());
        let mut c = DirCache::new(d.clone());
        assert!(c.parent_of(b"evil/x").is_err());
        // A symlink as the final component is not followed for creation.
        let root = d.root();
        assert!(root.create_excl(b"evil").is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn remove_all_does_not_follow_links() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("d/link")).unwrap();
        let d = Dest::open(t.path(), false).unwrap();
        assert_eq!(d.root().remove_all(b"d").unwrap(), 2);
        assert!(outside.path().join("keep").exists());
    }

    /// A tree `a/b/c/d` with a marker file naming each directory.
    fn marked_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for d in ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/e", "a/x", "z"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
            std::fs::write(t.path().join(d).join("marker"), d).unwrap();
        }
        t
    }

    fn marker(h: &DirHandle) -> Vec<u8> {
        let mut f = h.open_read(b"marker").unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut v).unwrap();
        v
    }

    #[test]
    fn dir_cache_reuses_ancestors() {
        let t = marked_tree();
        let mut c = DirCache::new(Dest::open(t.path(), false).unwrap());
        let look = |c: &mut DirCache, d: &str, new_opens: usize| {
            let before = c.opens;
            let h = c.dir(d.as_bytes()).unwrap();
            assert_eq!(marker(&h), d.as_bytes(), "{d}");
            assert_eq!(c.opens - before, new_opens, "opens for {d}");
        };
        look(&mut c, "a/b/c/d", 4);
        look(&mut c, "a/b/c/d", 0); // exact hit
        look(&mut c, "a/b/c", 0); // ancestor hit
        look(&mut c, "a/b/c/d", 1);
        look(&mut c, "a/b/e", 1); // sibling: one open below a/b
        look(&mut c, "a/x", 1);
        look(&mut c, "a", 0);
        look(&mut c, "z", 1);
        look(&mut c, "a/b", 2);
        assert_eq!(c.dir(b"").unwrap().stat(b"a").unwrap().unwrap().kind, Kind::Dir);
        assert_eq!(c.dir(b".").unwrap().stat(b"z").unwrap().unwrap().kind, Kind::Dir);
        look(&mut c, "a/b", 0); // the root lookup does not disturb the chain
        // parent_of goes through the same cache.
        let (h, base) = c.parent_of(b"a/b/e/marker").unwrap();
        assert_eq!((marker(&h), base), (b"a/b/e".to_vec(), &b"marker"[..]));
        // A name that only shares a byte prefix is not an ancestor.
        std::fs::create_dir(t.path().join("a/bb")).unwrap();
        std::fs::write(t.path().join("a/bb/marker"), "a/bb").unwrap();
        look(&mut c, "a/bb", 1);
        // Unsafe paths are refused before any cache lookup.
        for bad in [&b"/a"[..], b"a/../z", b"a//b", b"a/"] {
            assert!(c.dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dir_cache_invalidate_drops_everything() {
        let t = marked_tree();
        let mut c = DirCache::new(Dest::open(t.path(), false).unwrap());
        c.dir(b"a/b/c").unwrap();
        // Replace a/b (and so everything cached below a) with a new tree.
        std::fs::rename(t.path().join("a/b"), t.path().join("old_b")).unwrap();
        std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
        std::fs::write(t.path().join("a/b/c/marker"), "new").unwrap();
        c.invalidate();
        assert!(c.chain.is_empty() && c.last.is_none());
        let before = c.opens;
        assert_eq!(marker(&c.dir(b"a/b/c").unwrap()), b"new");
        assert_eq!(c.opens - before, 3, "re-walked from the root");
    }

    /// Every depth: a symlink (to a directory outside) in place of a
    /// component is refused, with a cold cache and with its ancestors cached,
    /// and nothing is created outside.
    #[test]
    fn dir_cache_refuses_symlink_at_every_depth() {
        let comps = ["a", "b", "c", "d"];
        for depth in 1..=comps.len() {
            for warm in [false, true] {
                let t = marked_tree();
                let outside = tempfile::tempdir().unwrap();
                std::fs::create_dir_all(outside.path().join("b/c/d")).unwrap();
                let bad = comps[..depth].join("/");
                let full = comps.join("/");
                let mut c = DirCache::new(Dest::open(t.path(), false).unwrap());
                if warm && depth > 1 {
                    // Cache the parent of the component about to be swapped.
                    c.dir(comps[..depth - 1].join("/").as_bytes()).unwrap();
                }
                std::fs::rename(t.path().join(&bad), t.path().join(format!("{bad}.moved"))).unwrap();
                std::os::unix::fs::symlink(outside.path(), t.path().join(&bad)).unwrap();
                for d in [&bad, &full] {
                    let e = c.dir(d.as_bytes()).err().unwrap_or_else(|| panic!("{d} opened (warm {warm})"));
                    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{d}: {e}");
                }
                assert!(c.parent_of(format!("{full}/new").as_bytes()).is_err());
                // A non-directory in the way is refused the same way.
                std::fs::remove_file(t.path().join(&bad)).unwrap();
                std::fs::write(t.path().join(&bad), b"file").unwrap();
                assert_eq!(c.dir(full.as_bytes()).err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
                let mut found = Vec::new();
                let mut stack = vec![outside.path().to_path_buf()];
                while let Some(p) = stack.pop() {
                    for e in std::fs::read_dir(&p).unwrap() {
                        let e = e.unwrap();
                        if e.file_type().unwrap().is_dir() {
                            stack.push(e.path());
                        } else {
                            found.push(e.path());
                        }
                    }
                }
                assert!(found.is_empty(), "wrote outside: {found:?}");
            }
        }
    }

    /// A directory swapped for a symlink *after* it was cached: the cached
    /// handle still names the real (moved) directory, so writes through it
    /// land there, never at the symlink's target; after `invalidate` the
    /// swap is seen and refused.
    #[test]
    fn dir_cache_swap_after_caching_stays_inside() {
        let t = marked_tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("b/c")).unwrap();
        let mut c = DirCache::new(Dest::open(t.path(), false).unwrap());
        c.dir(b"a/b/c").unwrap();
        std::fs::rename(t.path().join("a"), t.path().join("a.moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("a")).unwrap();
        // Exact hit, an ancestor hit, and a new directory below a cached one.
        c.dir(b"a/b/c").unwrap().create_excl(b"f1").unwrap();
        c.dir(b"a/b").unwrap().create_excl(b"f2").unwrap();
        c.dir(b"a/b/e").unwrap().create_excl(b"f3").unwrap();
        for f in ["a.moved/b/c/f1", "a.moved/b/f2", "a.moved/b/e/f3"] {
            assert!(t.path().join(f).is_file(), "{f}");
        }
        assert!(std::fs::read_dir(outside.path().join("b")).unwrap().all(|e| e.unwrap().file_name() == "c"));
        assert!(std::fs::read_dir(outside.path().join("b/c")).unwrap().next().is_none());
        c.invalidate();
        assert_eq!(c.dir(b"a/b/c").err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
    }

    /// Paths deeper than the chain bound still resolve, and the cache holds
    /// at most CHAIN_MAX + 1 handles.
    #[test]
    fn dir_cache_deep_paths() {
        let t = tempfile::tempdir().unwrap();
        let comps: Vec<String> = (0..CHAIN_MAX + 8).map(|i| format!("d{i}")).collect();
        let deep = comps.join("/");
        std::fs::create_dir_all(t.path().join(&deep)).unwrap();
        std::fs::create_dir(t.path().join(&deep).join("x")).unwrap();
        std::fs::create_dir(t.path().join(&deep).join("y")).unwrap();
        let mut c = DirCache::new(Dest::open(t.path(), false).unwrap());
        c.dir(format!("{deep}/x").as_bytes()).unwrap();
        assert_eq!(c.chain.len(), CHAIN_MAX);
        let before = c.opens;
        c.dir(format!("{deep}/y").as_bytes()).unwrap().stat(b".").unwrap().unwrap();
        // Re-walked from the deepest kept handle: 8 levels + "y".
        assert_eq!(c.opens - before, 9);
        let shallow = comps[..3].join("/");
        let before = c.opens;
        c.dir(shallow.as_bytes()).unwrap();
        assert_eq!(c.opens - before, 0);
        assert_eq!(c.chain.len(), 3);
    }
}
