//! The destination tree, confined: every filesystem effect goes through a held
//! directory handle and `*at` system calls on single names, so neither a
//! hostile server nor a local process swapping a directory for a symlink can
//! make rmirror write outside DEST.
//!
//! Directories are reached from a held handle in one of two ways, both of
//! which refuse a symlink or a non-directory at any component:
//! * `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS` (Linux 5.6+): the kernel resolves the whole
//!   relative path in one call and fails rather than leave the starting
//!   directory or cross any symlink;
//! * otherwise a walk, one component at a time, each opened with
//!   `O_NOFOLLOW | O_DIRECTORY` below the previous one.
//!
//! The first `openat2` that fails with `ENOSYS` switches the process to the
//! walk for good ([`Probe`]); `RMIRROR_NO_OPENAT2=1` forces the walk from the
//! start (for comparing the two, and for kernels whose seccomp filter answers
//! something else than `ENOSYS`).
//!
//! Paths handed in are wire names (raw bytes, `/`-separated, relative). They
//! are validated again here ([`check_rel`]) even though the file-list decoder
//! already refused unsafe names: this type is the last line.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
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

/// A single name inside a held directory. [`DirHandle`] operations act on one
/// component only: a `/` in `name` would let the kernel follow a symlink in
/// an intermediate component, so it is refused (callers split paths with
/// [`DirCache::parent_of`] or [`split_parent`] and resolve the parent through
/// the confined lookup first).
fn one(name: &[u8]) -> io::Result<&OsStr> {
    if name.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("internal error: {:?} is not a single path component", crate::text::escape_name(name)),
        ));
    }
    Ok(os(name))
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// The error for a symlink (or non-directory) met where a real directory or
/// file had to be: named after the whole path `full` being resolved.
fn symlink_refused(full: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("refusing to write through a symlink or non-directory at {:?}", crate::text::escape_name(full)),
    )
}

const UNKNOWN: u8 = 0;
const AVAILABLE: u8 = 1;
const UNAVAILABLE: u8 = 2;

/// Whether `fchmodat2` exists (decided by its first `ENOSYS`).
static FCHMODAT2: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether `openat2` can be used: unknown until the first call, then kept,
/// so a kernel without it costs one failed system call per process.
pub struct Probe {
    state: AtomicU8,
    /// Test hook: answer `ENOSYS` as an old kernel would.
    #[cfg(test)]
    fake_enosys: bool,
    /// Test hook: `openat2` calls attempted.
    #[cfg(test)]
    calls: std::sync::atomic::AtomicUsize,
}

static OPENAT2: Probe = Probe {
    state: AtomicU8::new(UNKNOWN),
    #[cfg(test)]
    fake_enosys: false,
    #[cfg(test)]
    calls: std::sync::atomic::AtomicUsize::new(0),
};
static OPENAT2_ENV: std::sync::Once = std::sync::Once::new();

impl Probe {
    /// The process-wide probe (`RMIRROR_NO_OPENAT2=1` starts it as unavailable).
    fn global() -> &'static Probe {
        OPENAT2_ENV.call_once(|| {
            if std::env::var_os("RMIRROR_NO_OPENAT2").is_some_and(|v| !v.is_empty() && v != "0") {
                OPENAT2.state.store(UNAVAILABLE, Ordering::Relaxed);
            }
        });
        &OPENAT2
    }

    /// True once `openat2` is known not to work (the walk is used).
    pub fn walking(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UNAVAILABLE
    }

    #[cfg(test)]
    fn leaked(state: u8, fake_enosys: bool) -> &'static Probe {
        Box::leak(Box::new(Probe { state: AtomicU8::new(state), fake_enosys, calls: Default::default() }))
    }

    #[cfg(test)]
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Open the directory `rel` (checked by [`check_rel`], not empty) below
/// `base` in one `openat2` call that the kernel confines beneath `base` and
/// that fails on any symlink (or magic link) component. `Ok(None)`: openat2
/// is unavailable here (now or earlier), or the kernel saw a concurrent
/// rename (`EAGAIN`); the caller walks instead, which is just as safe.
fn open_beneath(probe: &Probe, base: &DirHandle, rel: &[u8], full: &[u8]) -> io::Result<Option<DirHandle>> {
    if probe.state.load(Ordering::Relaxed) == UNAVAILABLE {
        return Ok(None);
    }
    #[cfg(test)]
    probe.calls.fetch_add(1, Ordering::Relaxed);
    let call = || {
        rfs::openat2(
            base.fd(),
            os(rel),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    };
    #[cfg(test)]
    let r = if probe.fake_enosys { Err(Errno::NOSYS) } else { call() };
    #[cfg(not(test))]
    let r = call();
    match r {
        Ok(fd) => {
            if probe.state.load(Ordering::Relaxed) == UNKNOWN {
                probe.state.store(AVAILABLE, Ordering::Relaxed);
            }
            Ok(Some(DirHandle { fd: Arc::new(fd) }))
        }
        Err(Errno::NOSYS) => {
            probe.state.store(UNAVAILABLE, Ordering::Relaxed);
            tracing::debug!("openat2 is not available (ENOSYS): resolving DEST paths one component at a time");
            Ok(None)
        }
        Err(Errno::AGAIN) => Ok(None),
        // ELOOP: a symlink component; ENOTDIR: a non-directory; EXDEV: an escape.
        Err(Errno::LOOP | Errno::NOTDIR | Errno::XDEV) => Err(symlink_refused(full)),
        Err(e) => Err(errno_io(e)),
    }
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

/// A directory's names in one byte buffer (see [`DirHandle::names`]).
#[derive(Debug, Default, Clone)]
pub struct DirNames {
    bytes: Vec<u8>,
    /// (start, end) of each name in `bytes`.
    spans: Vec<(u32, u32)>,
}

impl DirNames {
    fn push(&mut self, name: &[u8]) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(name);
        self.spans.push((start, self.bytes.len() as u32));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn at(&self, (a, b): (u32, u32)) -> &[u8] {
        &self.bytes[a as usize..b as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.spans.iter().map(|&s| self.at(s))
    }

    /// Byte order, as `Vec<Vec<u8>>::sort` would leave them.
    pub fn sort(&mut self) {
        let mut spans = std::mem::take(&mut self.spans);
        spans.sort_unstable_by(|&x, &y| self.at(x).cmp(self.at(y)));
        self.spans = spans;
    }

    /// Whether `name` is here; the names must be sorted.
    pub fn contains_sorted(&self, name: &[u8]) -> bool {
        self.spans.binary_search_by(|&s| self.at(s).cmp(name)).is_ok()
    }
}

impl DirHandle {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn stat(&self, name: &[u8]) -> io::Result<Option<Meta>> {
        match rfs::statat(self.fd(), one(name)?, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(meta_from(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(errno_io(e)),
        }
    }

    /// Open a regular file for reading, refusing symlinks and non-files.
    pub fn open_read(&self, name: &[u8]) -> io::Result<std::fs::File> {
        let fd = rfs::openat(
            self.fd(),
            one(name)?,
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
            one(name)?,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno_io)?;
        Ok(std::fs::File::from(fd))
    }

    /// An unnamed temp file in this directory (`O_TMPFILE`): invisible until
    /// [`DirHandle::link_anon`] gives it its name, and gone by itself if we
    /// are killed first. `None` where the filesystem cannot make one (the
    /// caller then uses a named temp).
    pub fn create_anon(&self) -> Option<std::fs::File> {
        let fd = rfs::openat(self.fd(), c".", OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC, Mode::from_raw_mode(0o600)).ok()?;
        Some(std::fs::File::from(fd))
    }

    /// Give the unnamed file `f` (from [`DirHandle::create_anon`] on this
    /// directory) the name `name`; fails with `AlreadyExists` if it is taken.
    /// `AT_EMPTY_PATH` links by descriptor (Linux ≥ 6.10 allows it for a file
    /// we opened ourselves; before, only with CAP_DAC_READ_SEARCH); else the
    /// `/proc/self/fd` path, the way open(2) documents.
    pub fn link_anon(&self, f: &std::fs::File, name: &[u8]) -> io::Result<()> {
        let name = one(name)?;
        match rfs::linkat(f, c"", self.fd(), name, AtFlags::EMPTY_PATH) {
            Ok(()) => Ok(()),
            Err(Errno::NOENT | Errno::PERM | Errno::ACCESS | Errno::INVAL) => {
                let proc = format!("/proc/self/fd/{}", f.as_raw_fd());
                rfs::linkat(rfs::CWD, proc.as_str(), self.fd(), name, AtFlags::SYMLINK_FOLLOW).map_err(errno_io)
            }
            Err(e) => Err(errno_io(e)),
        }
    }

    pub fn mkdir(&self, name: &[u8], mode: u32) -> io::Result<()> {
        rfs::mkdirat(self.fd(), one(name)?, Mode::from_raw_mode(mode as _)).map_err(errno_io)
    }

    pub fn symlink(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        rfs::symlinkat(os(target), self.fd(), one(name)?).map_err(errno_io)
    }

    pub fn readlink(&self, name: &[u8]) -> io::Result<Vec<u8>> {
        let t = rfs::readlinkat(self.fd(), one(name)?, Vec::new()).map_err(errno_io)?;
        Ok(t.into_bytes())
    }

    pub fn rename(&self, from: &[u8], to_dir: &DirHandle, to: &[u8]) -> io::Result<()> {
        rfs::renameat(self.fd(), one(from)?, to_dir.fd(), one(to)?).map_err(errno_io)
    }

    /// Hard-link `from` (in this dir) as `to` in `to_dir`; never follows a symlink.
    pub fn link(&self, from: &[u8], to_dir: &DirHandle, to: &[u8]) -> io::Result<()> {
        rfs::linkat(self.fd(), one(from)?, to_dir.fd(), one(to)?, AtFlags::empty()).map_err(errno_io)
    }

    pub fn unlink(&self, name: &[u8]) -> io::Result<()> {
        rfs::unlinkat(self.fd(), one(name)?, AtFlags::empty()).map_err(errno_io)
    }

    pub fn rmdir(&self, name: &[u8]) -> io::Result<()> {
        rfs::unlinkat(self.fd(), one(name)?, AtFlags::REMOVEDIR).map_err(errno_io)
    }

    /// Open a sub-directory without following symlinks.
    pub fn open_dir(&self, name: &[u8]) -> io::Result<DirHandle> {
        let fd = rfs::openat(
            self.fd(),
            one(name)?,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        Ok(DirHandle { fd: Arc::new(fd) })
    }

    /// Names in this directory (without `.` and `..`).
    pub fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        Ok(self.names()?.iter().map(|n| n.to_vec()).collect())
    }

    /// Names in this directory (without `.` and `..`), packed into one
    /// buffer: the deletion scan lists every directory of the tree, and one
    /// allocation per local name was most of its heap traffic.
    pub fn names(&self) -> io::Result<DirNames> {
        let fd = rfs::openat(self.fd(), os(b"."), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(errno_io)?;
        // getdents64 into a buffer on the stack: `rustix::fs::Dir` would
        // allocate a CString per entry. 32 KiB holds many entries and always
        // at least one (a name is at most 255 bytes), so EINVAL ("buffer too
        // small") cannot happen.
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 32 * 1024];
        let mut dir = rfs::RawDir::new(&fd, &mut buf);
        let mut out = DirNames::default();
        while let Some(ent) = dir.next() {
            let ent = ent.map_err(errno_io)?;
            let n = ent.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            out.push(n);
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

    /// Set permission bits on a name, never through a symlink: plain
    /// `fchmodat` follows a final symlink, so a local process that swaps the
    /// checked directory or file for a symlink between our `stat` and this
    /// call would redirect the chmod outside DEST. `fchmodat2` with
    /// `AT_SYMLINK_NOFOLLOW` (Linux 6.6+) refuses a symlink; older kernels get
    /// an `O_PATH | O_NOFOLLOW` handle, checked with `fstat`, and the mode is
    /// set on that very inode through its `/proc/self/fd` entry.
    pub fn chmod(&self, name: &[u8], mode: u32) -> io::Result<()> {
        let name = one(name)?;
        let mode = mode & 0o7777;
        let c = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a file name"))?;
        if FCHMODAT2.load(Ordering::Relaxed) != UNAVAILABLE {
            // SAFETY: plain syscall with a valid fd, a NUL-terminated path and integer arguments.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_fchmodat2,
                    self.fd().as_raw_fd(),
                    c.as_ptr(),
                    mode as libc::c_uint,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The kernel's answer for a symlink: refuse, as a swap is an attack.
                Some(libc::EOPNOTSUPP) => return Err(symlink_refused(name.as_bytes())),
                Some(libc::ENOSYS) => FCHMODAT2.store(UNAVAILABLE, Ordering::Relaxed),
                _ => return Err(e),
            }
        }
        self.chmod_opath(name, mode)
    }

    /// `chmod` for kernels without `fchmodat2`: the inode is pinned with an
    /// `O_PATH | O_NOFOLLOW` handle, checked not to be a symlink, and changed
    /// through its `/proc/self/fd` entry (which names that inode, not a path).
    fn chmod_opath(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let fd = rfs::openat(self.fd(), name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(errno_io)?;
        let st = rfs::fstat(&fd).map_err(errno_io)?;
        if FileType::from_raw_mode(st.st_mode as _) == FileType::Symlink {
            return Err(symlink_refused(name.as_bytes()));
        }
        let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rfs::chmod(proc.as_str(), Mode::from_raw_mode(mode as _)).map_err(errno_io)
    }

    /// Set the mtime of `name` without following a symlink (atime left as now).
    pub fn set_mtime(&self, name: &[u8], sec: i64, nsec: u32) -> io::Result<()> {
        let ts = Timestamps {
            last_access: Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT as _ },
            last_modification: Timespec { tv_sec: sec as _, tv_nsec: nsec as _ },
        };
        rfs::utimensat(self.fd(), one(name)?, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(errno_io)
    }

    pub fn chown(&self, name: &[u8], uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        rfs::chownat(
            self.fd(),
            one(name)?,
            uid.map(|u| rustix::fs::Uid::from_raw(u)),
            gid.map(|g| rustix::fs::Gid::from_raw(g)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno_io)
    }

    pub fn mknod(&self, name: &[u8], mode: u32, rdev: u64) -> io::Result<()> {
        let ft = FileType::from_raw_mode(mode as _);
        rfs::mknodat(self.fd(), one(name)?, ft, Mode::from_raw_mode((mode & 0o7777) as _), rdev as _).map_err(errno_io)
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
    probe: &'static Probe,
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
        Ok(Dest { root: DirHandle { fd: Arc::new(fd) }, path: path.to_path_buf(), probe: Probe::global() })
    }

    /// Test hook: resolve through `probe` instead of the process-wide one.
    #[cfg(test)]
    fn with_probe(mut self, probe: &'static Probe) -> Dest {
        self.probe = probe;
        self
    }

    /// How paths below DEST are resolved (`openat2` unless known unavailable).
    pub fn resolver(&self) -> &'static str {
        if self.probe.walking() {
            "O_NOFOLLOW walk"
        } else {
            "openat2 RESOLVE_BENEATH"
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn root(&self) -> &DirHandle {
        &self.root
    }

    /// Open the directory `dir` (a relative wire path, `""` or `"."` for the root)
    /// beneath the root, never following a symlink: one `openat2`, or one
    /// component at a time.
    pub fn dir(&self, dir: &[u8]) -> io::Result<DirHandle> {
        if dir.is_empty() || dir == b"." {
            return Ok(self.root.clone());
        }
        check_rel(dir)?;
        if let Some(h) = open_beneath(self.probe, &self.root, dir, dir)? {
            return Ok(h);
        }
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
            symlink_refused(full)
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
/// one. A lookup reuses the deepest cached ancestor and opens only the part
/// below it, confined as [`Dest::dir`] does (one `openat2` beneath the
/// ancestor, or one `O_NOFOLLOW` component at a time); the chain is then cut
/// back to the new path's ancestors.
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
/// derived from a path that resolved through a symlink. A path *newly*
/// opened below a cached ancestor is refused at a symlink like any other.
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
    /// (end of a prefix of `path`, handle of `path[..end]`) for ancestors of
    /// (and) `path`, shallowest first, at most [`CHAIN_MAX`]: every level with
    /// the walk, the levels actually looked up with `openat2`.
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
        // With openat2 the rest of the path is one call, and only its end is
        // kept in the chain (the chain may skip levels: every entry is still an
        // ancestor-or-self of `path`, in order).
        if start <= dir.len() {
            if let Some(h) = open_beneath(self.dest.probe, &cur, &dir[start..], dir)? {
                #[cfg(test)]
                {
                    self.opens += 1;
                }
                if self.chain.len() < CHAIN_MAX {
                    self.chain.push((dir.len(), h.clone()));
                }
                self.last = Some(h.clone());
                return Ok(h);
            }
        }
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

/// A name's key on a case-insensitive filesystem (Unicode lower case for
/// UTF-8 names, ASCII lower case for other bytes): two names with the same
/// key may be one directory entry there (see `Generator::scan_extraneous`).
pub fn case_key(name: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(name) {
        Ok(s) => s.chars().flat_map(char::to_lowercase).collect::<String>().into_bytes(),
        Err(_) => name.to_ascii_lowercase(),
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

/// Make something under a fresh temp name for `base` ([`tmp_name`]): `make`
/// is tried with up to 8 names, a taken one (`AlreadyExists`) moving on to
/// the next. Gives the name it succeeded with; when all 8 were taken, an
/// `AlreadyExists` error saying so.
pub fn under_tmp_name<T>(
    base: &[u8],
    mut unique: impl FnMut() -> u64,
    mut make: impl FnMut(&[u8]) -> io::Result<T>,
) -> io::Result<(Vec<u8>, T)> {
    for _ in 0..8 {
        let tmp = tmp_name(base, unique());
        match make(&tmp) {
            Ok(v) => return Ok((tmp, v)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "cannot find a free temp name"))
}

/// True for names rmirror's own temp files use.
pub fn is_tmp_name(name: &[u8]) -> bool {
    name.starts_with(TMP_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Taken temp names are skipped, never reused or removed; after 8 taken
    /// names it gives up with `AlreadyExists`; other errors end it at once.
    #[test]
    fn under_tmp_name_skips_taken_names() {
        let t = tempfile::tempdir().unwrap();
        let root = Dest::open(t.path(), false).unwrap().root().clone();
        for u in [1u64, 2] {
            root.symlink(b"theirs", &tmp_name(b"f", u)).unwrap();
        }
        let mut next = 0u64;
        let mut uniq = || {
            next += 1;
            next
        };
        let (name, ()) = under_tmp_name(b"f", &mut uniq, |n| root.symlink(b"mine", n)).unwrap();
        assert_eq!(name, tmp_name(b"f", 3));
        for u in [1u64, 2] {
            assert_eq!(root.readlink(&tmp_name(b"f", u)).unwrap(), b"theirs");
        }
        assert_eq!(root.readlink(&name).unwrap(), b"mine");

        for (kind, want_tries) in [(io::ErrorKind::AlreadyExists, 8), (io::ErrorKind::PermissionDenied, 1)] {
            let mut tries = 0;
            let e = under_tmp_name(b"g", || 7, |_| -> io::Result<()> {
                tries += 1;
                Err(io::Error::from(kind))
            })
            .unwrap_err();
            assert_eq!((e.kind(), tries), (kind, want_tries));
        }
    }

    /// The packed listing holds what `list` would, sorts in byte order and
    /// answers membership by binary search.
    #[test]
    fn dir_names_pack_sort_and_search() {
        let t = tempfile::tempdir().unwrap();
        let names: [&[u8]; 5] = [b"b", b"a.tar.gz", b"\xff\xfe", b"B", b"a"];
        for n in names {
            std::fs::write(t.path().join(std::ffi::OsStr::from_bytes(n)), b"").unwrap();
        }
        let d = Dest::open(t.path(), false).unwrap();
        let mut got = d.root().names().unwrap();
        assert_eq!(got.len(), 5);
        got.sort();
        let v: Vec<&[u8]> = got.iter().collect();
        let mut want = names.to_vec();
        want.sort();
        assert_eq!(v, want);
        assert!(names.iter().all(|n| got.contains_sorted(n)));
        assert!(!got.contains_sorted(b"c") && !got.contains_sorted(b""));
        let mut plain = d.root().list().unwrap();
        plain.sort();
        assert_eq!(plain, want.iter().map(|n| n.to_vec()).collect::<Vec<_>>());
        // More names than one 32 KiB getdents buffer holds.
        let big = t.path().join("big");
        std::fs::create_dir(&big).unwrap();
        for i in 0..1500 {
            std::fs::write(big.join(format!("{i:04}-{}", "x".repeat(120))), b"").unwrap();
        }
        let mut many = d.root().open_dir(b"big").unwrap().names().unwrap();
        many.sort();
        assert_eq!(many.len(), 1500);
        assert!(many.iter().enumerate().all(|(i, n)| n.starts_with(format!("{i:04}-").as_bytes()) && n.len() == 125));
    }

    /// A probe that always walks, one that tries openat2 (this kernel has it),
    /// and one that pretends to be an old kernel (openat2 → ENOSYS).
    fn walk() -> &'static Probe {
        Probe::leaked(UNAVAILABLE, false)
    }
    fn at2() -> &'static Probe {
        Probe::leaked(UNKNOWN, false)
    }
    fn both() -> [(&'static str, &'static Probe); 2] {
        [("walk", walk()), ("openat2", at2())]
    }
    fn open(p: &Path, probe: &'static Probe) -> Dest {
        Dest::open(p, false).unwrap().with_probe(probe)
    }

    /// An unnamed temp is invisible until linked, takes its name only when
    /// the name is free, and leaves nothing behind when dropped unlinked.
    #[test]
    fn unnamed_temps_appear_only_when_linked() {
        use std::io::Write;
        let t = tempfile::tempdir().unwrap();
        let d = Dest::open(t.path(), false).unwrap();
        let root = d.root();
        let Some(mut f) = root.create_anon() else {
            eprintln!("skipped: {} has no O_TMPFILE", t.path().display());
            return;
        };
        f.write_all(b"new content").unwrap();
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "an unnamed temp is visible");
        root.link_anon(&f, b"a").unwrap();
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"new content");
        let mut g = root.create_anon().unwrap();
        g.write_all(b"other").unwrap();
        let e = root.link_anon(&g, b"a").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"new content");
        drop(g);
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn case_keys() {
        assert_eq!(case_key(b"FoO"), b"foo");
        assert_eq!(case_key("\u{212A}EY".as_bytes()), b"key");
        assert_eq!(case_key(b"A\xff"), b"a\xff");
        assert_ne!(case_key(b"foo"), case_key(b"fo0"));
    }

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
        for (how, probe) in both() {
            let t = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(outside.path(), t.path().join("evil")).unwrap();
            std::fs::create_dir(t.path().join("real")).unwrap();
            std::os::unix::fs::symlink(outside.path(), t.path().join("real/evil")).unwrap();
            let d = open(t.path(), probe);
            for p in [&b"evil"[..], b"real/evil", b"real/evil/x"] {
                let e = d.dir(p).err().unwrap_or_else(|| panic!("{how}: {p:?} opened"));
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{how}: {e}");
                assert!(e.to_string().contains("refusing to write through a symlink"), "{how}: {e}");
            }
            let mut c = DirCache::new(d.clone());
            assert!(c.parent_of(b"evil/x").is_err());
            assert!(c.parent_of(b"real/evil/x").is_err());
            // A symlink as the final component is not followed for creation.
            let root = d.root();
            assert!(root.create_excl(b"evil").is_err());
            // A multi-component name never reaches a *at call (it would follow `evil`).
            for name in [&b"evil/x"[..], b"real/x"] {
                let e = root.create_excl(name).err().unwrap_or_else(|| panic!("{how}: {name:?} created"));
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                assert!(root.mkdir(name, 0o755).is_err() && root.stat(name).is_err());
            }
            assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "{how}");
            assert!(!t.path().join("real/x").exists());
        }
    }

    /// The probe decides once: openat2 works here (AVAILABLE after the first
    /// call); the walk probe never calls it; a fake ENOSYS switches to the
    /// walk for good after one attempt and still resolves correctly.
    #[test]
    fn openat2_probe_and_enosys_fallback() {
        let t = marked_tree();
        let p = at2();
        let d = open(t.path(), p);
        assert_eq!(marker(&d.dir(b"a/b/c").unwrap()), b"a/b/c");
        assert_eq!((p.calls(), p.state.load(Ordering::Relaxed)), (1, AVAILABLE));
        assert_eq!(d.resolver(), "openat2 RESOLVE_BENEATH");

        let w = walk();
        let d = open(t.path(), w);
        assert_eq!(marker(&d.dir(b"a/b/c").unwrap()), b"a/b/c");
        let mut c = DirCache::new(d.clone());
        assert_eq!(marker(&c.dir(b"a/b/e").unwrap()), b"a/b/e");
        assert_eq!(w.calls(), 0);
        assert_eq!(d.resolver(), "O_NOFOLLOW walk");

        let old = Probe::leaked(UNKNOWN, true);
        let d = open(t.path(), old);
        assert_eq!(marker(&d.dir(b"a/b/c").unwrap()), b"a/b/c");
        assert_eq!((old.calls(), old.walking()), (1, true), "ENOSYS is remembered");
        let mut c = DirCache::new(d.clone());
        let before = c.opens;
        assert_eq!(marker(&c.dir(b"a/b/c/d").unwrap()), b"a/b/c/d");
        assert_eq!(c.opens - before, 4, "walked one component at a time");
        assert_eq!(old.calls(), 1, "no second openat2 attempt");
        std::os::unix::fs::symlink("/", t.path().join("a/b/link")).unwrap();
        assert_eq!(d.dir(b"a/b/link").err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
        assert_eq!(d.resolver(), "O_NOFOLLOW walk");
    }

    #[test]
    fn chmod_never_follows_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"v").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, t.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("dirlink")).unwrap();
        std::fs::write(t.path().join("f"), b"f").unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        let d = Dest::open(t.path(), false).unwrap();
        let root = d.root();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        let outside_mode = mode(outside.path());
        for (how, f) in [
            ("fchmodat2", &(|n: &[u8], m| root.chmod(n, m)) as &dyn Fn(&[u8], u32) -> io::Result<()>),
            ("O_PATH", &|n: &[u8], m| root.chmod_opath(os(n), m)),
        ] {
            for link in [&b"link"[..], b"dirlink"] {
                let e = f(link, 0o777).err().unwrap_or_else(|| panic!("{how}: chmod through {link:?}"));
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{how}: {e}");
            }
            assert_eq!((mode(&victim), mode(outside.path())), (0o644, outside_mode), "{how}");
            f(b"f", 0o600).unwrap();
            f(b"d", 0o750).unwrap();
            assert_eq!((mode(&t.path().join("f")), mode(&t.path().join("d"))), (0o600, 0o750), "{how}");
            f(b"f", 0o644).unwrap();
            f(b"d", 0o755).unwrap();
            assert!(f(b"d/x", 0o777).is_err());
        }
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

    /// Directory opens per lookup: the walk opens each level below the
    /// deepest cached ancestor; openat2 opens the rest in one call (and
    /// caches only the levels looked up, so an ancestor never looked up
    /// itself costs one call).
    #[test]
    fn dir_cache_reuses_ancestors() {
        for (how, probe) in both() {
            let t = marked_tree();
            let mut c = DirCache::new(open(t.path(), probe));
            let walk = how == "walk";
            let look = |c: &mut DirCache, d: &str, walk_opens: usize, at2_opens: usize| {
                let before = c.opens;
                let h = c.dir(d.as_bytes()).unwrap();
                assert_eq!(marker(&h), d.as_bytes(), "{how} {d}");
                let want = if walk { walk_opens } else { at2_opens };
                assert_eq!(c.opens - before, want, "{how}: opens for {d}");
            };
            look(&mut c, "a/b/c/d", 4, 1);
            look(&mut c, "a/b/c/d", 0, 0); // exact hit
            look(&mut c, "a/b/c", 0, 1); // ancestor hit (walk only)
            look(&mut c, "a/b/c/d", 1, 1);
            look(&mut c, "a/b/e", 1, 1); // sibling: one open below a/b (walk) / from the root
            look(&mut c, "a/x", 1, 1);
            look(&mut c, "a", 0, 1);
            look(&mut c, "z", 1, 1);
            look(&mut c, "a/b", 2, 1);
            assert_eq!(c.dir(b"").unwrap().stat(b"a").unwrap().unwrap().kind, Kind::Dir);
            assert_eq!(c.dir(b".").unwrap().stat(b"z").unwrap().unwrap().kind, Kind::Dir);
            look(&mut c, "a/b", 0, 0); // the root lookup does not disturb the chain
            // parent_of goes through the same cache.
            let (h, base) = c.parent_of(b"a/b/e/marker").unwrap();
            assert_eq!((marker(&h), base), (b"a/b/e".to_vec(), &b"marker"[..]));
            // A name that only shares a byte prefix is not an ancestor.
            std::fs::create_dir(t.path().join("a/bb")).unwrap();
            std::fs::write(t.path().join("a/bb/marker"), "a/bb").unwrap();
            look(&mut c, "a/bb", 1, 1);
            // Unsafe paths are refused before any cache lookup.
            for bad in [&b"/a"[..], b"a/../z", b"a//b", b"a/"] {
                assert!(c.dir(bad).is_err(), "{bad:?}");
            }
            assert_eq!(probe.calls() > 0, !walk, "{how}");
        }
    }

    #[test]
    fn dir_cache_invalidate_drops_everything() {
        for (how, probe) in both() {
            let t = marked_tree();
            let mut c = DirCache::new(open(t.path(), probe));
            c.dir(b"a/b/c").unwrap();
            // Replace a/b (and so everything cached below a) with a new tree.
            std::fs::rename(t.path().join("a/b"), t.path().join("old_b")).unwrap();
            std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
            std::fs::write(t.path().join("a/b/c/marker"), "new").unwrap();
            c.invalidate();
            assert!(c.chain.is_empty() && c.last.is_none());
            let before = c.opens;
            assert_eq!(marker(&c.dir(b"a/b/c").unwrap()), b"new");
            assert_eq!(c.opens - before, if how == "walk" { 3 } else { 1 }, "{how}: re-resolved from the root");
        }
    }

    /// Every depth: a symlink (to a directory outside) in place of a
    /// component is refused, with a cold cache and with its ancestors cached,
    /// and nothing is created outside.
    #[test]
    fn dir_cache_refuses_symlink_at_every_depth() {
        let comps = ["a", "b", "c", "d"];
        for (how, probe) in both() {
            for depth in 1..=comps.len() {
                for warm in [false, true] {
                    let t = marked_tree();
                    let outside = tempfile::tempdir().unwrap();
                    std::fs::create_dir_all(outside.path().join("b/c/d")).unwrap();
                    let bad = comps[..depth].join("/");
                    let full = comps.join("/");
                    let d = open(t.path(), probe);
                    let mut c = DirCache::new(d.clone());
                    if warm && depth > 1 {
                        // Cache the parent of the component about to be swapped.
                        c.dir(comps[..depth - 1].join("/").as_bytes()).unwrap();
                    }
                    std::fs::rename(t.path().join(&bad), t.path().join(format!("{bad}.moved"))).unwrap();
                    std::os::unix::fs::symlink(outside.path(), t.path().join(&bad)).unwrap();
                    for p in [&bad, &full] {
                        let e = c.dir(p.as_bytes()).err().unwrap_or_else(|| panic!("{how}: {p} opened (warm {warm})"));
                        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{how} {p}: {e}");
                        assert_eq!(d.dir(p.as_bytes()).err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
                    }
                    assert!(c.parent_of(format!("{full}/new").as_bytes()).is_err());
                    // A non-directory in the way is refused the same way.
                    std::fs::remove_file(t.path().join(&bad)).unwrap();
                    std::fs::write(t.path().join(&bad), b"file").unwrap();
                    assert_eq!(c.dir(full.as_bytes()).err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
                    assert_eq!(d.dir(full.as_bytes()).err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
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
                    assert!(found.is_empty(), "{how}: wrote outside: {found:?}");
                }
            }
        }
    }

    /// A directory swapped for a symlink *after* it was cached: the cached
    /// handle still names the real (moved) directory, so writes through it
    /// land there, never at the symlink's target; a level not in the cache
    /// (with openat2, `a/b` when only `a/b/c` was looked up) is resolved anew
    /// and refused; after `invalidate` the swap is seen and refused.
    #[test]
    fn dir_cache_swap_after_caching_stays_inside() {
        for (how, probe) in both() {
            let t = marked_tree();
            let outside = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(outside.path().join("b/c")).unwrap();
            let mut c = DirCache::new(open(t.path(), probe));
            c.dir(b"a/b/c").unwrap();
            std::fs::rename(t.path().join("a"), t.path().join("a.moved")).unwrap();
            std::os::unix::fs::symlink(outside.path(), t.path().join("a")).unwrap();
            // Exact hit, an ancestor hit, and a new directory below a cached one.
            c.dir(b"a/b/c").unwrap().create_excl(b"f1").unwrap();
            assert!(t.path().join("a.moved/b/c/f1").is_file(), "{how}");
            for (d, f) in [("a/b", "a.moved/b/f2"), ("a/b/e", "a.moved/b/e/f3")] {
                match c.dir(d.as_bytes()) {
                    Ok(h) => {
                        h.create_excl(b"new").unwrap();
                        assert!(t.path().join(f).with_file_name("new").is_file(), "{how} {d}");
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{how} {d}: {e}");
                        assert_eq!(how, "openat2", "the walk reuses cached a/b: {e}");
                    }
                }
            }
            assert!(std::fs::read_dir(outside.path().join("b")).unwrap().all(|e| e.unwrap().file_name() == "c"));
            assert!(std::fs::read_dir(outside.path().join("b/c")).unwrap().next().is_none());
            c.invalidate();
            assert_eq!(c.dir(b"a/b/c").err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput), "{how}");
        }
    }

    /// Paths deeper than the chain bound still resolve, and the cache holds
    /// at most CHAIN_MAX + 1 handles.
    #[test]
    fn dir_cache_deep_paths() {
        for (how, probe) in both() {
            let t = tempfile::tempdir().unwrap();
            let comps: Vec<String> = (0..CHAIN_MAX + 8).map(|i| format!("d{i}")).collect();
            let deep = comps.join("/");
            std::fs::create_dir_all(t.path().join(&deep)).unwrap();
            std::fs::create_dir(t.path().join(&deep).join("x")).unwrap();
            std::fs::create_dir(t.path().join(&deep).join("y")).unwrap();
            let mut c = DirCache::new(open(t.path(), probe));
            c.dir(format!("{deep}/x").as_bytes()).unwrap();
            let walk = how == "walk";
            assert_eq!(c.chain.len(), if walk { CHAIN_MAX } else { 1 });
            let before = c.opens;
            c.dir(format!("{deep}/y").as_bytes()).unwrap().stat(b".").unwrap().unwrap();
            // Walk: re-walked from the deepest kept handle, 8 levels + "y";
            // openat2: one call from the root.
            assert_eq!(c.opens - before, if walk { 9 } else { 1 });
            let shallow = comps[..3].join("/");
            let before = c.opens;
            c.dir(shallow.as_bytes()).unwrap();
            assert_eq!(c.opens - before, if walk { 0 } else { 1 });
            assert_eq!(c.chain.len(), if walk { 3 } else { 1 });
            assert!(c.chain.len() <= CHAIN_MAX);
        }
    }
}
