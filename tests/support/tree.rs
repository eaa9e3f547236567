//! Deterministic fixture trees.
//!
//! A [`TreeSpec`] is a list of entries (file / dir / symlink / hard link)
//! with optional mode and mtime; [`TreeSpec::write`] materialises it under a
//! root. Everything is deterministic: entries without an explicit mtime get
//! [`DEFAULT_MTIME`], directories (including the root) get their mode and
//! mtime last, deepest first, so writing children does not disturb them.
//! Parent directories that are not declared are created with mode 0755.
//!
//! mtimes are set with `utimensat(AT_SYMLINK_NOFOLLOW)` for every kind of
//! entry (files, dirs, symlinks), which also works on mode-0000 files and
//! on pre-1970 / post-2038 times.
//!
//! Random content comes from a xorshift64* stream seeded via splitmix64, so
//! the same (size, seed) always produces the same bytes.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// mtime given to entries without an explicit one: 2020-09-13T12:26:40Z.
pub const DEFAULT_MTIME: (i64, u32) = (1_600_000_000, 0);

/// Content of a file entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    /// `size` pseudo-random bytes from `seed` (generated while writing, so
    /// huge trees do not sit in memory).
    Random {
        size: u64,
        seed: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(Content),
    Dir,
    Symlink(PathBuf),
    /// A hard link to an earlier entry (path relative to the root).
    HardLink(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the tree root; may contain any bytes but NUL.
    pub path: PathBuf,
    pub node: Node,
    /// Permission bits (incl. sticky etc.); None: 0644 files, 0755 dirs.
    /// Ignored for symlinks and hard links (a hard link shares its inode).
    pub mode: Option<u32>,
    /// (seconds since epoch, may be negative; nanoseconds).
    pub mtime: Option<(i64, u32)>,
}

/// A declarative, deterministic directory tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeSpec {
    pub entries: Vec<Entry>,
    /// Mode and mtime of the root directory itself.
    pub root_mode: Option<u32>,
    pub root_mtime: Option<(i64, u32)>,
}

#[allow(dead_code)]
impl TreeSpec {
    pub fn new() -> TreeSpec {
        TreeSpec::default()
    }

    fn push(mut self, path: impl AsRef<Path>, node: Node) -> Self {
        let path = path.as_ref().to_path_buf();
        assert!(
            path.is_relative() && !path.as_os_str().is_empty(),
            "tree entries must be relative: {path:?}"
        );
        self.entries.push(Entry {
            path,
            node,
            mode: None,
            mtime: None,
        });
        self
    }

    pub fn file(self, path: impl AsRef<Path>, content: impl AsRef<[u8]>) -> Self {
        self.push(path, Node::File(Content::Bytes(content.as_ref().to_vec())))
    }
    /// A file of SIZE pseudo-random bytes from SEED.
    pub fn random_file(self, path: impl AsRef<Path>, size: u64, seed: u64) -> Self {
        self.push(path, Node::File(Content::Random { size, seed }))
    }
    pub fn dir(self, path: impl AsRef<Path>) -> Self {
        self.push(path, Node::Dir)
    }
    pub fn symlink(self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> Self {
        self.push(path, Node::Symlink(target.as_ref().to_path_buf()))
    }
    /// PATH becomes another name for the earlier entry EXISTING.
    pub fn hardlink(self, path: impl AsRef<Path>, existing: impl AsRef<Path>) -> Self {
        self.push(path, Node::HardLink(existing.as_ref().to_path_buf()))
    }
    /// Sets the mode of the most recently added entry.
    pub fn mode(mut self, mode: u32) -> Self {
        self.entries.last_mut().expect("mode() needs an entry").mode = Some(mode);
        self
    }
    /// Sets the mtime of the most recently added entry.
    pub fn mtime(mut self, secs: i64, nsec: u32) -> Self {
        assert!(nsec < 1_000_000_000);
        self.entries
            .last_mut()
            .expect("mtime() needs an entry")
            .mtime = Some((secs, nsec));
        self
    }

    /// All entry paths, in declaration order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.entries.iter().map(|e| e.path.clone()).collect()
    }

    /// Paths of regular-file entries (not hard links).
    pub fn files(&self) -> Vec<PathBuf> {
        self.entries
            .iter()
            .filter(|e| matches!(e.node, Node::File(_)))
            .map(|e| e.path.clone())
            .collect()
    }

    /// Total bytes of file content (hard links counted once).
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.node {
                Node::File(Content::Bytes(b)) => b.len() as u64,
                Node::File(Content::Random { size, .. }) => *size,
                _ => 0,
            })
            .sum()
    }

    /// Appends all entries of OTHER under the directory PREFIX.
    pub fn merge_under(mut self, prefix: impl AsRef<Path>, other: TreeSpec) -> Self {
        let prefix = prefix.as_ref();
        self = self.dir(prefix);
        if let Some(m) = other.root_mode {
            self = self.mode(m);
        }
        if let Some((s, n)) = other.root_mtime {
            self = self.mtime(s, n);
        }
        for mut e in other.entries {
            e.path = prefix.join(&e.path);
            if let Node::HardLink(t) = &e.node {
                e.node = Node::HardLink(prefix.join(t));
            }
            self.entries.push(e);
        }
        self
    }

    /// Creates the tree under ROOT (which is created if missing; existing
    /// unrelated content is left alone).
    pub fn write(&self, root: &Path) {
        fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        let mut dirs: Vec<(PathBuf, u32, (i64, u32))> = Vec::new();
        let mut implicit: Vec<PathBuf> = Vec::new();
        // 1. create everything
        for e in &self.entries {
            let p = root.join(&e.path);
            if let Some(parent) = p.parent() {
                if !parent.exists() {
                    let mut missing = Vec::new();
                    let mut cur = parent;
                    while cur != root && !cur.exists() {
                        missing.push(cur.to_path_buf());
                        cur = cur.parent().unwrap();
                    }
                    fs::create_dir_all(parent)
                        .unwrap_or_else(|err| panic!("mkdir -p {parent:?}: {err}"));
                    implicit.extend(missing);
                }
            }
            match &e.node {
                Node::File(c) => write_content(&p, c),
                Node::Dir => match fs::create_dir(&p) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => {
                        implicit.retain(|d| d != &p)
                    }
                    Err(err) => panic!("mkdir {p:?}: {err}"),
                },
                Node::Symlink(t) => std::os::unix::fs::symlink(t, &p)
                    .unwrap_or_else(|err| panic!("symlink {p:?}: {err}")),
                Node::HardLink(t) => fs::hard_link(root.join(t), &p)
                    .unwrap_or_else(|err| panic!("link {t:?} {p:?}: {err}")),
            }
        }
        // 2. file modes, then file/symlink mtimes; collect dirs
        for e in &self.entries {
            let p = root.join(&e.path);
            match &e.node {
                Node::File(_) => {
                    fs::set_permissions(&p, fs::Permissions::from_mode(e.mode.unwrap_or(0o644)))
                        .unwrap_or_else(|err| panic!("chmod {p:?}: {err}"));
                }
                Node::Dir => {
                    dirs.push((p, e.mode.unwrap_or(0o755), e.mtime.unwrap_or(DEFAULT_MTIME)))
                }
                _ => {}
            }
        }
        for e in &self.entries {
            match &e.node {
                Node::File(_) | Node::Symlink(_) => {
                    let (s, n) = e.mtime.unwrap_or(DEFAULT_MTIME);
                    set_mtime(&root.join(&e.path), s, n);
                }
                // Give a hard link's explicit mtime to the shared inode.
                Node::HardLink(_) => {
                    if let Some((s, n)) = e.mtime {
                        set_mtime(&root.join(&e.path), s, n);
                    }
                }
                Node::Dir => {}
            }
        }
        for d in implicit {
            dirs.push((d, 0o755, DEFAULT_MTIME));
        }
        // 3. directories deepest first, root last
        dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (p, mode, (s, n)) in dirs {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|err| panic!("chmod {p:?}: {err}"));
            set_mtime(&p, s, n);
        }
        if let Some(m) = self.root_mode {
            fs::set_permissions(root, fs::Permissions::from_mode(m)).unwrap();
        }
        let (s, n) = self.root_mtime.unwrap_or(DEFAULT_MTIME);
        set_mtime(root, s, n);
    }
}

/// Path from raw bytes (for non-UTF-8 names).
pub fn bpath(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

/// Sets PATH's mtime (and atime) without following a final symlink.
pub fn set_mtime(path: &Path, secs: i64, nsec: u32) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("NUL in path");
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    // SAFETY: valid NUL-terminated path and a 2-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        panic!(
            "utimensat {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// PATH's mtime as (seconds, nanoseconds), not following symlinks.
pub fn mtime(path: &Path) -> (i64, u32) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.mtime(), m.mtime_nsec() as u32)
}

// ---------------------------------------------------------------- content

/// xorshift64* stream; deterministic for a given seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 so that small seeds give unrelated streams
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// SIZE deterministic pseudo-random bytes from SEED, in memory.
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size];
    Rng::new(seed).fill(&mut v);
    v
}

fn write_content(p: &Path, c: &Content) {
    match c {
        Content::Bytes(b) => fs::write(p, b).unwrap_or_else(|e| panic!("write {p:?}: {e}")),
        Content::Random { size, seed } => large_file(p, *size, *seed),
    }
}

/// Writes a SIZE-byte file of pseudo-random content from SEED (streams;
/// fine for gigabytes). Same (size, seed) → same bytes; a shorter file with
/// the same seed is a prefix of a longer one.
pub fn large_file(path: &Path, size: u64, seed: u64) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// Overwrites LEN bytes at each OFFSET (clipped to the file end; size never
/// changes) with pseudo-random bytes from SEED, then sets the mtime to the
/// old mtime + 1 s so that rsync's quick check (size+mtime) notices.
/// Typical use on a large file: `&[size / 2, size - 100]` (middle and tail).
pub fn mutate_in_place(path: &Path, offsets: &[u64], len: usize, seed: u64) {
    let (s, n) = mtime(path);
    mutate_in_place_keep_mtime(path, offsets, len, seed);
    set_mtime(path, s + 1, n);
}

/// Like [`mutate_in_place`] but restores the exact old mtime: the change is
/// invisible to the quick check and only found with checksums (`-c`).
/// The new bytes are guaranteed to differ from the old ones.
pub fn mutate_in_place_keep_mtime(path: &Path, offsets: &[u64], len: usize, seed: u64) {
    let (s, n) = mtime(path);
    let perm = fs::symlink_metadata(path).unwrap().permissions();
    if perm.mode() & 0o200 == 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(perm.mode() | 0o200)).unwrap();
    }
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let size = f.metadata().unwrap().len();
    let mut rng = Rng::new(seed);
    for &off in offsets {
        if off >= size {
            continue;
        }
        let n = (len as u64).min(size - off) as usize;
        let mut old = vec![0u8; n];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut old).unwrap();
        let mut new = vec![0u8; n];
        rng.fill(&mut new);
        for (a, b) in new.iter_mut().zip(&old) {
            if a == b {
                *a = !*b;
            }
        }
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&new).unwrap();
    }
    drop(f);
    fs::set_permissions(path, perm).unwrap();
    set_mtime(path, s, n);
}

// ------------------------------------------------------------ type change

/// What [`replace_with`] puts in place of an existing entry.
#[derive(Clone, Debug)]
pub enum Kind {
    File(Vec<u8>),
    /// An empty directory.
    Dir,
    Symlink(PathBuf),
}

/// Removes whatever is at PATH (file, symlink — not followed — or a whole
/// directory tree) and creates KIND there. Keeps the parent's mtime.
pub fn replace_with(path: &Path, kind: Kind) {
    let parent_mtime = path.parent().map(|p| (p.to_path_buf(), mtime(p)));
    remove_any(path);
    match kind {
        Kind::File(b) => fs::write(path, b).unwrap(),
        Kind::Dir => fs::create_dir(path).unwrap(),
        Kind::Symlink(t) => std::os::unix::fs::symlink(t, path).unwrap(),
    }
    if let Some((p, (s, n))) = parent_mtime {
        set_mtime(&p, s, n);
    }
}

/// Removes PATH whatever it is (no-op if absent).
pub fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            super::make_writable(path);
            fs::remove_dir_all(path).unwrap()
        }
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// file/symlink → directory containing one file `inner.txt`.
pub fn to_dir(path: &Path) {
    replace_with(path, Kind::Dir);
    fs::write(path.join("inner.txt"), b"now a directory\n").unwrap();
}

/// dir/symlink → regular file with CONTENT.
pub fn to_file(path: &Path, content: &[u8]) {
    replace_with(path, Kind::File(content.to_vec()));
}

/// file/dir → symlink to TARGET.
pub fn to_symlink(path: &Path, target: &str) {
    replace_with(path, Kind::Symlink(PathBuf::from(target)));
}

// ---------------------------------------------------------- nasty tree

/// Number of nested directory levels in [`nasty`]'s `deep/` chain.
pub const NASTY_DEPTH: usize = 40;

/// The nasty-case tree. Contents (paths relative to the root):
///
/// * `plain.txt`, names with spaces (`with space.txt`, ` leading space`,
///   `trailing space `), a newline (`new\nline`), a tab, a CR, other C0
///   control bytes, non-UTF-8 bytes (`latin1-\xe9t\xe9`,
///   `bad-\xff\xfe-bytes`, C1 `\x80\x9b`), UTF-8 (`ünïcødé-文字.txt`),
///   255-byte names (ASCII and 2-byte UTF-8), leading dashes (`-rf`,
///   `--delete`, `-`), `.hidden`, `..dotdot`, backslash, glob chars, `#`,
///   `%`, `:`, `~`, `=`;
/// * `empty` (0 bytes), `empty-dir/`, `nested-empty/a/b/c/`;
/// * `deep/d00/.../d39/leaf.txt` (40 levels);
/// * `links/`: relative, absolute (dangling), dangling relative, dir link,
///   self loop, target with spaces and newline, 300-byte target;
/// * `hard/`: a 3-member group across dirs (`hard/a`, `hard/b`,
///   `hard/sub/c`), a 2-member group at the root (`hard2-x`, `hard2-y`),
///   a hard-linked read-only file;
/// * `modes/`: 0600, 0755, 0644, 0400, 0444, 0000 files; dirs 0700,
///   0555 (read-only dir with a file), 01755 (sticky); the 0000 file only
///   when running as root (a non-root daemon could not read it);
/// * `times/`: nanosecond mtime, epoch 0, -1, 1968 with nsec, 1901
///   (i32::MIN), 2^31 (post-2038), 2100 with nsec, a dir and a symlink
///   with nsec times;
/// * `big.bin` (300 000 pseudo-random bytes), `block.bin` (exactly 64 KiB),
///   `one-byte`.
///
/// Every mtime is explicit or [`DEFAULT_MTIME`], so two writes produce
/// identical trees (apart from inode numbers and ctimes).
pub fn nasty() -> TreeSpec {
    let mut t = TreeSpec::new()
        .file("plain.txt", "hello\n")
        .file("with space.txt", "spaces\n")
        .file(" leading space", "x")
        .file("trailing space ", "y")
        .file("new\nline", "newline in name\n")
        .file("tab\tname", "tab\n")
        .file("cr\rname", "cr\n")
        .file(bpath(b"ctrl\x01\x1bx\x7f"), "control bytes\n")
        .file(bpath(b"latin1-\xe9t\xe9"), "not utf-8\n")
        .file(bpath(b"bad-\xff\xfe-bytes"), "not utf-8 either\n")
        .file(bpath(b"c1-\x80\x9b-range"), "c1 controls\n")
        .file("ünïcødé-文字.txt", "utf-8\n")
        .file("L".repeat(255), "255 ascii bytes\n")
        .file(format!("{}x", "é".repeat(127)), "255 utf-8 bytes\n")
        .file("-rf", "dash\n")
        .file("--delete", "double dash\n")
        .file("-", "single dash\n")
        .file(".hidden", "hidden\n")
        .file("..dotdot", "dots\n")
        .file("back\\slash", "backslash\n")
        .file("*?[glob]", "glob\n")
        .file("#hash", "hash\n")
        .file("percent%20%n", "percent\n")
        .file(":colon", "colon\n")
        .file("~tilde", "tilde\n")
        .file("a=b", "equals\n")
        .file("empty", "")
        .dir("empty-dir")
        .dir("nested-empty/a/b/c");

    let mut deep = PathBuf::from("deep");
    for i in 0..NASTY_DEPTH {
        deep.push(format!("d{i:02}"));
    }
    t = t.file(deep.join("leaf.txt"), "bottom\n");

    t = t
        .file("links/target.txt", "target\n")
        .symlink("links/rel", "target.txt")
        .symlink("links/rel-up", "../plain.txt")
        .symlink("links/abs", "/nonexistent/rmirror/absolute/target")
        .symlink("links/abs-root", "/")
        .symlink("links/dangling", "does-not-exist")
        .symlink("links/dirlink", "../deep")
        .symlink("links/self", "self")
        .symlink("links/spacey link", "target with spaces\nand newline")
        .symlink("links/long", "t/".repeat(150))
        .mtime(1_500_000_000, 999_999_999);

    t = t
        .file("hard/a", "three names, one inode\n")
        .hardlink("hard/b", "hard/a")
        .hardlink("hard/sub/c", "hard/a")
        .file("hard2-x", "two names\n")
        .hardlink("hard2-y", "hard2-x")
        .file("hard/ro", "read-only, linked\n")
        .mode(0o444)
        .hardlink("hard/ro-link", "hard/ro");

    t = t
        .file("modes/0600", "secret\n")
        .mode(0o600)
        .file("modes/0755", "#!/bin/sh\nexit 0\n")
        .mode(0o755)
        .file("modes/0644", "normal\n")
        .mode(0o644)
        .file("modes/0400", "read-only owner\n")
        .mode(0o400)
        .file("modes/0444", "read-only\n")
        .mode(0o444)
        .dir("modes/dir-0700")
        .mode(0o700)
        .file("modes/dir-0555/inside", "in a read-only dir\n")
        .dir("modes/dir-0555")
        .mode(0o555)
        .dir("modes/sticky")
        .mode(0o1755);

    // A mode-0000 file is only readable by a root daemon.
    if unsafe { libc::geteuid() } == 0 {
        t = t.file("modes/0000", "no permissions\n").mode(0o000);
    }

    t = t
        .file("times/nsec", "nsec\n")
        .mtime(1_700_000_000, 123_456_789)
        .file("times/epoch-0", "1970\n")
        .mtime(0, 0)
        .file("times/minus-1", "1969\n")
        .mtime(-1, 0)
        .file("times/1968-nsec", "1968\n")
        .mtime(-31_536_001, 500_000_000)
        .file("times/1901", "i32::MIN\n")
        .mtime(i32::MIN as i64, 0)
        .file("times/2038", "2^31\n")
        .mtime(1 << 31, 0)
        .file("times/2100", "2100\n")
        .mtime(4_102_444_800, 123_000_000)
        .dir("times/dir-nsec")
        .mtime(1_234_567_890, 987_654_321)
        .symlink("times/link-nsec", "nsec")
        .mtime(1_111_111_111, 111_111_111)
        .dir("times")
        .mtime(1_650_000_000, 1);

    t = t
        .random_file("big.bin", 300_000, 1)
        .random_file("block.bin", 65_536, 2)
        .file("one-byte", "1");
    t.root_mtime = Some((1_690_000_000, 42));
    t
}

// ----------------------------------------------------------- CPAN-like

/// Log-normal size: median 12 000 bytes, sigma 1.0 (Box–Muller), clamped.
fn lognormal_size(rng: &mut Rng) -> u64 {
    let u1 = rng.unit().max(1e-12);
    let u2 = rng.unit();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    ((12_000f64.ln() + z).exp() as u64).clamp(64, 8 << 20)
}

/// A CPAN-like tree with N distribution files, deterministic from SEED:
///
/// * `authors/id/A/AB/ABCDEF/Foo-Bar-1.23.tar.gz` (plus `.meta`/`.readme`
///   siblings for some) and one `CHECKSUMS` per author directory;
/// * `authors/01mailrc.txt.gz`, `modules/02packages.details.txt.gz`,
///   `modules/03modlist.data.gz`, `indices/RECENT-1h.json`;
/// * sizes log-normal with median ~12 KB (mean ~20 KB), clamped to
///   [64 B, 8 MiB]; mtimes spread over 2000–2024 (nanosecond parts zero,
///   like a real mirror's tarballs are not).
///
/// File content is pseudo-random (see [`Content::Random`]).
pub fn cpan_like(n: usize, seed: u64) -> TreeSpec {
    let mut rng = Rng::new(seed);
    let mut t = TreeSpec::new();
    let words = [
        "Foo", "Bar", "Net", "HTTP", "Tiny", "XML", "JSON", "DBI", "Moose", "Test", "More",
        "Simple", "Data", "Dumper", "App", "Mojo", "Plack", "Path", "File", "Util", "List", "Any",
        "Time", "Local", "Digest",
    ];
    let n_authors = (n / 8).max(1);
    let authors: Vec<String> = (0..n_authors)
        .map(|i| {
            let len = 3 + rng.below(7) as usize;
            let mut s: String = (0..len)
                .map(|_| (b'A' + rng.below(26) as u8) as char)
                .collect();
            // make ids unique and still look like PAUSE ids
            if i > 0 && rng.below(4) == 0 {
                s.push_str(&i.to_string());
            }
            s
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut per_author: Vec<Vec<String>> = vec![Vec::new(); authors.len()];
    let mut made = 0usize;
    let mut file_seed = seed.wrapping_mul(1_000_003);
    while made < n {
        let a = rng.below(authors.len() as u64) as usize;
        let dist = format!(
            "{}-{}",
            words[rng.below(words.len() as u64) as usize],
            words[rng.below(words.len() as u64) as usize]
        );
        let version = format!("{}.{:02}", rng.below(5), rng.below(100));
        let base = format!("{dist}-{version}");
        if per_author[a]
            .iter()
            .any(|f| f.starts_with(&format!("{base}.")))
        {
            continue;
        }
        let id = &authors[a];
        let dir = format!("authors/id/{}/{}/{}", &id[..1], &id[..2], id);
        let mtime = 946_684_800 + rng.below(25 * 365 * 86_400) as i64;
        let mut names = vec![format!("{base}.tar.gz")];
        if rng.below(3) == 0 {
            names.push(format!("{base}.meta"));
            names.push(format!("{base}.readme"));
        }
        for name in names {
            if made >= n {
                break;
            }
            let size = if name.ends_with(".tar.gz") {
                lognormal_size(&mut rng)
            } else {
                200 + rng.below(3000)
            };
            file_seed = file_seed.wrapping_add(1);
            t = t
                .random_file(format!("{dir}/{name}"), size, file_seed)
                .mtime(mtime, 0);
            per_author[a].push(name);
            made += 1;
        }
    }
    for (a, files) in per_author.iter().enumerate() {
        if files.is_empty() {
            continue;
        }
        let id = &authors[a];
        let mut sums = String::from("# CHECKSUMS\n$cksum = {\n");
        for f in files {
            sums.push_str(&format!(
                "  '{f}' => {{ 'sha256' => '{:016x}' }},\n",
                rng.next_u64()
            ));
        }
        sums.push_str("};\n");
        t = t
            .file(
                format!("authors/id/{}/{}/{}/CHECKSUMS", &id[..1], &id[..2], id),
                sums,
            )
            .mtime(1_700_000_000 + a as i64, 0);
    }
    t = t
        .random_file(
            "authors/01mailrc.txt.gz",
            40_000 + rng.below(20_000),
            seed ^ 0x1,
        )
        .mtime(1_710_000_000, 0)
        .random_file(
            "modules/02packages.details.txt.gz",
            200_000 + rng.below(100_000),
            seed ^ 0x2,
        )
        .mtime(1_710_000_100, 0)
        .random_file("modules/03modlist.data.gz", 300, seed ^ 0x3)
        .mtime(1_710_000_200, 0)
        .file(
            "indices/RECENT-1h.json",
            format!("{{\"recent\":[],\"seed\":{seed}}}\n"),
        )
        .mtime(1_710_000_300, 0);
    t
}

/// Lossless display of a raw path for messages.
pub fn show(path: &Path) -> String {
    format!(
        "{:?}",
        OsString::from_vec(path.as_os_str().as_bytes().to_vec())
    )
}
