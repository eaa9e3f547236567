//! A case-insensitive, case-preserving filesystem for tests (safety-plan
//! H35), served from memory through FUSE by a thread of the test process.
//!
//! Linux kernels without casefold support (no `ext4 -O casefold`, no tmpfs
//! `casefold=`, no vfat) still have FUSE, so the test builds its own
//! filesystem that behaves like a Windows/macOS volume or an ext4 casefold
//! directory: a name is stored with the case it was created with, and every
//! lookup matches names case-insensitively (Unicode lower-casing for UTF-8
//! names, ASCII for other bytes), so `Foo` and `foo` are one entry.
//!
//! It supports what rmirror's confined engine and the rsync oracle use:
//! lookup with `O_NOFOLLOW` (the kernel refuses symlinks itself), create /
//! mknod / mkdir / symlink / link, rename (with `RENAME_NOREPLACE`),
//! unlink / rmdir, open / read / write / fsync, setattr (mode, owner, size,
//! atime, mtime with nanoseconds), readlink and readdir. Every entry and
//! attribute is returned with a zero cache lifetime, so the kernel asks
//! again on each access and never serves a stale name.
//!
//! ```ignore
//! let m = casefs::mount(&dir)?;   // Err(reason) when FUSE is not usable
//! // ... dir is now case-insensitive ...
//! drop(m);                        // unmounts
//! ```
//!
//! As root the mount is made directly (mount(2)); otherwise fuser falls back
//! to `fusermount3` (Debian's `fuse3`, which `scripts/test` installs).
//! Dropping the mount unmounts it; a test process killed while it is
//! mounted leaves a dead mount point under $TMPDIR (`umount -l` it).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow, WriteFlags,
};

const TTL: Duration = Duration::ZERO;
/// Longest name component the filesystem accepts (as ext4).
const NAME_MAX: usize = 255;

/// The case-insensitive key of a name.
pub fn fold(name: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(name) {
        Ok(s) => s.chars().flat_map(char::to_lowercase).collect::<String>().into_bytes(),
        Err(_) => name.to_ascii_lowercase(),
    }
}

struct Node {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    nlink: u32,
    rdev: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// File contents, or a symlink's target.
    data: Vec<u8>,
    /// Directory entries with the case they were created with.
    children: Vec<(Vec<u8>, u64)>,
    parent: u64,
}

impl Node {
    fn new(kind: FileType, perm: u16, req: &Request, parent: u64) -> Node {
        let now = SystemTime::now();
        Node {
            kind,
            perm: perm & 0o7777,
            uid: req.uid(),
            gid: req.gid(),
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
            data: Vec::new(),
            children: Vec::new(),
            parent,
        }
    }
}

struct State {
    nodes: HashMap<u64, Node>,
    next: u64,
}

impl State {
    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }
    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }
    fn dir(&self, ino: u64) -> Result<&Node, Errno> {
        let n = self.node(ino)?;
        if n.kind == FileType::Directory {
            Ok(n)
        } else {
            Err(Errno::ENOTDIR)
        }
    }
    /// Index and inode of the entry matching `name` case-insensitively.
    fn find(&self, dir: u64, name: &[u8]) -> Result<Option<(usize, u64)>, Errno> {
        let key = fold(name);
        Ok(self.dir(dir)?.children.iter().enumerate().find(|(_, (n, _))| fold(n) == key).map(|(i, (_, ino))| (i, *ino)))
    }
    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let n = self.node(ino)?;
        let size = match n.kind {
            FileType::Directory => 4096,
            _ => n.data.len() as u64,
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
            crtime: n.ctime,
            kind: n.kind,
            perm: n.perm,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: n.rdev,
            flags: 0,
            blksize: 4096,
        })
    }
    /// Add a new node named `name` in `parent` (EEXIST when any case of it exists).
    fn add(&mut self, parent: u64, name: &[u8], node: Node) -> Result<u64, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.find(parent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let is_dir = node.kind == FileType::Directory;
        self.nodes.insert(ino, node);
        let p = self.node_mut(parent)?;
        p.children.push((name.to_vec(), ino));
        if is_dir {
            p.nlink += 1;
        }
        p.mtime = SystemTime::now();
        p.ctime = p.mtime;
        Ok(ino)
    }
    /// Drop one link to `ino`; the node goes when no name is left.
    fn unref(&mut self, ino: u64) {
        let gone = match self.nodes.get_mut(&ino) {
            Some(n) if n.kind == FileType::Directory => true,
            Some(n) => {
                n.nlink = n.nlink.saturating_sub(1);
                n.ctime = SystemTime::now();
                n.nlink == 0
            }
            None => false,
        };
        if gone {
            // Open handles keep no reference here: reads through an unlinked
            // file's descriptor get ENOENT, which nothing in the tests does.
            self.nodes.remove(&ino);
        }
    }
    fn remove_entry(&mut self, parent: u64, idx: usize) -> Result<u64, Errno> {
        let p = self.node_mut(parent)?;
        let (_, ino) = p.children.remove(idx);
        p.mtime = SystemTime::now();
        p.ctime = p.mtime;
        Ok(ino)
    }
    /// Is `a` the directory `b` or one of its ancestors?
    fn is_ancestor(&self, a: u64, mut b: u64) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.nodes.get(&b) {
                Some(n) if n.parent != b => b = n.parent,
                _ => return false,
            }
        }
    }
}

/// The filesystem; see the module docs.
pub struct CaseFs {
    st: Mutex<State>,
    fix_pre_epoch: Arc<AtomicBool>,
}

impl CaseFs {
    fn new(fix_pre_epoch: Arc<AtomicBool>) -> CaseFs {
        let now = SystemTime::now();
        let root = Node {
            kind: FileType::Directory,
            perm: 0o755,
            uid: unsafe { libc::geteuid() },
            gid: unsafe { libc::getegid() },
            nlink: 2,
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
            data: Vec::new(),
            children: Vec::new(),
            parent: 1,
        };
        let mut nodes = HashMap::new();
        nodes.insert(1, root);
        CaseFs { st: Mutex::new(State { nodes, next: 2 }), fix_pre_epoch }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut g = self.st.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    fn make(&self, req: &Request, parent: INodeNo, name: &OsStr, kind: FileType, perm: u32, reply: ReplyEntry) {
        match self.with(|s| {
            let ino = s.add(parent.0, name.as_bytes(), Node::new(kind, perm as u16, req, parent.0))?;
            s.attr(ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// A time from setattr. fuser 0.18.0 turns the kernel's pre-1970
/// (negative seconds, nanoseconds) into epoch − (|s| + ns) instead of
/// epoch − |s| + ns; with `fix_pre_epoch` (turned on by [`probe`] when it
/// sees that happen) the nanoseconds are put back on the right side.
fn time_of(t: TimeOrNow, fix_pre_epoch: bool) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) if fix_pre_epoch => match UNIX_EPOCH.duration_since(t) {
            Ok(before) if before.subsec_nanos() != 0 => {
                UNIX_EPOCH - Duration::from_secs(before.as_secs()) + Duration::from_nanos(before.subsec_nanos().into())
            }
            _ => t,
        },
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for CaseFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.with(|s| match s.find(parent.0, name.as_bytes())? {
            Some((_, ino)) => s.attr(ino),
            None => Err(Errno::ENOENT),
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|s| s.attr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fix = self.fix_pre_epoch.load(Ordering::SeqCst);
        match self.with(|s| {
            let n = s.node_mut(ino.0)?;
            if let Some(m) = mode {
                n.perm = (m & 0o7777) as u16;
            }
            if let Some(u) = uid {
                n.uid = u;
            }
            if let Some(g) = gid {
                n.gid = g;
            }
            if let Some(sz) = size {
                if n.kind != FileType::RegularFile {
                    return Err(Errno::EINVAL);
                }
                n.data.resize(sz as usize, 0);
                n.mtime = SystemTime::now();
            }
            if let Some(t) = atime {
                n.atime = time_of(t, fix);
            }
            if let Some(t) = mtime {
                n.mtime = time_of(t, fix);
            }
            n.ctime = SystemTime::now();
            s.attr(ino.0)
        }) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.with(|s| {
            let n = s.node(ino.0)?;
            if n.kind != FileType::Symlink {
                return Err(Errno::EINVAL);
            }
            Ok(n.data.clone())
        }) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let kind = kind_of(mode);
        if kind == FileType::Directory || kind == FileType::Symlink {
            return reply.error(Errno::EINVAL);
        }
        match self.with(|s| {
            let mut n = Node::new(kind, (mode & !umask) as u16, req, parent.0);
            n.rdev = rdev;
            let ino = s.add(parent.0, name.as_bytes(), n)?;
            s.attr(ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.make(req, parent, name, FileType::Directory, mode & !umask, reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.with(|s| {
            let (idx, ino) = s.find(parent.0, name.as_bytes())?.ok_or(Errno::ENOENT)?;
            if s.node(ino)?.kind == FileType::Directory {
                return Err(Errno::EISDIR);
            }
            s.remove_entry(parent.0, idx)?;
            s.unref(ino);
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.with(|s| {
            let (idx, ino) = s.find(parent.0, name.as_bytes())?.ok_or(Errno::ENOENT)?;
            if !s.dir(ino)?.children.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            s.remove_entry(parent.0, idx)?;
            s.node_mut(parent.0)?.nlink -= 1;
            s.unref(ino);
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        match self.with(|s| {
            let mut n = Node::new(FileType::Symlink, 0o777, req, parent.0);
            n.data = target.as_os_str().as_bytes().to_vec();
            let ino = s.add(parent.0, link_name.as_bytes(), n)?;
            s.attr(ino)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.with(|s| {
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::EINVAL);
            }
            if newname.len() > NAME_MAX {
                return Err(Errno::ENAMETOOLONG);
            }
            let (sidx, sino) = s.find(parent.0, name.as_bytes())?.ok_or(Errno::ENOENT)?;
            let src_dir = s.node(sino)?.kind == FileType::Directory;
            if src_dir && s.is_ancestor(sino, newparent.0) {
                return Err(Errno::EINVAL);
            }
            match s.find(newparent.0, newname.as_bytes())? {
                Some((didx, dino)) if dino == sino => {
                    // The same entry under another case: only the stored name changes.
                    if parent.0 == newparent.0 && sidx == didx {
                        s.node_mut(parent.0)?.children[sidx].0 = newname.as_bytes().to_vec();
                    }
                    return Ok(());
                }
                Some((didx, dino)) => {
                    if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                        return Err(Errno::EEXIST);
                    }
                    let dst = s.node(dino)?;
                    match (src_dir, dst.kind == FileType::Directory) {
                        (true, false) => return Err(Errno::ENOTDIR),
                        (false, true) => return Err(Errno::EISDIR),
                        (true, true) if !dst.children.is_empty() => return Err(Errno::ENOTEMPTY),
                        _ => {}
                    }
                    s.remove_entry(newparent.0, didx)?;
                    if src_dir {
                        s.node_mut(newparent.0)?.nlink -= 1;
                    }
                    s.unref(dino);
                }
                None => {}
            }
            // The source index may have moved if the target was in the same directory.
            let (sidx, _) = s.find(parent.0, name.as_bytes())?.ok_or(Errno::ENOENT)?;
            s.remove_entry(parent.0, sidx)?;
            let np = s.node_mut(newparent.0)?;
            np.children.push((newname.as_bytes().to_vec(), sino));
            np.mtime = SystemTime::now();
            np.ctime = np.mtime;
            if src_dir {
                np.nlink += 1;
                s.node_mut(parent.0)?.nlink -= 1;
                s.node_mut(sino)?.parent = newparent.0;
            }
            s.node_mut(sino)?.ctime = SystemTime::now();
            Ok(())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        match self.with(|s| {
            if s.node(ino.0)?.kind == FileType::Directory {
                return Err(Errno::EPERM);
            }
            if newname.len() > NAME_MAX {
                return Err(Errno::ENAMETOOLONG);
            }
            if s.find(newparent.0, newname.as_bytes())?.is_some() {
                return Err(Errno::EEXIST);
            }
            let p = s.node_mut(newparent.0)?;
            p.children.push((newname.as_bytes().to_vec(), ino.0));
            p.mtime = SystemTime::now();
            let n = s.node_mut(ino.0)?;
            n.nlink += 1;
            n.ctime = SystemTime::now();
            s.attr(ino.0)
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|s| {
            let n = s.node(ino.0)?;
            let start = (offset as usize).min(n.data.len());
            let end = start.saturating_add(size as usize).min(n.data.len());
            Ok(n.data[start..end].to_vec())
        }) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|s| {
            let n = s.node_mut(ino.0)?;
            let start = offset as usize;
            let end = start.checked_add(data.len()).ok_or(Errno::EFBIG)?;
            if n.data.len() < end {
                n.data.resize(end, 0);
            }
            n.data[start..end].copy_from_slice(data);
            n.mtime = SystemTime::now();
            n.ctime = n.mtime;
            Ok(data.len() as u32)
        }) {
            Ok(w) => reply.written(w),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = self.with(|s| {
            let d = s.dir(ino.0)?;
            let mut v = vec![(ino.0, FileType::Directory, b".".to_vec()), (d.parent, FileType::Directory, b"..".to_vec())];
            for (name, c) in &d.children {
                v.push((*c, s.node(*c)?.kind, name.clone()));
            }
            Ok(v)
        });
        match entries {
            Ok(v) => {
                for (i, (c, kind, name)) in v.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(c), i as u64 + 1, kind, OsStr::from_bytes(&name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, 4096, NAME_MAX as u32, 4096);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let kind = kind_of(mode);
        if kind != FileType::RegularFile {
            return reply.error(Errno::EINVAL);
        }
        match self.with(|s| {
            let ino = s.add(parent.0, name.as_bytes(), Node::new(kind, (mode & !umask) as u16, req, parent.0))?;
            s.attr(ino)
        }) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted [`CaseFs`]; dropping it unmounts.
pub struct CaseFsMount {
    session: Option<fuser::BackgroundSession>,
    path: PathBuf,
}

impl CaseFsMount {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CaseFsMount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if s.umount_and_join().is_err() {
                // Busy or already gone: detach it so the temp dir can be removed.
                if let Ok(c) = std::ffi::CString::new(self.path.as_os_str().as_bytes()) {
                    unsafe {
                        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                    }
                }
            }
        }
    }
}

/// Mount a fresh, empty case-insensitive filesystem on the (empty) directory
/// `at`, and prove it folds case before returning it. Err says why FUSE is
/// not usable here (no /dev/fuse, not permitted, ...).
pub fn mount(at: &Path) -> Result<CaseFsMount, String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist".into());
    }
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("rmirror-casefs".into()),
        MountOption::Subtype("casefs".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    cfg.acl = SessionACL::All;
    let fix = Arc::new(AtomicBool::new(false));
    let session =
        fuser::spawn_mount(CaseFs::new(fix.clone()), at, &cfg).map_err(|e| format!("FUSE mount on {}: {e}", at.display()))?;
    let m = CaseFsMount { session: Some(session), path: at.to_path_buf() };
    probe(at, &fix).map_err(|e| format!("FUSE mount on {} does not behave: {e}", at.display()))?;
    Ok(m)
}

/// The mount answers and folds case: `Probe` is found as `pROBE`, and
/// creating `PROBE` exclusively fails; a pre-1970 mtime with nanoseconds
/// reads back as set (turning on `fix_pre_epoch` if that is needed).
fn probe(at: &Path, fix_pre_epoch: &AtomicBool) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let st = std::fs::metadata(at)?;
    if !st.is_dir() {
        return Err(io::Error::other("mount point is not a directory"));
    }
    let p = at.join(".casefs-Probe");
    std::fs::write(&p, b"probe")?;
    let want = (-1_000_000i64, 250_000_000i64);
    let set = |p: &Path| -> io::Result<(i64, i64)> {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
        let ts = [libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT }, libc::timespec { tv_sec: want.0, tv_nsec: want.1 }];
        if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let m = std::fs::metadata(p)?;
        Ok((m.mtime(), m.mtime_nsec()))
    };
    if set(&p)? != want {
        fix_pre_epoch.store(true, Ordering::SeqCst);
        let got = set(&p)?;
        if got != want {
            return Err(io::Error::other(format!("mtime {want:?} reads back as {got:?}")));
        }
    }
    let seen = std::fs::read(at.join(".CASEFS-pROBE"))?;
    let excl = std::fs::OpenOptions::new().write(true).create_new(true).open(at.join(".casefs-PROBE"));
    std::fs::remove_file(at.join(".casefs-probe"))?;
    if seen != b"probe" {
        return Err(io::Error::other("case-folded lookup read other data"));
    }
    if excl.is_ok() {
        return Err(io::Error::other("a second case of an existing name could be created"));
    }
    let left: Vec<_> = std::fs::read_dir(at)?.collect();
    if !left.is_empty() {
        return Err(io::Error::other("probe file was not removed"));
    }
    Ok(())
}

impl std::fmt::Debug for CaseFsMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaseFsMount({})", self.path.display())
    }
}

/// [`mount`] for a test: `None` (after printing `SKIPPED test: reason`) when
/// FUSE is not usable here, unless `RMIRROR_REQUIRE_FUSE=1` (set by
/// `scripts/test` once `fuse3` is installed and `/dev/fuse` exists), which
/// turns that into a failure naming the reason.
pub fn mount_for_test(at: &Path, test: &str) -> Option<CaseFsMount> {
    match mount(at) {
        Ok(m) => Some(m),
        Err(why) if std::env::var("RMIRROR_REQUIRE_FUSE").as_deref() == Ok("1") => {
            panic!("{test}: RMIRROR_REQUIRE_FUSE=1 but the case-insensitive FUSE filesystem cannot be mounted: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: no case-insensitive filesystem: {why} (set RMIRROR_REQUIRE_FUSE=1 to make this fail)");
            None
        }
    }
}
