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
            cur = cur.open_dir(comp).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "refusing to write through a symlink or non-directory at {:?}",
                            crate::text::escape_name(dir)
                        ),
                    )
                } else {
                    e
                }
            })?;
        }
        Ok(cur)
    }
}

/// A one-entry cache of the last directory opened: file lists are sorted by
/// directory, so consecutive entries almost always share their parent.
pub struct DirCache {
    dest: Dest,
    last: Option<(Vec<u8>, DirHandle)>,
}

impl DirCache {
    pub fn new(dest: Dest) -> Self {
        DirCache { dest, last: None }
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
        if let Some((p, h)) = &self.last {
            if p == dir {
                return Ok(h.clone());
            }
        }
        let h = self.dest.dir(dir)?;
        self.last = Some((dir.to_vec(), h.clone()));
        Ok(h)
    }

    /// Forget the cached handle (after the directory was replaced).
    pub fn invalidate(&mut self) {
        self.last = None;
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
}
