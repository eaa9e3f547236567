//! File-list decoding (`flist.c recv_file_list` / `recv_file_entry`,
//! `uidlist.c recv_id_list`) and rsync-exact ordering (`f_name_cmp`,
//! `flist_sort_and_clean`) as pure code over bytes.
//!
//! [`FlistDecoder::step`] decodes one item (a file entry, the end-of-list
//! marker, one uid/gid-list record, or the trailing io_error int) from the
//! front of a buffer. It parses into locals and commits only on success, so
//! on [`DecodeError::Incomplete`] the caller can retry from the same position
//! once more bytes arrived. When the list is complete it is sorted with a
//! stable merge sort shaped like rsync's `fsort`, duplicates are turned into
//! tombstones (slots are kept, so indices match the sender), and
//! [`FlistProgress::Done`] hands the list over.
//!
//! Every length or count that comes from the peer is checked against one of
//! the `MAX_*` constants below before it is used. Names are checked for path
//! safety before they are stored.

use std::cmp::Ordering;
use std::collections::HashSet;

pub use super::name::Name;
use super::wire::{malformed, DResult, DecodeError, Reader};

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// Longest accepted path, like Linux `MAXPATHLEN`. As in rsync a full name
/// must be strictly shorter (room for the C terminator), i.e. ≤ 4095 bytes.
pub const MAX_PATH: usize = 4096;
/// Longest accepted symlink target (also `< MAX_PATH`, as rsync checks).
pub const MAX_SYMLINK_TARGET: usize = MAX_PATH - 1;
/// Longest user/group name (one length byte on the wire).
pub const MAX_ID_NAME: usize = 255;
/// Most records accepted in one uid or gid list.
pub const MAX_ID_LIST: usize = 1 << 20;
/// Most entries (tombstones included) accepted in one file list.
pub const MAX_FLIST_ENTRIES: usize = 1 << 24;
/// Longest file-list checksum we accept to be configured with (sha512 = 64).
pub const MAX_FLIST_CHECKSUM: usize = 64;
/// Upper bound of an mtime nanosecond value (`rsync.h MAX_WIRE_NSEC`).
pub const MAX_NSEC: i32 = 999_999_999;

// ---------------------------------------------------------------------------
// Wire flag bits (rsync.h XMIT_*)
// ---------------------------------------------------------------------------

pub const XMIT_TOP_DIR: u32 = 1 << 0;
pub const XMIT_SAME_MODE: u32 = 1 << 1;
/// Protocols < 28 only.
pub const XMIT_SAME_RDEV_PRE28: u32 = 1 << 2;
/// Protocols ≥ 28.
pub const XMIT_EXTENDED_FLAGS: u32 = 1 << 2;
pub const XMIT_SAME_UID: u32 = 1 << 3;
pub const XMIT_SAME_GID: u32 = 1 << 4;
pub const XMIT_SAME_NAME: u32 = 1 << 5;
pub const XMIT_LONG_NAME: u32 = 1 << 6;
pub const XMIT_SAME_TIME: u32 = 1 << 7;
/// Devices (protocol ≥ 28).
pub const XMIT_SAME_RDEV_MAJOR: u32 = 1 << 8;
/// Directories (protocol ≥ 30).
pub const XMIT_NO_CONTENT_DIR: u32 = 1 << 8;
pub const XMIT_HLINKED: u32 = 1 << 9;
/// Protocols 28–29.
pub const XMIT_SAME_DEV_PRE30: u32 = 1 << 10;
/// Protocols ≥ 30.
pub const XMIT_USER_NAME_FOLLOWS: u32 = 1 << 10;
/// Protocols 28–29.
pub const XMIT_RDEV_MINOR_8_PRE30: u32 = 1 << 11;
/// Protocols ≥ 30.
pub const XMIT_GROUP_NAME_FOLLOWS: u32 = 1 << 11;
/// Hard-linked entries (protocol ≥ 30).
pub const XMIT_HLINK_FIRST: u32 = 1 << 12;
/// End marker (with XMIT_EXTENDED_FLAGS, non-varint safe flist).
pub const XMIT_IO_ERROR_ENDLIST: u32 = 1 << 12;
pub const XMIT_MOD_NSEC: u32 = 1 << 13;

// ---------------------------------------------------------------------------
// Receiver-side entry flags (rsync.h FLAG_*; same values)
// ---------------------------------------------------------------------------

/// A top-level directory of the transfer.
pub const FLAG_TOP_DIR: u32 = 1 << 0;
/// A directory whose contents are in the list (deletion may scan it).
pub const FLAG_CONTENT_DIR: u32 = 1 << 2;
/// Entry is part of a hard-link group (`hlink` is `Some`).
pub const FLAG_HLINKED: u32 = 1 << 5;
/// A directory only present as an implied parent (contents not sent).
pub const FLAG_IMPLIED_DIR: u32 = 1 << 6;

/// `io_error` bits that a peer may set (`rsync.h IOERR_VALID_MASK`).
pub const IOERR_VALID_MASK: i32 = 0x7;

// ---------------------------------------------------------------------------
// File types
// ---------------------------------------------------------------------------

pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

fn is_dir(mode: u32) -> bool {
    mode & S_IFMT == S_IFDIR
}
fn is_reg(mode: u32) -> bool {
    mode & S_IFMT == S_IFREG
}
fn is_lnk(mode: u32) -> bool {
    mode & S_IFMT == S_IFLNK
}
fn is_device(mode: u32) -> bool {
    matches!(mode & S_IFMT, S_IFCHR | S_IFBLK)
}
fn is_special(mode: u32) -> bool {
    matches!(mode & S_IFMT, S_IFIFO | S_IFSOCK)
}

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// What the client negotiated / asked for; decides which fields are present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlistOptions {
    /// Negotiated protocol, 27..=32.
    pub protocol: i32,
    /// CF_VARINT_FLIST_FLAGS (ignored below protocol 30).
    pub varint_flags: bool,
    /// CF_SAFE_FLIST (ignored below 30, forced on from 31).
    pub safe_flist: bool,
    /// CF_INC_RECURSE (ignored below 30).
    pub inc_recurse: bool,
    /// CF_ID0_NAMES (ignored below 30).
    pub id0_names: bool,
    /// `-r`: below protocol 30 directories under a top dir become content dirs
    /// only when recursing (`in_del_hier = recurse`).
    pub recurse: bool,
    pub preserve_links: bool,
    pub preserve_uid: bool,
    pub preserve_gid: bool,
    pub preserve_devices: bool,
    pub preserve_specials: bool,
    pub preserve_hard_links: bool,
    pub always_checksum: bool,
    /// File-list checksum length when `always_checksum` (≤ MAX_FLIST_CHECKSUM).
    pub checksum_len: usize,
    /// `--numeric-ids` was sent: no uid/gid name lists follow the list.
    pub numeric_ids: bool,
}

impl FlistOptions {
    /// All preserve options off, recursion on, for `protocol`.
    pub fn new(protocol: i32) -> Self {
        FlistOptions {
            protocol,
            varint_flags: false,
            safe_flist: false,
            inc_recurse: false,
            id0_names: false,
            recurse: true,
            preserve_links: false,
            preserve_uid: false,
            preserve_gid: false,
            preserve_devices: false,
            preserve_specials: false,
            preserve_hard_links: false,
            always_checksum: false,
            checksum_len: 16,
            numeric_ids: false,
        }
    }

    /// The options with protocol-dependent flags normalised the way rsync's
    /// `compat.c` derives them.
    fn normalised(mut self) -> Self {
        let p = self.protocol;
        self.varint_flags &= p >= 30;
        self.inc_recurse &= p >= 30;
        self.id0_names &= p >= 30;
        self.safe_flist = (self.safe_flist && p >= 30) || p >= 31;
        self
    }
}

/// Hard-link group key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HardLinkKey {
    /// Protocol ≥ 30: global index (in *received* order) of the group leader,
    /// exactly rsync's `F_HL_GNUM`. Groups may span inc-recursion lists.
    Ndx(i32),
    /// Protocol < 30: the sender's (dev + 1, ino) pair as received.
    DevIno(i64, i64),
}

/// One decoded file-list entry.
///
/// Kept small because a list holds one per file (issue 3): the fields most
/// entries of an archive lack (device numbers, symlink target, hard-link
/// group, `-c` checksum) live in one boxed [`EntryExtra`], allocated only for
/// the entries that have one of them; `size_of::<FileEntry>()` is bounded by
/// a test below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Full relative path, `/`-separated, raw bytes; `.` for the root.
    /// Decoded lists keep all their names in one shared chunk (see [`Name`]).
    pub name: Name,
    pub size: i64,
    pub mtime: i64,
    /// Present iff `preserve_uid`.
    pub uid: Option<u32>,
    /// Present iff `preserve_gid`.
    pub gid: Option<u32>,
    /// st_mode including the type bits.
    pub mode: u32,
    pub mtime_nsec: u32,
    /// FLAG_* bits.
    pub flags: u32,
    /// Protocol ≥ 30: the sender marked this entry as the group's first.
    /// Protocol < 30: first occurrence of its (dev, ino) in received order.
    pub hlink_first: bool,
    /// The rarely present fields; `None` when all of them are absent.
    extra: Option<Box<EntryExtra>>,
}

/// The rarely present parts of a [`FileEntry`] (see its accessors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryExtra {
    pub rdev: Option<(u32, u32)>,
    pub link_target: Option<Vec<u8>>,
    pub hlink: Option<HardLinkKey>,
    pub checksum: Option<Vec<u8>>,
}

impl FileEntry {
    /// An entry with only a name and a mode (everything else zero or absent).
    pub fn new(name: impl Into<Name>, mode: u32) -> Self {
        FileEntry { name: name.into(), size: 0, mtime: 0, uid: None, gid: None, mode, mtime_nsec: 0, flags: 0, hlink_first: false, extra: None }
    }
    /// (major, minor) for char/block devices iff `preserve_devices`.
    pub fn rdev(&self) -> Option<(u32, u32)> {
        self.extra.as_ref().and_then(|x| x.rdev)
    }
    /// Symlink target iff a symlink and `preserve_links`.
    pub fn link_target(&self) -> Option<&[u8]> {
        self.extra.as_ref().and_then(|x| x.link_target.as_deref())
    }
    /// Hard-link group iff `preserve_hard_links`, the sender flagged it, and
    /// the entry is not a directory.
    pub fn hlink(&self) -> Option<HardLinkKey> {
        self.extra.as_ref().and_then(|x| x.hlink)
    }
    /// File-list checksum of a regular file iff `always_checksum`.
    pub fn checksum(&self) -> Option<&[u8]> {
        self.extra.as_ref().and_then(|x| x.checksum.as_deref())
    }
    /// The rare fields, allocated on first use.
    pub fn extra_mut(&mut self) -> &mut EntryExtra {
        self.extra.get_or_insert_with(Default::default)
    }
    pub fn is_dir(&self) -> bool {
        is_dir(self.mode)
    }
    pub fn is_reg(&self) -> bool {
        is_reg(self.mode)
    }
    pub fn is_symlink(&self) -> bool {
        is_lnk(self.mode)
    }
    pub fn is_device(&self) -> bool {
        is_device(self.mode)
    }
    pub fn is_special(&self) -> bool {
        is_special(self.mode)
    }
    /// Bytes before the last `/` (empty when the name has no `/`).
    pub fn dirname(&self) -> &[u8] {
        split_name(&self.name).0.unwrap_or(b"")
    }
    /// Bytes after the last `/`.
    pub fn basename(&self) -> &[u8] {
        split_name(&self.name).1
    }
}

/// A complete, sorted file list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileList {
    /// Global index of `entries[0]`.
    pub ndx_start: i32,
    /// In rsync's sorted order; `None` = duplicate removed (slot kept).
    pub entries: Vec<Option<FileEntry>>,
    /// Indices into `entries` of every directory received, in sorted order,
    /// *including* directories that became tombstones. This is the order in
    /// which rsync appends a list's directories to its `dir_flist`, so an
    /// inc-recursion sub-list's `dir_ndx` counts over these slots; a slot
    /// whose entry is `None` is a cleared directory (reject sub-lists for it).
    pub dir_slots: Vec<usize>,
    /// IOERR_* bits from the end marker / trailing int, masked.
    pub io_error: i32,
    /// uid → name, from the uid list or inline names, in arrival order.
    pub uid_names: Vec<(u32, Vec<u8>)>,
    /// gid → name, likewise.
    pub gid_names: Vec<(u32, Vec<u8>)>,
}

/// Result of one [`FlistDecoder::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlistProgress {
    /// One item (an entry, the end marker, or an id-list record) was consumed;
    /// the list is not finished yet — call `step` again.
    Entry,
    /// The list is complete.
    Done(FileList),
}

// ---------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------

/// "Same as previous" state of `recv_file_entry` (C statics); it persists
/// across all lists of a connection.
#[derive(Debug, Clone, Default)]
struct Prev {
    mode: u32,
    mtime: i64,
    uid: u32,
    gid: u32,
    rdev_major: u32,
    /// Protocol < 28: whole rdev as sent.
    rdev_pre28: i32,
    /// Protocol 28–29: hard-link dev (+1) as sent.
    dev_pre30: i64,
    /// Protocol < 30 content-dir walk state.
    in_del_hier: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Entries,
    UidList,
    GidList,
    TrailingIoError,
}

#[derive(Debug, Default)]
struct Partial {
    ndx_start: i32,
    parent: Option<Vec<u8>>,
    entries: Vec<FileEntry>,
    /// Every entry's name, back to back; the entries' names are pending
    /// ranges of it until the list is complete and this becomes their chunk.
    names: Vec<u8>,
    io_error: i32,
    uid_names: Vec<(u32, Vec<u8>)>,
    gid_names: Vec<(u32, Vec<u8>)>,
    /// Protocol < 30: (dev, ino) pairs seen, to set `hlink_first`.
    seen_devino: HashSet<(i64, i64)>,
    id_count: usize,
}

/// Incremental, sans-IO file-list decoder for one connection.
#[derive(Debug)]
pub struct FlistDecoder {
    opts: FlistOptions,
    prev: Prev,
    /// The previous entry's name, for the sender's prefix compression.
    prev_name: Vec<u8>,
    /// Where the next name is assembled (swapped with `prev_name` on commit,
    /// so decoding an entry allocates nothing once the buffers have grown).
    scratch: Vec<u8>,
    phase: Phase,
    cur: Partial,
    /// Lowest `ndx_start` of any list so far; hard-link references below it
    /// cannot name anything.
    lowest_ndx_start: Option<i32>,
}

/// Everything one file entry changes, committed only after it fully parsed.
struct Decoded {
    entry: FileEntry,
    prev: Prev,
    uid_name: Option<(u32, Vec<u8>)>,
    gid_name: Option<(u32, Vec<u8>)>,
    devino: Option<(i64, i64)>,
}

enum Head {
    End(i32),
    Flags(u32),
}

impl FlistDecoder {
    pub fn new(opts: FlistOptions) -> Self {
        FlistDecoder {
            opts: opts.normalised(),
            prev: Prev::default(),
            prev_name: Vec::new(),
            scratch: Vec::new(),
            phase: Phase::Idle,
            cur: Partial::default(),
            lowest_ndx_start: None,
        }
    }

    pub fn options(&self) -> &FlistOptions {
        &self.opts
    }

    /// Start receiving a list. `ndx_start`: 0 for a non-incremental list; with
    /// incremental recursion 1 for the first list, then
    /// `prev.ndx_start + prev.entries.len() + 1`. `parent` is the directory
    /// name of an inc-recursion sub-list (every entry must then live directly
    /// in it); `None` for the first list (with inc-recursion its entries must
    /// then all be top-level names). A list in progress is discarded.
    pub fn begin_list(&mut self, ndx_start: i32, parent: Option<&[u8]>) {
        self.cur = Partial { ndx_start, parent: parent.map(|p| p.to_vec()), ..Partial::default() };
        self.phase = Phase::Entries;
        self.lowest_ndx_start = Some(match self.lowest_ndx_start {
            Some(l) => l.min(ndx_start),
            None => ndx_start,
        });
    }

    /// Whether a list is being received.
    pub fn in_list(&self) -> bool {
        self.phase != Phase::Idle
    }

    /// Decode one item from the front of `buf`: returns the progress and the
    /// number of bytes consumed. On `Err(Incomplete)` nothing was consumed and
    /// no state changed.
    pub fn step(&mut self, buf: &[u8]) -> Result<(FlistProgress, usize), DecodeError> {
        let p = self.opts.protocol;
        if !(27..=32).contains(&p) {
            return malformed(format!("file list: unsupported protocol {p}"));
        }
        if self.opts.always_checksum && self.opts.checksum_len > MAX_FLIST_CHECKSUM {
            return malformed(format!("file list: checksum length {} too large", self.opts.checksum_len));
        }
        let mut r = Reader::new(buf);
        match self.phase {
            Phase::Idle => malformed("file list: step called without begin_list"),
            Phase::Entries => match self.read_head(&mut r)? {
                Head::End(err) => {
                    self.cur.io_error |= err & IOERR_VALID_MASK;
                    self.phase = self.after_entries();
                    self.finish_if_done(r.consumed())
                }
                Head::Flags(xflags) => {
                    if self.cur.entries.len() >= MAX_FLIST_ENTRIES {
                        return malformed(format!("file list: more than {MAX_FLIST_ENTRIES} entries"));
                    }
                    let mut name = std::mem::take(&mut self.scratch);
                    let d = self.read_entry(&mut r, xflags, &mut name);
                    match d {
                        Ok(d) => self.commit(d, name),
                        Err(e) => {
                            self.scratch = name;
                            return Err(e);
                        }
                    }
                    Ok((FlistProgress::Entry, r.consumed()))
                }
            },
            Phase::UidList | Phase::GidList => {
                let uid = self.phase == Phase::UidList;
                let id = self.varint30(&mut r)? as u32;
                let (rec, last) = if id != 0 {
                    (Some((id, read_id_name(&mut r)?)), false)
                } else if self.opts.id0_names {
                    (Some((0, read_id_name(&mut r)?)), true)
                } else {
                    (None, true)
                };
                if rec.is_some() && self.cur.id_count >= MAX_ID_LIST {
                    return malformed(format!("file list: more than {MAX_ID_LIST} id-list records"));
                }
                // Commit.
                if let Some((id, name)) = rec {
                    self.cur.id_count += 1;
                    if !name.is_empty() {
                        if uid {
                            self.cur.uid_names.push((id, name));
                        } else {
                            self.cur.gid_names.push((id, name));
                        }
                    }
                }
                if last {
                    self.cur.id_count = 0;
                    self.phase = if uid && self.opts.preserve_gid { Phase::GidList } else { self.after_id_lists() };
                    return self.finish_if_done(r.consumed());
                }
                Ok((FlistProgress::Entry, r.consumed()))
            }
            Phase::TrailingIoError => {
                let err = r.i32()?;
                self.cur.io_error |= err & IOERR_VALID_MASK;
                self.phase = Phase::Idle;
                self.finish_if_done(r.consumed())
            }
        }
    }

    fn after_entries(&self) -> Phase {
        let o = &self.opts;
        if !o.inc_recurse && !o.numeric_ids {
            if o.preserve_uid {
                return Phase::UidList;
            }
            if o.preserve_gid {
                return Phase::GidList;
            }
        }
        self.after_id_lists()
    }

    fn after_id_lists(&self) -> Phase {
        if self.opts.protocol < 30 {
            Phase::TrailingIoError
        } else {
            Phase::Idle
        }
    }

    fn finish_if_done(&mut self, consumed: usize) -> Result<(FlistProgress, usize), DecodeError> {
        if self.phase != Phase::Idle {
            return Ok((FlistProgress::Entry, consumed));
        }
        let mut part = std::mem::take(&mut self.cur);
        let protocol = self.opts.protocol;
        part.names.shrink_to_fit();
        let chunk = std::sync::Arc::new(part.names);
        for e in part.entries.iter_mut() {
            e.name.place(&chunk);
        }
        drop(chunk);
        let (entries, dir_slots) = sort_and_clean(part.entries, protocol);
        Ok((
            FlistProgress::Done(FileList {
                ndx_start: part.ndx_start,
                entries,
                dir_slots,
                io_error: part.io_error,
                uid_names: part.uid_names,
                gid_names: part.gid_names,
            }),
            consumed,
        ))
    }

    fn varint30(&self, r: &mut Reader<'_>) -> DResult<i32> {
        if self.opts.protocol >= 30 {
            r.varint()
        } else {
            r.i32()
        }
    }

    fn varlong30(&self, r: &mut Reader<'_>, min: usize) -> DResult<i64> {
        if self.opts.protocol >= 30 {
            r.varlong(min)
        } else {
            r.longint()
        }
    }

    /// xflags or the end-of-list marker (`recv_file_list` loop head).
    fn read_head(&self, r: &mut Reader<'_>) -> DResult<Head> {
        let o = &self.opts;
        if o.varint_flags {
            let f = r.varint()?;
            if f == 0 {
                return Ok(Head::End(r.varint()?));
            }
            return Ok(Head::Flags(f as u32));
        }
        let mut f = r.u8()? as u32;
        if f == 0 {
            return Ok(Head::End(0));
        }
        if o.protocol >= 28 && f & XMIT_EXTENDED_FLAGS != 0 {
            f |= (r.u8()? as u32) << 8;
            if f == XMIT_EXTENDED_FLAGS | XMIT_IO_ERROR_ENDLIST {
                if !o.safe_flist {
                    return malformed(format!("file list: invalid flist flag {f:#x}"));
                }
                return Ok(Head::End(r.varint()?));
            }
        }
        Ok(Head::Flags(f))
    }

    /// Parse one entry into locals (`recv_file_entry`).
    /// The entry's name is assembled in `name`; the returned entry's own
    /// `name` is set by [`Self::commit`].
    fn read_entry(&self, r: &mut Reader<'_>, xflags: u32, name: &mut Vec<u8>) -> DResult<Decoded> {
        let o = &self.opts;
        let proto = o.protocol;
        let mut prev = self.prev.clone();

        // --- name ---
        let l1 = if xflags & XMIT_SAME_NAME != 0 { r.u8()? as usize } else { 0 };
        let l2 = if xflags & XMIT_LONG_NAME != 0 {
            let v = self.varint30(r)?;
            if v < 0 {
                return malformed(format!("file list: negative name length {v}"));
            }
            v as usize
        } else {
            r.u8()? as usize
        };
        if l1 > self.prev_name.len() {
            return malformed(format!(
                "file list: name prefix length {l1} exceeds previous name \"{}\" ({} bytes)",
                escape_name(&self.prev_name),
                self.prev_name.len()
            ));
        }
        if l2 >= MAX_PATH - l1 {
            return malformed(format!("file list: name too long ({l1} + {l2} bytes, limit {})", MAX_PATH - 1));
        }
        let suffix = r.bytes(l2)?;
        name.clear();
        name.extend_from_slice(&self.prev_name[..l1]);
        name.extend_from_slice(suffix);
        let name: &[u8] = name;
        check_name_safe(name)?;
        let expected_dir: Option<&[u8]> = match &self.cur.parent {
            Some(p) => Some(p),
            None if o.inc_recurse => Some(b""),
            None => None,
        };
        if let Some(want) = expected_dir {
            let have = split_name(name).0.unwrap_or(b"");
            if have != want {
                return malformed(format!(
                    "file list: invalid path from sender: \"{}\" is not directly in \"{}\"",
                    escape_name(name),
                    escape_name(want)
                ));
            }
        }

        let ndx_here = self.cur.ndx_start as i64 + self.cur.entries.len() as i64;
        if ndx_here > i32::MAX as i64 {
            return malformed("file list: entry index exceeds the ndx range");
        }
        let mut entry = FileEntry::new(Name::default(), 0);
        let mut uid_name = None;
        let mut gid_name = None;
        let mut devino = None;

        // --- hard-link reference (protocol ≥ 30) ---
        let mut first_hlink_ndx: Option<i32> = None;
        if proto >= 30 && xflags & XMIT_HLINKED != 0 && xflags & XMIT_HLINK_FIRST == 0 {
            let v = r.varint()?;
            if v < 0 || v as i64 >= ndx_here {
                return malformed(format!(
                    "file list: hard-link reference out of range: {v} ({ndx_here}) for \"{}\"",
                    escape_name(name)
                ));
            }
            if v < self.lowest_ndx_start.unwrap_or(0) {
                return malformed(format!(
                    "file list: hard-link reference {v} precedes the first list for \"{}\"",
                    escape_name(name)
                ));
            }
            first_hlink_ndx = Some(v);
        }
        let abbreviated = first_hlink_ndx.filter(|&v| v >= self.cur.ndx_start);

        if let Some(v) = abbreviated {
            // The entry ends here: copy everything from the leader, which is in
            // this list in received order.
            let Some(first) = self.cur.entries.get((v - self.cur.ndx_start) as usize) else {
                return malformed("file list: hard-link reference not in list");
            };
            if first.is_dir() {
                return malformed(format!(
                    "file list: \"{}\" hard-links directory \"{}\"",
                    escape_name(name),
                    escape_name(self.cur.names.get(first.name.range()).unwrap_or(&[]))
                ));
            }
            entry.size = first.size;
            entry.mtime = first.mtime;
            entry.mtime_nsec = first.mtime_nsec;
            entry.mode = first.mode;
            prev.mtime = first.mtime;
            prev.mode = first.mode;
            if o.preserve_uid {
                prev.uid = first.uid.unwrap_or(prev.uid);
                entry.uid = Some(prev.uid);
            }
            if o.preserve_gid {
                prev.gid = first.gid.unwrap_or(prev.gid);
                entry.gid = Some(prev.gid);
            }
            if o.preserve_devices && is_device(entry.mode) {
                let (maj, min) = first.rdev().unwrap_or((0, 0));
                prev.rdev_major = maj;
                entry.extra_mut().rdev = Some((maj, min));
            }
            if o.preserve_links && is_lnk(entry.mode) {
                let t = first.link_target().unwrap_or_default().to_vec();
                entry.extra_mut().link_target = Some(t);
            }
            if o.always_checksum && is_reg(entry.mode) {
                if let Some(c) = first.checksum().map(<[u8]>::to_vec) {
                    entry.extra_mut().checksum = Some(c);
                }
            }
        } else {
            // --- size, times, mode ---
            let size = self.varlong30(r, 3)?;
            if size < 0 {
                return malformed(format!("file list: negative size {size} for \"{}\"", escape_name(name)));
            }
            entry.size = size;
            if xflags & XMIT_SAME_TIME == 0 {
                prev.mtime = if proto >= 30 { r.varlong(4)? } else { r.u32()? as i64 };
            }
            entry.mtime = prev.mtime;
            if xflags & XMIT_MOD_NSEC != 0 {
                let ns = r.varint()?;
                if !(0..=MAX_NSEC).contains(&ns) {
                    return malformed(format!("file list: mtime nsec {ns} out of range for \"{}\"", escape_name(name)));
                }
                entry.mtime_nsec = ns as u32;
            }
            if xflags & XMIT_SAME_MODE == 0 {
                prev.mode = r.i32()? as u32;
            }
            entry.mode = prev.mode;
            check_mode(entry.mode, name)?;

            // --- owner ---
            if o.preserve_uid {
                if xflags & XMIT_SAME_UID == 0 {
                    if proto < 30 {
                        prev.uid = r.i32()? as u32;
                    } else {
                        prev.uid = r.varint()? as u32;
                        if xflags & XMIT_USER_NAME_FOLLOWS != 0 {
                            let n = read_id_name(r)?;
                            if !n.is_empty() {
                                uid_name = Some((prev.uid, n));
                            }
                        }
                    }
                }
                entry.uid = Some(prev.uid);
            }
            if o.preserve_gid {
                if xflags & XMIT_SAME_GID == 0 {
                    if proto < 30 {
                        prev.gid = r.i32()? as u32;
                    } else {
                        prev.gid = r.varint()? as u32;
                        if xflags & XMIT_GROUP_NAME_FOLLOWS != 0 {
                            let n = read_id_name(r)?;
                            if !n.is_empty() {
                                gid_name = Some((prev.gid, n));
                            }
                        }
                    }
                }
                entry.gid = Some(prev.gid);
            }

            // --- rdev ---
            let mode = entry.mode;
            if (o.preserve_devices && is_device(mode)) || (o.preserve_specials && is_special(mode) && proto < 31) {
                let (maj, min) = if proto < 28 {
                    if xflags & XMIT_SAME_RDEV_PRE28 == 0 {
                        prev.rdev_pre28 = r.i32()?;
                    }
                    split_dev_t(prev.rdev_pre28 as i64 as u64)
                } else {
                    if xflags & XMIT_SAME_RDEV_MAJOR == 0 {
                        prev.rdev_major = self.varint30(r)? as u32;
                    }
                    let min = if proto >= 30 {
                        r.varint()? as u32
                    } else if xflags & XMIT_RDEV_MINOR_8_PRE30 != 0 {
                        r.u8()? as u32
                    } else {
                        r.i32()? as u32
                    };
                    (prev.rdev_major, min)
                };
                if o.preserve_devices && is_device(mode) {
                    entry.extra_mut().rdev = Some((maj, min));
                }
                entry.size = 0;
            } else if is_device(mode) {
                entry.size = 0;
            } else if proto < 28 {
                prev.rdev_pre28 = 0;
            }

            // --- symlink target ---
            if o.preserve_links && is_lnk(mode) {
                let len = self.varint30(r)?;
                if len < 0 || len as usize > MAX_SYMLINK_TARGET {
                    return malformed(format!(
                        "file list: symlink target length {len} out of range for \"{}\"",
                        escape_name(name)
                    ));
                }
                let t = r.bytes(len as usize)?;
                if t.contains(&0) {
                    return malformed(format!("file list: NUL in symlink target of \"{}\"", escape_name(name)));
                }
                entry.extra_mut().link_target = Some(t.to_vec());
            }

            // --- hard-link dev/ino (protocol < 30) ---
            if proto < 30 && o.preserve_hard_links && (xflags & XMIT_HLINKED != 0 || (proto < 28 && is_reg(mode))) {
                if proto < 28 || xflags & XMIT_SAME_DEV_PRE30 == 0 {
                    prev.dev_pre30 = r.longint()?;
                }
                let ino = r.longint()?;
                devino = Some((prev.dev_pre30, ino));
            }

            // --- checksum ---
            if o.always_checksum && (is_reg(mode) || proto < 28) {
                let sum = r.bytes(o.checksum_len)?;
                if is_reg(mode) {
                    entry.extra_mut().checksum = Some(sum.to_vec());
                }
            }
        }

        // --- "." must be a directory ---
        if name == b"." && !entry.is_dir() {
            return malformed("file list: rejecting non-directory transfer-root entry \".\"");
        }

        // --- hard-link group ---
        let hlinked = o.preserve_hard_links
            && !entry.is_dir()
            && (xflags & XMIT_HLINKED != 0 || (proto < 28 && entry.is_reg()));
        if hlinked {
            if proto >= 30 {
                if xflags & XMIT_HLINK_FIRST != 0 {
                    entry.extra_mut().hlink = Some(HardLinkKey::Ndx(ndx_here as i32));
                    entry.hlink_first = true;
                } else if let Some(v) = first_hlink_ndx {
                    entry.extra_mut().hlink = Some(HardLinkKey::Ndx(v));
                }
            } else if let Some((dev, ino)) = devino {
                entry.extra_mut().hlink = Some(HardLinkKey::DevIno(dev, ino));
                entry.hlink_first = !self.cur.seen_devino.contains(&(dev, ino));
            }
            if entry.hlink().is_some() {
                entry.flags |= FLAG_HLINKED;
            }
        }
        if !hlinked {
            devino = None;
        }

        // --- directory flags ---
        if entry.is_dir() {
            if proto >= 30 {
                if xflags & XMIT_NO_CONTENT_DIR == 0 {
                    if xflags & XMIT_TOP_DIR != 0 {
                        entry.flags |= FLAG_TOP_DIR;
                    }
                    entry.flags |= FLAG_CONTENT_DIR;
                } else if xflags & XMIT_TOP_DIR != 0 {
                    entry.flags |= FLAG_IMPLIED_DIR;
                }
            } else if xflags & XMIT_TOP_DIR != 0 {
                prev.in_del_hier = o.recurse;
                entry.flags |= FLAG_TOP_DIR | FLAG_CONTENT_DIR;
            } else if prev.in_del_hier {
                entry.flags |= FLAG_CONTENT_DIR;
            }
        }

        Ok(Decoded { entry, prev, uid_name, gid_name, devino })
    }

    fn commit(&mut self, mut d: Decoded, name: Vec<u8>) {
        self.prev = d.prev;
        let start = self.cur.names.len();
        self.cur.names.extend_from_slice(&name);
        d.entry.name = Name::pending(start..self.cur.names.len());
        self.scratch = std::mem::replace(&mut self.prev_name, name);
        if let Some(n) = d.uid_name {
            self.cur.uid_names.push(n);
        }
        if let Some(n) = d.gid_name {
            self.cur.gid_names.push(n);
        }
        if let Some(di) = d.devino {
            self.cur.seen_devino.insert(di);
        }
        self.cur.entries.push(d.entry);
    }
}

/// Byte length + name (`uidlist.c recv_user_name`); length ≤ 255 by encoding.
fn read_id_name(r: &mut Reader<'_>) -> DResult<Vec<u8>> {
    // One length byte: at most MAX_ID_NAME.
    let len = r.u8()? as usize;
    Ok(r.bytes(len)?.to_vec())
}

/// Linux/glibc `major()`/`minor()` of a 64-bit dev_t.
fn split_dev_t(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn check_mode(mode: u32, name: &[u8]) -> DResult<()> {
    let ok_type = matches!(mode & S_IFMT, S_IFREG | S_IFDIR | S_IFLNK | S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK);
    if !ok_type || mode & !0o177777 != 0 {
        return malformed(format!("file list: invalid file mode 0{mode:o} for \"{}\"", escape_name(name)));
    }
    Ok(())
}

/// Split a name at its last `/`: (dirname, basename).
fn split_name(name: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (Some(&name[..i]), &name[i + 1..]),
        None => (None, name),
    }
}

/// Path safety for a name from the sender (stricter than `clean_fname`,
/// which would silently normalise `a//b` and `a/./b`).
pub fn check_name_safe(name: &[u8]) -> DResult<()> {
    let bad = |why: &str| malformed(format!("file list: unsafe pathname from sender ({why}): \"{}\"", escape_name(name)));
    if name.is_empty() {
        return bad("empty name");
    }
    if name.len() >= MAX_PATH {
        return bad("too long");
    }
    if name.contains(&0) {
        return bad("NUL byte");
    }
    if name == b"." {
        return Ok(());
    }
    if name[0] == b'/' {
        return bad("absolute path");
    }
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" => return bad("empty path component"),
            b"." => return bad("'.' component"),
            b".." => return bad("'..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// Render raw name bytes printable: non-printable bytes (and backslash) as
/// `\#ooo` like rsync's log escaping. Long names are cut.
pub fn escape_name(name: &[u8]) -> String {
    const SHOW: usize = 512;
    let mut s = String::new();
    for &b in name.iter().take(SHOW) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\#{b:03o}"));
        }
    }
    if name.len() > SHOW {
        s.push_str("...");
    }
    s
}

// ---------------------------------------------------------------------------
// Ordering (flist.c f_name_cmp), fast form
// ---------------------------------------------------------------------------
//
// rsync's `f_name_cmp` walks both names byte by byte through a small state
// machine (dirname, "/", basename, trailing "/" for directories), tracking
// whether each side is still a *path* (t_PATH: inside a directory name) or an
// *item* (t_ITEM: a non-directory's basename, or past the end). Restated:
//
// * every entry has a virtual string V and a position P in it where it stops
//   being a path:
//   - protocol < 29 (no t_PATH): V = name, P = 0 — plain byte order;
//   - protocol ≥ 29, non-directory: V = name, P = start of the basename;
//   - protocol ≥ 29, directory: V = name + "/", P = len(V) — except a
//     basename of "." (the transfer root), which is an item at once:
//     V = name without the ".", P = len(V);
// * let i be the length of the common prefix of V1 and V2. If P1 ≠ P2 and
//   min(P1, P2) ≤ i, the side that became an item first sorts first (the
//   state machine returns at that segment change); otherwise V1[i] vs V2[i]
//   decides, the end of a string counting as 0 (names hold no NUL).
//
// Equivalently: compare V1[..m] with V2[..m] for m = min(P1, P2); if equal,
// the smaller P sorts first; if the P are equal too, compare the rest. That is
// two memcmp-style slice comparisons, with P and the V split computed once per
// entry ([`SortMeta`]). The state-machine comparator is kept as a test-only
// reference (`name_cmp`) and a randomized test checks both agree.

/// Per-entry sort data, computed once (no borrow of the name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SortMeta {
    /// V = name[..real] followed by "/" iff `slash`.
    real: u32,
    slash: bool,
    /// Where the entry stops being a t_PATH (see above).
    item_at: u32,
}

impl SortMeta {
    fn new(name: &[u8], is_dir: bool, protocol: i32) -> SortMeta {
        let len = name.len() as u32;
        if protocol < 29 {
            return SortMeta { real: len, slash: false, item_at: 0 };
        }
        let base_at = match memrchr_slash(name) {
            Some(i) => i as u32 + 1,
            None => 0,
        };
        if !is_dir {
            SortMeta { real: len, slash: false, item_at: base_at }
        } else if &name[base_at as usize..] == b"." {
            SortMeta { real: len - 1, slash: false, item_at: len - 1 }
        } else {
            SortMeta { real: len, slash: true, item_at: len + 1 }
        }
    }
}

fn memrchr_slash(name: &[u8]) -> Option<usize> {
    name.iter().rposition(|&b| b == b'/')
}

/// Compare two virtual strings, each `real` bytes followed by an optional "/".
#[inline]
fn cmp_virtual(x: &[u8], xs: bool, y: &[u8], ys: bool) -> Ordering {
    let n = x.len().min(y.len());
    match x[..n].cmp(&y[..n]) {
        Ordering::Equal => {}
        o => return o,
    }
    // One side's real bytes are exhausted; what follows is at most one "/"
    // on that side against the other's remaining bytes (and "/").
    let (xr, yr) = (&x[n..], &y[n..]);
    match (xr.first(), yr.first()) {
        (None, None) => xs.cmp(&ys),
        (Some(&c), None) => {
            if !ys {
                return Ordering::Greater;
            }
            match c.cmp(&b'/') {
                Ordering::Equal => {
                    if xr.len() > 1 || xs {
                        Ordering::Greater
                    } else {
                        Ordering::Equal
                    }
                }
                o => o,
            }
        }
        (None, Some(&c)) => {
            if !xs {
                return Ordering::Less;
            }
            match b'/'.cmp(&c) {
                Ordering::Equal => {
                    if yr.len() > 1 || ys {
                        Ordering::Less
                    } else {
                        Ordering::Equal
                    }
                }
                o => o,
            }
        }
        (Some(_), Some(_)) => unreachable!("common prefix was exhausted"),
    }
}

/// V[..m] of an entry as (real bytes, trailing "/"), for m ≤ len(V).
#[inline]
fn v_prefix(name: &[u8], k: SortMeta, m: usize) -> (&[u8], bool) {
    let real = k.real as usize;
    if m <= real {
        (&name[..m], false)
    } else {
        (&name[..real], k.slash)
    }
}

/// V[m..] of an entry, for m ≤ len(V).
#[inline]
fn v_suffix(name: &[u8], k: SortMeta, m: usize) -> (&[u8], bool) {
    let real = k.real as usize;
    if m <= real {
        (&name[m..real], k.slash)
    } else {
        (&b""[..], false)
    }
}

/// rsync's `f_name_cmp` on precomputed metadata (see the section comment).
#[inline]
fn key_cmp(a: &[u8], ka: SortMeta, b: &[u8], kb: SortMeta) -> Ordering {
    let m = ka.item_at.min(kb.item_at) as usize;
    let (pa, sa) = v_prefix(a, ka, m);
    let (pb, sb) = v_prefix(b, kb, m);
    match cmp_virtual(pa, sa, pb, sb) {
        Ordering::Equal => {}
        o => return o,
    }
    if ka.item_at != kb.item_at {
        return ka.item_at.cmp(&kb.item_at);
    }
    let (ra, sa) = v_suffix(a, ka, m);
    let (rb, sb) = v_suffix(b, kb, m);
    cmp_virtual(ra, sa, rb, sb)
}

/// Compare two names like rsync's `f_name_cmp` (protocol ≥ 29: directories
/// compare with a trailing `/`, non-directories sort before directories at
/// the same level, `.` first; protocol < 29: plain byte order).
pub fn f_name_cmp(a: &FileEntry, b: &FileEntry, protocol: i32) -> Ordering {
    let ka = SortMeta::new(&a.name, a.is_dir(), protocol);
    let kb = SortMeta::new(&b.name, b.is_dir(), protocol);
    key_cmp(&a.name, ka, &b.name, kb)
}

// ---------------------------------------------------------------------------
// Sorting and duplicate removal (flist.c fsort / flist_sort_and_clean)
// ---------------------------------------------------------------------------

/// One entry being sorted: its name, sort metadata and received index.
struct SortItem<'a> {
    name: &'a [u8],
    meta: SortMeta,
    idx: u32,
}

/// The order rsync's `fsort` leaves `entries` in, as received indices.
/// rsync's merge sort is stable and `f_name_cmp` is a total preorder, so any
/// stable sort yields the same permutation; std's stable sort is adaptive
/// (a list that arrives sorted, as a sender's does, costs n comparisons).
fn sorted_order(entries: &[FileEntry], protocol: i32) -> Vec<u32> {
    let mut items: Vec<SortItem<'_>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| SortItem { name: &e.name, meta: SortMeta::new(&e.name, e.is_dir(), protocol), idx: i as u32 })
        .collect();
    items.sort_by(|x, y| key_cmp(x.name, x.meta, y.name, y.meta));
    items.into_iter().map(|it| it.idx).collect()
}

/// Sort received entries and tombstone duplicates the way a receiver's
/// `flist_sort_and_clean` does.
/// Also returns the slots holding directories (tombstoned ones included).
fn sort_and_clean(received: Vec<FileEntry>, protocol: i32) -> (Vec<Option<FileEntry>>, Vec<usize>) {
    let mut order = sorted_order(&received, protocol);
    let mut sorted = received;
    permute_in_place(&mut sorted, &mut order);
    drop(order);
    let n = sorted.len();
    let dir_slots: Vec<usize> = (0..n).filter(|&k| sorted[k].is_dir()).collect();
    if n == 0 {
        return (Vec::new(), dir_slots);
    }
    let metas: Vec<SortMeta> = sorted.iter().map(|e| SortMeta::new(&e.name, e.is_dir(), protocol)).collect();
    let cmp_slots = |s: &[FileEntry], x: usize, y: usize| key_cmp(&s[x].name, metas[x], &s[y].name, metas[y]);
    // Tombstoned slots keep their names during the pass, so a binary search
    // over [low, prev_i] still sees a sorted sequence.
    let mut active = vec![true; n];
    let mut low = 0usize;
    let mut prev_i = 0usize;
    for i in 1..n {
        let j: Option<usize> = if cmp_slots(&sorted, i, prev_i) == Ordering::Equal {
            Some(prev_i)
        } else if protocol >= 29 && sorted[i].is_dir() {
            // Does this directory duplicate a non-directory earlier on?
            find_nondir(&sorted, &metas, &active, low, prev_i, &sorted[i].name, protocol)
        } else {
            None
        };
        let Some(j) = j else {
            prev_i = i;
            continue;
        };
        // Keep a directory over a non-directory (it may have contents in the
        // list); otherwise keep the first one, merging vital dir flags.
        let (keep, drop) = if sorted[i].is_dir() {
            if !sorted[j].is_dir() {
                (i, j)
            } else {
                let dropped_flags = sorted[i].flags;
                let kept = &mut sorted[j];
                kept.flags |= dropped_flags & (FLAG_TOP_DIR | FLAG_CONTENT_DIR);
                kept.flags &= dropped_flags | !FLAG_IMPLIED_DIR;
                (j, i)
            }
        } else {
            (j, i)
        };
        active[drop] = false;
        if keep == i {
            if low == drop {
                let mut k = drop + 1;
                while k < i && !active[k] {
                    k += 1;
                }
                low = k;
            }
            prev_i = i;
        }
    }
    // Same size and layout (niche), so this collects in place.
    let mut slots: Vec<Option<FileEntry>> = sorted.into_iter().map(Some).collect();
    for (slot, a) in slots.iter_mut().zip(active) {
        if !a {
            *slot = None;
        }
    }
    (slots, dir_slots)
}

/// Reorder `v` so that `v[k]` becomes the old `v[order[k]]`, following the
/// permutation's cycles with swaps (no second copy of the list in memory).
/// `order` must be a permutation of `0..v.len()`; it is consumed (overwritten).
fn permute_in_place<T>(v: &mut [T], order: &mut [u32]) {
    const DONE: u32 = u32::MAX;
    debug_assert_eq!(v.len(), order.len());
    for i in 0..v.len() {
        if order[i] == DONE {
            continue;
        }
        let mut j = i;
        loop {
            let src = order[j] as usize;
            order[j] = DONE;
            if src == i {
                break;
            }
            v.swap(j, src);
            j = src;
        }
    }
}

/// `flist_find` for a non-directory named `name` among active slots in
/// `[low, high]` (sorted; tombstoned slots still hold their names).
fn find_nondir(
    sorted: &[FileEntry],
    metas: &[SortMeta],
    active: &[bool],
    low: usize,
    high: usize,
    name: &[u8],
    protocol: i32,
) -> Option<usize> {
    if low > high {
        return None;
    }
    let key = SortMeta::new(name, false, protocol);
    let range = low..high + 1;
    let cmp_key = |k: usize| key_cmp(&sorted[k].name, metas[k], name, key);
    // First index in range with cmp(slot, key) >= 0.
    let (mut lo, mut hi) = (range.start, range.end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if cmp_key(mid) == Ordering::Less {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut k = lo;
    while k < range.end && cmp_key(k) == Ordering::Equal {
        if active[k] {
            return Some(k);
        }
        k += 1;
    }
    None
}

// ---------------------------------------------------------------------------
// Test-only reference: the byte-walking comparator and rsync's merge sort,
// as they were before the fast form above (the randomized test compares).
// ---------------------------------------------------------------------------

#[cfg(test)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seg {
    Dir,
    Slash,
    Base,
    Trailing,
}

#[cfg(test)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Sorts first at a given level.
    Item,
    /// A path continuing below this level (directory name); sorts after items.
    Path,
}

#[cfg(test)]
/// One side of the comparison: walks dirname, "/", basename, and for
/// directories a trailing "/", tracking whether it is still a path.
struct Walker<'a> {
    base: &'a [u8],
    is_dir: bool,
    /// `Path` if protocol ≥ 29, else `Item` (plain byte order).
    path_kind: Kind,
    seg: Seg,
    kind: Kind,
    cur: &'a [u8],
}

#[cfg(test)]
impl<'a> Walker<'a> {
    fn new(dir: Option<&'a [u8]>, base: &'a [u8], is_dir: bool, path_kind: Kind) -> Self {
        let mut w = Walker { base, is_dir, path_kind, seg: Seg::Dir, kind: path_kind, cur: b"" };
        match dir {
            Some(d) => w.cur = d,
            None => w.enter_base(),
        }
        w
    }

    fn enter_base(&mut self) {
        self.kind = if self.is_dir { self.path_kind } else { Kind::Item };
        if self.kind == Kind::Path && self.base == b"." {
            // The "." directory compares before everything in its level.
            self.kind = Kind::Item;
            self.seg = Seg::Trailing;
            self.cur = b"";
        } else {
            self.seg = Seg::Base;
            self.cur = self.base;
        }
    }

    fn head(&self) -> u8 {
        self.cur.first().copied().unwrap_or(0)
    }

    fn bump(&mut self) {
        if !self.cur.is_empty() {
            self.cur = &self.cur[1..];
        }
    }
}

#[cfg(test)]
/// The state-machine `f_name_cmp` (test-only reference).
fn name_cmp(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool, protocol: i32) -> Ordering {
    let path_kind = if protocol >= 29 { Kind::Path } else { Kind::Item };
    let (mut da, ba) = split_name(a);
    let (mut db, bb) = split_name(b);
    // Same directory: compare from the basenames (C: shared dirname pointer).
    if da.is_some() && da == db {
        da = None;
        db = None;
    }
    let mut w1 = Walker::new(da, ba, a_dir, path_kind);
    let mut w2 = Walker::new(db, bb, b_dir, path_kind);
    if w1.kind != w2.kind {
        return w1.kind.cmp(&w2.kind);
    }
    loop {
        if w1.cur.is_empty() {
            match w1.seg {
                Seg::Dir => {
                    w1.seg = Seg::Slash;
                    w1.cur = b"/";
                }
                Seg::Slash => w1.enter_base(),
                Seg::Base => {
                    w1.seg = Seg::Trailing;
                    if w1.kind == Kind::Path {
                        w1.cur = b"/";
                    } else {
                        w1.kind = Kind::Item;
                    }
                }
                Seg::Trailing => w1.kind = Kind::Item,
            }
            if !w2.cur.is_empty() && w1.kind != w2.kind {
                return w1.kind.cmp(&w2.kind);
            }
        }
        if w2.cur.is_empty() {
            match w2.seg {
                Seg::Dir => {
                    w2.seg = Seg::Slash;
                    w2.cur = b"/";
                }
                Seg::Slash => w2.enter_base(),
                Seg::Base if w2.kind == Kind::Path => {
                    w2.seg = Seg::Trailing;
                    w2.cur = b"/";
                }
                Seg::Base | Seg::Trailing => {
                    w2.seg = Seg::Trailing;
                    if w1.cur.is_empty() {
                        return Ordering::Equal;
                    }
                    w2.kind = Kind::Item;
                }
            }
            if w1.kind != w2.kind {
                return w1.kind.cmp(&w2.kind);
            }
        }
        let (c1, c2) = (w1.head(), w2.head());
        if c1 != c2 {
            return c1.cmp(&c2);
        }
        w1.bump();
        w2.bump();
    }
}

#[cfg(test)]
/// Stable top-down merge sort with rsync's split (first half = n/2), so the
/// result matches `fsort` even for entries that compare equal.
fn merge_sort<F: FnMut(u32, u32) -> Ordering>(v: &mut [u32], tmp: &mut Vec<u32>, cmp: &mut F) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    merge_sort(&mut v[..n1], tmp, cmp);
    merge_sort(&mut v[n1..], tmp, cmp);
    // Skip the left-run prefix that is already in place.
    let mut start = 0;
    while start < n1 && cmp(v[start], v[n1]) != Ordering::Greater {
        start += 1;
    }
    if start == n1 {
        return;
    }
    tmp.clear();
    tmp.extend_from_slice(&v[start..n1]);
    let (mut i, mut j, mut k) = (0usize, n1, start);
    while i < tmp.len() && j < n {
        if cmp(tmp[i], v[j]) != Ordering::Greater {
            v[k] = tmp[i];
            i += 1;
        } else {
            v[k] = v[j];
            j += 1;
        }
        k += 1;
    }
    while i < tmp.len() {
        v[k] = tmp[i];
        i += 1;
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::put;
    use std::collections::HashMap;

    // ---------------------------------------------------------------
    // A test-only sender mirroring flist.c send_file_entry.
    // ---------------------------------------------------------------

    #[derive(Clone, Debug, Default)]
    struct TF {
        name: Vec<u8>,
        mode: u32,
        size: i64,
        mtime: i64,
        nsec: u32,
        uid: u32,
        gid: u32,
        uid_name: Option<Vec<u8>>,
        gid_name: Option<Vec<u8>>,
        rdev: (u32, u32),
        link: Vec<u8>,
        /// (dev, ino) when hard-linked
        hl: Option<(i64, i64)>,
        sum: Vec<u8>,
        /// sender FLAG_TOP_DIR / FLAG_CONTENT_DIR / FLAG_IMPLIED_DIR
        top: bool,
        content: bool,
        implied: bool,
    }

    fn tf(name: &str, mode: u32) -> TF {
        TF {
            name: name.as_bytes().to_vec(),
            mode,
            size: if is_reg(mode) { 1000 } else { 0 },
            mtime: 1_700_000_000,
            uid: 1000,
            gid: 1000,
            content: is_dir(mode),
            ..TF::default()
        }
    }

    fn makedev(maj: u32, min: u32) -> u64 {
        let (maj, min) = (maj as u64, min as u64);
        ((maj & 0xffff_f000) << 32) | ((maj & 0xfff) << 8) | ((min & 0xffff_ff00) << 12) | (min & 0xff)
    }

    #[derive(Default)]
    struct Enc {
        mode: u32,
        mtime: i64,
        rdev_pre28: u64,
        rdev_major: u32,
        uid: u32,
        gid: u32,
        dev: i64,
        lastname: Vec<u8>,
        idev: HashMap<(i64, i64), i32>,
        names_sent: std::collections::HashSet<(bool, u32)>,
    }

    impl Enc {
        fn varint30(o: &FlistOptions, out: &mut Vec<u8>, v: i32) {
            if o.protocol >= 30 {
                put::varint(out, v)
            } else {
                put::i32(out, v)
            }
        }

        fn entry(&mut self, o: &FlistOptions, out: &mut Vec<u8>, f: &TF, ndx: i32, first_ndx: i32) {
            let p = o.protocol;
            let varint = o.varint_flags && p >= 30;
            let inc = o.inc_recurse && p >= 30;
            let mut x: u32 = if is_dir(f.mode) {
                if p >= 30 {
                    if f.content {
                        if f.top {
                            XMIT_TOP_DIR
                        } else {
                            0
                        }
                    } else if f.implied {
                        XMIT_TOP_DIR | XMIT_NO_CONTENT_DIR
                    } else {
                        XMIT_NO_CONTENT_DIR
                    }
                } else if f.top {
                    XMIT_TOP_DIR
                } else {
                    0
                }
            } else {
                0
            };
            if f.mode == self.mode {
                x |= XMIT_SAME_MODE;
            } else {
                self.mode = f.mode;
            }
            let tmp_rdev = makedev(f.rdev.0, f.rdev.1);
            if o.preserve_devices && is_device(f.mode) {
                if p < 28 {
                    if tmp_rdev == self.rdev_pre28 {
                        x |= XMIT_SAME_RDEV_PRE28;
                    } else {
                        self.rdev_pre28 = tmp_rdev;
                    }
                } else {
                    if f.rdev.0 == self.rdev_major {
                        x |= XMIT_SAME_RDEV_MAJOR;
                    } else {
                        self.rdev_major = f.rdev.0;
                    }
                    if p < 30 && f.rdev.1 <= 0xff {
                        x |= XMIT_RDEV_MINOR_8_PRE30;
                    }
                }
            } else if o.preserve_specials && is_special(f.mode) && p < 31 {
                if p < 28 {
                    x |= XMIT_SAME_RDEV_PRE28;
                } else {
                    x |= XMIT_SAME_RDEV_MAJOR;
                    if p < 30 {
                        x |= XMIT_RDEV_MINOR_8_PRE30;
                    }
                }
            } else if p < 28 {
                self.rdev_pre28 = 0;
            }
            let mut uname = None;
            if !o.preserve_uid || (f.uid == self.uid && !self.lastname.is_empty()) {
                x |= XMIT_SAME_UID;
            } else {
                self.uid = f.uid;
                if !o.numeric_ids && inc && f.uid_name.is_some() && self.names_sent.insert((true, f.uid)) {
                    x |= XMIT_USER_NAME_FOLLOWS;
                    uname = f.uid_name.clone();
                }
            }
            let mut gname = None;
            if !o.preserve_gid || (f.gid == self.gid && !self.lastname.is_empty()) {
                x |= XMIT_SAME_GID;
            } else {
                self.gid = f.gid;
                if !o.numeric_ids && inc && f.gid_name.is_some() && self.names_sent.insert((false, f.gid)) {
                    x |= XMIT_GROUP_NAME_FOLLOWS;
                    gname = f.gid_name.clone();
                }
            }
            if f.mtime == self.mtime {
                x |= XMIT_SAME_TIME;
            } else {
                self.mtime = f.mtime;
            }
            if f.nsec != 0 && p >= 31 {
                x |= XMIT_MOD_NSEC;
            }
            let mut first_hlink_ndx = -1;
            let hl = if o.preserve_hard_links && !is_dir(f.mode) { f.hl } else { None };
            if let Some((dev, ino)) = hl {
                if p >= 30 {
                    match self.idev.get(&(dev, ino)) {
                        Some(&n) => first_hlink_ndx = n,
                        None => {
                            self.idev.insert((dev, ino), first_ndx + ndx);
                            x |= XMIT_HLINK_FIRST;
                        }
                    }
                } else if dev == self.dev {
                    if p >= 28 {
                        x |= XMIT_SAME_DEV_PRE30;
                    }
                } else {
                    self.dev = dev;
                }
                x |= XMIT_HLINKED;
            }
            let mut l1 = 0;
            while l1 < self.lastname.len() && l1 < f.name.len() && f.name[l1] == self.lastname[l1] && l1 < 255 {
                l1 += 1;
            }
            let l2 = f.name.len() - l1;
            if l1 > 0 {
                x |= XMIT_SAME_NAME;
            }
            if l2 > 255 {
                x |= XMIT_LONG_NAME;
            }
            if varint {
                put::varint(out, if x != 0 { x as i32 } else { XMIT_EXTENDED_FLAGS as i32 });
            } else if p >= 28 {
                if x == 0 && !is_dir(f.mode) {
                    x |= XMIT_TOP_DIR;
                }
                if x & 0xff00 != 0 || x == 0 {
                    x |= XMIT_EXTENDED_FLAGS;
                    put::u16(out, x as u16);
                } else {
                    put::u8(out, x as u8);
                }
            } else {
                if x & 0xff == 0 {
                    x |= if is_dir(f.mode) { XMIT_LONG_NAME } else { XMIT_TOP_DIR };
                }
                put::u8(out, x as u8);
            }
            if x & XMIT_SAME_NAME != 0 {
                put::u8(out, l1 as u8);
            }
            if x & XMIT_LONG_NAME != 0 {
                Self::varint30(o, out, l2 as i32);
            } else {
                put::u8(out, l2 as u8);
            }
            out.extend_from_slice(&f.name[l1..]);
            self.lastname = f.name.clone();
            if first_hlink_ndx >= 0 {
                put::varint(out, first_hlink_ndx);
                if first_hlink_ndx >= first_ndx {
                    return;
                }
            }
            if p >= 30 {
                put::varlong(out, f.size, 3)
            } else {
                put::longint(out, f.size)
            }
            if x & XMIT_SAME_TIME == 0 {
                if p >= 30 {
                    put::varlong(out, f.mtime, 4)
                } else {
                    put::i32(out, f.mtime as i32)
                }
            }
            if x & XMIT_MOD_NSEC != 0 {
                put::varint(out, f.nsec as i32);
            }
            if x & XMIT_SAME_MODE == 0 {
                put::i32(out, f.mode as i32);
            }
            if o.preserve_uid && x & XMIT_SAME_UID == 0 {
                if p < 30 {
                    put::i32(out, f.uid as i32)
                } else {
                    put::varint(out, f.uid as i32);
                    if let Some(n) = &uname {
                        put::u8(out, n.len() as u8);
                        out.extend_from_slice(n);
                    }
                }
            }
            if o.preserve_gid && x & XMIT_SAME_GID == 0 {
                if p < 30 {
                    put::i32(out, f.gid as i32)
                } else {
                    put::varint(out, f.gid as i32);
                    if let Some(n) = &gname {
                        put::u8(out, n.len() as u8);
                        out.extend_from_slice(n);
                    }
                }
            }
            if (o.preserve_devices && is_device(f.mode)) || (o.preserve_specials && is_special(f.mode) && p < 31) {
                let (maj, min) = if is_device(f.mode) { f.rdev } else { (self.rdev_major, 0) };
                if p < 28 {
                    if x & XMIT_SAME_RDEV_PRE28 == 0 {
                        put::i32(out, self.rdev_pre28 as i32);
                    }
                } else {
                    if x & XMIT_SAME_RDEV_MAJOR == 0 {
                        Self::varint30(o, out, maj as i32);
                    }
                    if p >= 30 {
                        put::varint(out, min as i32)
                    } else if x & XMIT_RDEV_MINOR_8_PRE30 != 0 {
                        put::u8(out, min as u8)
                    } else {
                        put::i32(out, min as i32)
                    }
                }
            }
            if o.preserve_links && is_lnk(f.mode) {
                Self::varint30(o, out, f.link.len() as i32);
                out.extend_from_slice(&f.link);
            }
            if let (Some((_, ino)), true) = (hl, p < 30) {
                if x & XMIT_SAME_DEV_PRE30 == 0 || p < 28 {
                    put::longint(out, self.dev + 1);
                }
                put::longint(out, ino);
            }
            if o.always_checksum && (is_reg(f.mode) || p < 28) {
                if is_reg(f.mode) {
                    let mut sum = f.sum.clone();
                    sum.resize(o.checksum_len, 0);
                    out.extend_from_slice(&sum);
                } else {
                    out.resize(out.len() + o.checksum_len, 0);
                }
            }
        }

        fn end(&mut self, o: &FlistOptions, out: &mut Vec<u8>, io_error: i32) {
            let safe = (o.safe_flist && o.protocol >= 30) || o.protocol >= 31;
            if o.varint_flags && o.protocol >= 30 {
                put::varint(out, 0);
                put::varint(out, io_error);
            } else if io_error != 0 && safe {
                put::u16(out, (XMIT_EXTENDED_FLAGS | XMIT_IO_ERROR_ENDLIST) as u16);
                put::varint(out, io_error);
            } else {
                put::u8(out, 0);
            }
        }

        fn id_lists(o: &FlistOptions, out: &mut Vec<u8>, uids: &[(u32, &str)], gids: &[(u32, &str)], id0: (&str, &str)) {
            let id0n = o.id0_names && o.protocol >= 30;
            for (want, list, zero) in [(o.preserve_uid, uids, id0.0), (o.preserve_gid, gids, id0.1)] {
                if !want {
                    continue;
                }
                for (id, n) in list {
                    Self::varint30(o, out, *id as i32);
                    put::u8(out, n.len() as u8);
                    out.extend_from_slice(n.as_bytes());
                }
                Self::varint30(o, out, 0);
                if id0n {
                    put::u8(out, zero.len() as u8);
                    out.extend_from_slice(zero.as_bytes());
                }
            }
        }
    }

    /// Encode a whole non-incremental list the way the sender does.
    fn encode_list(o: &FlistOptions, enc: &mut Enc, files: &[TF], ndx_start: i32, io_error: i32, with_tail: bool) -> Vec<u8> {
        let mut out = vec![];
        for (i, f) in files.iter().enumerate() {
            enc.entry(o, &mut out, f, i as i32, ndx_start);
        }
        enc.end(o, &mut out, io_error);
        if with_tail {
            if !o.inc_recurse && !o.numeric_ids {
                Enc::id_lists(o, &mut out, &[(1000, "alice"), (1001, "bob")], &[(1000, "staff")], ("root", "wheel"));
            }
            if o.protocol < 30 {
                put::i32(&mut out, io_error);
            }
        }
        out
    }

    fn snapshot(d: &FlistDecoder) -> String {
        format!("{:?} {:?} {:?} {:?} {:?}", d.prev, d.phase, d.cur.entries, d.cur.io_error, d.cur.uid_names)
    }

    /// Feed `buf` item by item; for every item every shorter prefix must be
    /// Incomplete without state change. Returns the list and bytes used.
    fn decode_checked(dec: &mut FlistDecoder, buf: &[u8]) -> (FileList, usize) {
        let mut pos = 0;
        loop {
            let snap = snapshot(dec);
            let mut k = 0;
            loop {
                assert!(pos + k <= buf.len(), "ran out of input at {pos}+{k}");
                match dec.step(&buf[pos..pos + k]) {
                    Err(DecodeError::Incomplete) => {
                        assert_eq!(snapshot(dec), snap, "state changed on Incomplete at {pos}+{k}");
                        k += 1;
                    }
                    Err(e) => panic!("unexpected error at {pos}+{k}: {e}"),
                    Ok((prog, used)) => {
                        assert_eq!(used, k);
                        pos += used;
                        match prog {
                            FlistProgress::Entry => break,
                            FlistProgress::Done(l) => return (l, pos),
                        }
                    }
                }
            }
        }
    }

    fn decode_fast(dec: &mut FlistDecoder, buf: &[u8]) -> Result<(FileList, usize), DecodeError> {
        let mut pos = 0;
        loop {
            let (prog, used) = dec.step(&buf[pos..])?;
            pos += used;
            if let FlistProgress::Done(l) = prog {
                return Ok((l, pos));
            }
        }
    }

    fn all_opts(p: i32, varint: bool) -> FlistOptions {
        FlistOptions {
            varint_flags: varint,
            safe_flist: true,
            id0_names: true,
            preserve_links: true,
            preserve_uid: true,
            preserve_gid: true,
            preserve_devices: true,
            preserve_specials: true,
            preserve_hard_links: true,
            always_checksum: true,
            checksum_len: 16,
            ..FlistOptions::new(p)
        }
    }

    fn sample_files(p: i32) -> Vec<TF> {
        let mut v = vec![];
        let mut root = tf(".", S_IFDIR | 0o755);
        root.top = true;
        v.push(root);
        let mut a = tf("a.txt", S_IFREG | 0o644);
        a.sum = vec![0xAA; 16];
        a.hl = Some((5, 100));
        a.nsec = 123_456_789;
        v.push(a);
        let mut b = tf("b", S_IFDIR | 0o755);
        b.uid = 1001;
        b.mtime = 1_600_000_000;
        v.push(b);
        let mut c = tf("b/c", S_IFREG | 0o600);
        c.size = 5_000_000_000;
        c.sum = vec![0xCC; 16];
        c.gid = 1001;
        v.push(c);
        let mut l = tf("b/link", S_IFLNK | 0o777);
        l.link = b"../a.txt".to_vec();
        l.mtime = 0;
        v.push(l);
        let mut d = tf("b/hard", S_IFREG | 0o644);
        d.sum = vec![0xAA; 16];
        d.hl = Some((5, 100));
        d.nsec = 123_456_789;
        v.push(d);
        let mut cdev = tf("dev/tty", S_IFCHR | 0o620);
        cdev.rdev = (4, 300);
        v.push(cdev);
        let mut bdev = tf("dev/sda", S_IFBLK | 0o660);
        bdev.rdev = (8, 0);
        v.push(bdev);
        let mut bdev2 = tf("dev/sda1", S_IFBLK | 0o660);
        bdev2.rdev = (8, 1);
        v.push(bdev2);
        let fifo = tf("dev/fifo", S_IFIFO | 0o644);
        v.push(fifo);
        let sock = tf("dev/sock", S_IFSOCK | 0o755);
        v.push(sock);
        let long = format!("b/{}", "x".repeat(300));
        let mut lf = tf(&long, S_IFREG | 0o644);
        lf.sum = vec![1; 16];
        lf.mtime = -5; // pre-epoch (protocol ≥ 30 only)
        if p < 30 {
            lf.mtime = 3_000_000_000; // > i32::MAX, read as unsigned
        }
        v.push(lf);
        // non-UTF-8 name
        let mut nu = tf("b/\u{e9}", S_IFREG | 0o644);
        nu.name = b"b/\xff\xfe".to_vec();
        nu.sum = vec![2; 16];
        v.push(nu);
        let mut dev_dir = tf("dev", S_IFDIR | 0o755);
        dev_dir.content = true;
        v.insert(6, dev_dir);
        // A second file sharing the hard link group of a.txt earlier on.
        let mut e = tf("e", S_IFREG | 0o644);
        e.sum = vec![0xEE; 16];
        e.hl = Some((6, 7));
        v.push(e);
        let mut e2 = tf("b/e2", S_IFREG | 0o644);
        e2.sum = vec![0xEE; 16];
        e2.hl = Some((6, 7));
        v.push(e2);
        if p < 28 {
            // Protocol < 28: every regular file carries dev/ino under -H.
            for (i, f) in v.iter_mut().enumerate() {
                if is_reg(f.mode) && f.hl.is_none() {
                    f.hl = Some((9, 1000 + i as i64));
                }
            }
        }
        v
    }

    fn check_entry(o: &FlistOptions, e: &FileEntry, f: &TF) {
        let p = o.protocol;
        assert_eq!(e.mode, f.mode, "{}", escape_name(&f.name));
        let size = if is_device(f.mode) || (is_special(f.mode) && p < 31) { 0 } else { f.size };
        assert_eq!(e.size, size, "{}", escape_name(&f.name));
        assert_eq!(e.mtime, f.mtime, "{}", escape_name(&f.name));
        assert_eq!(e.mtime_nsec, if p >= 31 { f.nsec } else { 0 });
        assert_eq!(e.uid, o.preserve_uid.then_some(f.uid));
        assert_eq!(e.gid, o.preserve_gid.then_some(f.gid));
        assert_eq!(e.rdev(), (o.preserve_devices && is_device(f.mode)).then_some(f.rdev), "{}", escape_name(&f.name));
        assert_eq!(e.link_target().map(<[u8]>::to_vec), (o.preserve_links && is_lnk(f.mode)).then(|| f.link.clone()));
        let mut sum = f.sum.clone();
        sum.resize(o.checksum_len, 0);
        assert_eq!(e.checksum().map(<[u8]>::to_vec), (o.always_checksum && is_reg(f.mode)).then_some(sum));
        assert_eq!(e.hlink().is_some(), o.preserve_hard_links && f.hl.is_some() && !is_dir(f.mode));
        if is_dir(f.mode) {
            if f.top {
                assert_ne!(e.flags & FLAG_TOP_DIR, 0);
            }
            assert_ne!(e.flags & FLAG_CONTENT_DIR, 0, "{}", escape_name(&f.name));
        }
    }

    fn roundtrip(o: FlistOptions) {
        let p = o.protocol;
        let files = sample_files(p);
        let mut enc = Enc::default();
        let buf = encode_list(&o, &mut enc, &files, 0, 0, true);
        let mut dec = FlistDecoder::new(o.clone());
        dec.begin_list(0, None);
        let (list, used) = decode_checked(&mut dec, &buf);
        assert_eq!(used, buf.len(), "proto {p}");
        assert_eq!(list.entries.len(), files.len());
        assert!(list.entries.iter().all(|e| e.is_some()));
        let on = FlistDecoder::new(o.clone()).opts;
        for f in &files {
            let e = list.entries.iter().flatten().find(|e| e.name == f.name).unwrap();
            check_entry(&on, e, f);
        }
        // Sorted per f_name_cmp.
        for w in list.entries.windows(2) {
            let (a, b) = (w[0].as_ref().unwrap(), w[1].as_ref().unwrap());
            assert_eq!(f_name_cmp(a, b, p), Ordering::Less, "{} !< {}", escape_name(&a.name), escape_name(&b.name));
        }
        if !on.inc_recurse && !on.numeric_ids && on.preserve_uid {
            assert_eq!(list.uid_names[..2], [(1000, b"alice".to_vec()), (1001, b"bob".to_vec())]);
            if on.id0_names {
                assert_eq!(list.uid_names[2], (0, b"root".to_vec()));
                assert_eq!(list.gid_names[1], (0, b"wheel".to_vec()));
            }
        }
        // Hard-link groups.
        let by = |n: &str| list.entries.iter().flatten().find(|e| e.name == n.as_bytes()).unwrap().clone();
        if on.preserve_hard_links {
            let (a, h) = (by("a.txt"), by("b/hard"));
            assert_eq!(a.hlink(), h.hlink());
            assert!(a.hlink_first && !h.hlink_first);
            let (e, e2) = (by("e"), by("b/e2"));
            assert_eq!(e.hlink(), e2.hlink());
            assert_ne!(a.hlink(), e.hlink());
            assert!(e.hlink_first && !e2.hlink_first);
            if p >= 30 {
                // Leader index = received position.
                assert_eq!(a.hlink(), Some(HardLinkKey::Ndx(1)));
            } else {
                assert_eq!(a.hlink(), Some(HardLinkKey::DevIno(6, 100)));
            }
        }
        assert!(!dec.in_list());
    }

    #[test]
    fn roundtrip_every_protocol() {
        for p in 27..=32 {
            for varint in [false, true] {
                if varint && p < 30 {
                    continue;
                }
                roundtrip(all_opts(p, varint));
                let mut o = all_opts(p, varint);
                o.preserve_uid = false;
                o.always_checksum = false;
                o.preserve_hard_links = false;
                roundtrip(o);
                let mut o = all_opts(p, varint);
                o.preserve_devices = false;
                o.preserve_specials = false;
                o.preserve_links = false;
                o.numeric_ids = true;
                o.id0_names = false;
                o.checksum_len = 20;
                roundtrip(o);
                let mut o = all_opts(p, varint);
                o.preserve_gid = false;
                o.id0_names = false;
                o.checksum_len = 8;
                roundtrip(o);
            }
        }
    }

    #[test]
    fn io_error_in_every_end_mode() {
        for p in 27..=32 {
            for varint in [false, true] {
                for safe in [false, true] {
                    if varint && p < 30 {
                        continue;
                    }
                    let mut o = FlistOptions::new(p);
                    o.varint_flags = varint;
                    o.safe_flist = safe;
                    let files = vec![tf("x", S_IFREG | 0o644)];
                    let buf = encode_list(&o, &mut Enc::default(), &files, 0, 3, true);
                    let mut dec = FlistDecoder::new(o.clone());
                    dec.begin_list(0, None);
                    let (l, used) = decode_checked(&mut dec, &buf);
                    assert_eq!(used, buf.len());
                    let carried = p < 30 || varint || safe || p >= 31;
                    assert_eq!(l.io_error, if carried { 3 } else { 0 }, "p{p} varint {varint} safe {safe}");
                }
            }
        }
        // 0x1004 without a safe flist is an error.
        let o = FlistOptions::new(30);
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        assert!(matches!(dec.step(&[0x04, 0x10, 0x01]), Err(DecodeError::Malformed(_))));
        // Masking of io_error bits.
        let mut o = FlistOptions::new(31);
        o.varint_flags = true;
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        let (l, _) = decode_fast(&mut dec, &[0x00, 0x7F]).unwrap();
        assert_eq!(l.io_error, 7);
    }

    #[test]
    fn empty_list() {
        for p in 27..=32 {
            let o = FlistOptions::new(p);
            let buf = encode_list(&o, &mut Enc::default(), &[], 0, 0, true);
            let mut dec = FlistDecoder::new(o);
            dec.begin_list(0, None);
            let (l, used) = decode_checked(&mut dec, &buf);
            assert_eq!(used, buf.len());
            assert!(l.entries.is_empty());
        }
    }

    // ---------------------------------------------------------------
    // Ordering
    // ---------------------------------------------------------------

    /// Issue 3: one entry per file stays small. The rare fields live in the
    /// boxed side table, which a plain file or directory does not allocate.
    #[test]
    fn file_entry_is_compact() {
        assert!(std::mem::size_of::<FileEntry>() <= 72, "FileEntry is {} bytes", std::mem::size_of::<FileEntry>());
        assert!(std::mem::size_of::<Option<FileEntry>>() <= 72, "Option<FileEntry> is {} bytes", std::mem::size_of::<Option<FileEntry>>());
        let o = real_opts(31);
        let files = [tf("d", S_IFDIR | 0o755), tf("d/a.tar.gz", S_IFREG | 0o644), TF { link: b"a.tar.gz".to_vec(), ..tf("d/l", S_IFLNK | 0o777) }];
        let buf = encode_list(&o, &mut Enc::default(), &files, 0, 0, true);
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        let (list, _) = decode_checked(&mut dec, &buf);
        let by = |n: &[u8]| list.entries.iter().flatten().find(|e| e.name == n).unwrap();
        assert!(by(b"d").extra.is_none() && by(b"d/a.tar.gz").extra.is_none(), "a plain entry allocated its side table");
        assert_eq!(by(b"d/l").link_target(), Some(&b"a.tar.gz"[..]));
    }

    /// Issue 3: a decoded list's names live in one shared chunk (no heap
    /// allocation per entry), each entry reads back its own name, and the
    /// chunk is exactly as long as the names (no spare capacity kept).
    #[test]
    fn decoded_names_share_one_chunk() {
        for p in [29, 30, 31, 32] {
            let o = real_opts(p);
            let mut files: Vec<TF> = vec![tf("authors", S_IFDIR | 0o755), tf("authors/id", S_IFDIR | 0o755)];
            for i in 0..300 {
                files.push(tf(&format!("authors/id/Pkg-{i:03}.tar.gz"), S_IFREG | 0o644));
            }
            let buf = encode_list(&o, &mut Enc::default(), &files, 0, 0, true);
            let mut dec = FlistDecoder::new(o);
            dec.begin_list(0, None);
            let (list, _) = decode_checked(&mut dec, &buf);
            let names: Vec<&Name> = list.entries.iter().flatten().map(|e| &e.name).collect();
            assert_eq!(names.len(), files.len(), "protocol {p}");
            for n in &names {
                assert!(n.shares_chunk_with(names[0]), "protocol {p}: {n:?} has a chunk of its own");
                assert!(files.iter().any(|f| f.name == n.as_bytes()), "protocol {p}: {n:?} was not sent");
            }
            let total: usize = files.iter().map(|f| f.name.len()).sum();
            assert_eq!(names[0].chunk_len(), total, "protocol {p}: chunk holds more than the names");
        }
    }

    fn ent(name: &str, dir: bool) -> FileEntry {
        FileEntry::new(name.as_bytes().to_vec(), if dir { S_IFDIR | 0o755 } else { S_IFREG | 0o644 })
    }

    fn names_sorted(list: &[(&str, bool)], p: i32) -> Vec<String> {
        let v: Vec<FileEntry> = list.iter().map(|(n, d)| ent(n, *d)).collect();
        sort_and_clean(v, p)
            .0
            .into_iter()
            .map(|e| match e {
                Some(e) => format!("{}{}", String::from_utf8_lossy(&e.name), if e.is_dir() { "/" } else { "" }),
                None => "<none>".into(),
            })
            .collect()
    }

    #[test]
    fn order_protocol_29_plus() {
        let input = [
            ("b", true),
            ("a", true),
            ("z", false),
            (".", true),
            ("a/x", false),
            ("a/sub", true),
            ("a/sub/y", false),
            ("a.txt", false),
            ("a-b", false),
            ("ab", true),
            ("a/zz", false),
            ("b/.hidden", false),
        ];
        for p in 29..=32 {
            assert_eq!(
                names_sorted(&input, p),
                [
                    "./", "a-b", "a.txt", "z", "a/", "a/x", "a/zz", "a/sub/", "a/sub/y", "ab/", "b/", "b/.hidden"
                ]
            );
        }
    }

    #[test]
    fn order_protocol_28_plain_bytes() {
        let input = [("b", true), ("a", true), ("z", false), (".", true), ("a/x", false), ("a.txt", false), ("a-b", false)];
        assert_eq!(names_sorted(&input, 28), ["./", "a/", "a-b", "a.txt", "a/x", "b/", "z"]);
        assert_eq!(names_sorted(&input, 27), ["./", "a/", "a-b", "a.txt", "a/x", "b/", "z"]);
    }

    #[test]
    fn order_unsigned_bytes() {
        let mut a = ent("x", false);
        a.name = b"\xff".to_vec().into();
        let b = ent("z", false);
        assert_eq!(f_name_cmp(&a, &b, 31), Ordering::Greater);
        assert_eq!(f_name_cmp(&b, &a, 31), Ordering::Less);
    }

    #[test]
    fn dir_and_file_same_name_not_equal_at_29() {
        let (d, f) = (ent("a", true), ent("a", false));
        assert_eq!(f_name_cmp(&f, &d, 29), Ordering::Less);
        assert_eq!(f_name_cmp(&f, &d, 28), Ordering::Equal);
        assert_eq!(f_name_cmp(&ent(".", true), &ent("a", false), 31), Ordering::Less);
    }

    #[test]
    fn duplicates_become_tombstones() {
        // Same file twice: the second (in received order) is dropped.
        let mut a1 = ent("a", false);
        a1.size = 1;
        let mut a2 = ent("a", false);
        a2.size = 2;
        let out = sort_and_clean(vec![ent("b", false), a1, a2], 31).0;
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap().size, 1);
        assert!(out[1].is_none());
        assert_eq!(out[2].as_ref().unwrap().name, b"b");
        // A dir and a file with the same name: the dir wins, the file slot is cleared.
        assert_eq!(names_sorted(&[("a", false), ("b", false), ("a", true)], 31), ["<none>", "b", "a/"]);
        assert_eq!(names_sorted(&[("a", true), ("a", false)], 28), ["a/", "<none>"]);
        assert_eq!(names_sorted(&[("a", false), ("a", true)], 28), ["<none>", "a/"]);
        // Two dirs: the first is kept and gets the second's TOP/CONTENT flags.
        let mut d1 = ent("d", true);
        d1.flags = FLAG_IMPLIED_DIR;
        let mut d2 = ent("d", true);
        d2.flags = FLAG_TOP_DIR | FLAG_CONTENT_DIR;
        let (out, dirs) = sort_and_clean(vec![d1, d2], 31);
        assert_eq!(out[0].as_ref().unwrap().flags, FLAG_TOP_DIR | FLAG_CONTENT_DIR);
        assert!(out[1].is_none());
        assert_eq!(dirs, [0, 1]);
        // Many duplicates mixed with other names.
        let input = [("x", false), ("x", false), ("x", true), ("x", true), ("x/y", false), ("w", false)];
        let out = names_sorted(&input, 30);
        assert_eq!(out, ["w", "<none>", "<none>", "x/", "<none>", "x/y"]);
        let v: Vec<FileEntry> = input.iter().map(|(n, d)| ent(n, *d)).collect();
        assert_eq!(sort_and_clean(v, 30).1, [3, 4]);
    }

    #[test]
    fn sort_is_stable_merge_like_fsort() {
        // Equal names keep received order (observable via size).
        let v: Vec<FileEntry> = (0..50)
            .map(|i| {
                let mut e = ent(if i % 3 == 0 { "k" } else { "j" }, false);
                e.size = i;
                e
            })
            .collect();
        let mut order: Vec<u32> = (0..v.len() as u32).collect();
        let mut tmp = vec![];
        merge_sort(&mut order, &mut tmp, &mut |x, y| f_name_cmp(&v[x as usize], &v[y as usize], 31));
        let sizes: Vec<i64> = order.iter().map(|&i| v[i as usize].size).collect();
        let mut expect: Vec<i64> = (0..50).filter(|i| i % 3 != 0).collect();
        expect.extend((0..50).filter(|i| i % 3 == 0));
        assert_eq!(sizes, expect);
    }

    /// f_name_cmp is antisymmetric and transitive on valid names.
    #[test]
    fn comparator_is_consistent() {
        let alpha: &[&[u8]] = &[b"a", b"b", b".", b"-", b"\xff", b"a.", b"A"];
        let mut names: Vec<(Vec<u8>, bool)> = vec![(b".".to_vec(), true)];
        for x in alpha {
            for d in [false, true] {
                names.push((x.to_vec(), d));
                for y in alpha {
                    let mut n = x.to_vec();
                    n.push(b'/');
                    n.extend_from_slice(y);
                    if check_name_safe(&n).is_ok() && check_name_safe(x).is_ok() {
                        names.push((n.clone(), d));
                        let mut m = n.clone();
                        m.extend_from_slice(b"/z");
                        names.push((m, d));
                    }
                }
            }
        }
        names.retain(|(n, _)| check_name_safe(n).is_ok());
        for p in [28, 31] {
            let c = |a: &(Vec<u8>, bool), b: &(Vec<u8>, bool)| name_cmp(&a.0, a.1, &b.0, b.1, p);
            for a in &names {
                for b in &names {
                    assert_eq!(c(a, b), c(b, a).reverse());
                }
            }
            let mut s = names.clone();
            s.sort_by(c);
            for i in 0..s.len() {
                for j in i + 1..s.len() {
                    assert_ne!(c(&s[i], &s[j]), Ordering::Greater, "p{p} {:?} {:?}", s[i], s[j]);
                }
            }
        }
    }

    // ---------------------------------------------------------------
    // Fast comparator vs the reference state machine
    // ---------------------------------------------------------------

    /// xorshift64*: a deterministic generator for the randomized tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A random tree of valid names: few distinct components (so names share
    /// prefixes, collide and duplicate), bytes around '/' (0x2f) in value,
    /// entries for directories and the contents of some, in random order.
    fn random_tree(rng: &mut Rng, n: usize) -> Vec<(Vec<u8>, bool)> {
        const ALPHA: &[u8] = b"ab.-_/0\x01\x7f\xff.";
        let mut comps: Vec<Vec<u8>> = Vec::new();
        for _ in 0..12 {
            let len = 1 + rng.below(3);
            let c: Vec<u8> = (0..len)
                .map(|_| match ALPHA[rng.below(ALPHA.len())] {
                    b'/' => b'0', // never in a component
                    b => b,
                })
                .collect();
            if c != b"." && c != b".." {
                comps.push(c);
            }
        }
        let mut out = Vec::new();
        if rng.below(2) == 0 {
            out.push((b".".to_vec(), true));
        }
        for _ in 0..n {
            let depth = 1 + rng.below(4);
            let mut name = Vec::new();
            for d in 0..depth {
                if d > 0 {
                    name.push(b'/');
                }
                name.extend_from_slice(&comps[rng.below(comps.len())]);
            }
            let is_dir = rng.below(3) == 0;
            out.push((name, is_dir));
        }
        // Some exact duplicates and same-name dir/file pairs.
        for _ in 0..n / 8 {
            let (nm, d) = out[rng.below(out.len())].clone();
            let d = if rng.below(2) == 0 { d } else { !d };
            out.push((nm, d));
        }
        // Shuffle (Fisher–Yates), but sometimes leave it nearly sorted.
        if rng.below(3) != 0 {
            for i in (1..out.len()).rev() {
                let j = rng.below(i + 1);
                out.swap(i, j);
            }
        }
        out
    }

    fn ref_cmp(a: &FileEntry, b: &FileEntry, p: i32) -> Ordering {
        name_cmp(&a.name, a.is_dir(), &b.name, b.is_dir(), p)
    }

    /// `sort_and_clean` as it was before the fast comparator (verbatim).
    fn reference_sort_and_clean(received: Vec<FileEntry>, protocol: i32) -> (Vec<Option<FileEntry>>, Vec<usize>) {
        let n = received.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        {
            let mut tmp = Vec::with_capacity(n / 2 + 1);
            let mut cmp = |x: u32, y: u32| ref_cmp(&received[x as usize], &received[y as usize], protocol);
            merge_sort(&mut order, &mut tmp, &mut cmp);
        }
        // `order` is a permutation, so every slot is taken exactly once.
        let mut all: Vec<Option<FileEntry>> = received.into_iter().map(Some).collect();
        let mut sorted: Vec<FileEntry> = order.iter().filter_map(|&i| all[i as usize].take()).collect();
        drop(all);
        let n = sorted.len();
        let dir_slots: Vec<usize> = (0..n).filter(|&k| sorted[k].is_dir()).collect();
        if n == 0 {
            return (Vec::new(), dir_slots);
        }
        // Tombstoned slots keep their names during the pass, so a binary search
        // over [low, prev_i] still sees a sorted sequence.
        let mut active = vec![true; n];
        let mut low = 0usize;
        let mut prev_i = 0usize;
        for i in 1..n {
            let j: Option<usize> = if ref_cmp(&sorted[i], &sorted[prev_i], protocol) == Ordering::Equal {
                Some(prev_i)
            } else if protocol >= 29 && sorted[i].is_dir() {
                // Does this directory duplicate a non-directory earlier on?
                reference_find_nondir(&sorted, &active, low, prev_i, &sorted[i].name, protocol)
            } else {
                None
            };
            let Some(j) = j else {
                prev_i = i;
                continue;
            };
            // Keep a directory over a non-directory (it may have contents in the
            // list); otherwise keep the first one, merging vital dir flags.
            let (keep, drop) = if sorted[i].is_dir() {
                if !sorted[j].is_dir() {
                    (i, j)
                } else {
                    let dropped_flags = sorted[i].flags;
                    let kept = &mut sorted[j];
                    kept.flags |= dropped_flags & (FLAG_TOP_DIR | FLAG_CONTENT_DIR);
                    kept.flags &= dropped_flags | !FLAG_IMPLIED_DIR;
                    (j, i)
                }
            } else {
                (j, i)
            };
            active[drop] = false;
            if keep == i {
                if low == drop {
                    let mut k = drop + 1;
                    while k < i && !active[k] {
                        k += 1;
                    }
                    low = k;
                }
                prev_i = i;
            }
        }
        let slots = sorted.into_iter().zip(active).map(|(e, a)| if a { Some(e) } else { None }).collect();
        (slots, dir_slots)
    }

    /// `flist_find` for a non-directory named `name` among active slots in
    /// `[low, high]` (sorted; tombstoned slots still hold their names).
    fn reference_find_nondir(sorted: &[FileEntry], active: &[bool], low: usize, high: usize, name: &[u8], protocol: i32) -> Option<usize> {
        if low > high {
            return None;
        }
        let range = low..high + 1;
        let cmp_key = |k: usize| {
            let e = &sorted[k];
            name_cmp(&e.name, e.is_dir(), name, false, protocol)
        };
        // First index in range with cmp(slot, key) >= 0.
        let (mut lo, mut hi) = (range.start, range.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if cmp_key(mid) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut k = lo;
        while k < range.end && cmp_key(k) == Ordering::Equal {
            if active[k] {
                return Some(k);
            }
            k += 1;
        }
        None
    }

    /// The fast comparator agrees with the state machine on every pair, and
    /// the fast sort + clean gives exactly the reference result (order of
    /// equal entries, tombstones, merged flags, dir slots), on many trees.
    #[test]
    fn fast_order_matches_reference_on_random_trees() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            let n = 1 + rng.below(if round % 10 == 0 { 600 } else { 60 });
            let tree = random_tree(&mut rng, n);
            for (name, _) in &tree {
                assert!(check_name_safe(name).is_ok(), "{:?}", escape_name(name));
            }
            for p in [27, 28, 29, 30, 31, 32] {
                let entries: Vec<FileEntry> = tree
                    .iter()
                    .enumerate()
                    .map(|(i, (nm, d))| {
                        let mut e = ent("x", *d);
                        e.name = nm.clone().into();
                        e.size = i as i64; // identity, to check equal entries' order
                        e.flags = [0, FLAG_TOP_DIR, FLAG_CONTENT_DIR, FLAG_IMPLIED_DIR][rng.below(4)];
                        e
                    })
                    .collect();
                if round % 4 == 0 {
                    for a in &entries {
                        for b in &entries {
                            assert_eq!(
                                f_name_cmp(a, b, p),
                                name_cmp(&a.name, a.is_dir(), &b.name, b.is_dir(), p),
                                "p{p} {} (dir {}) vs {} (dir {})",
                                escape_name(&a.name),
                                a.is_dir(),
                                escape_name(&b.name),
                                b.is_dir()
                            );
                        }
                    }
                }
                let fast = sort_and_clean(entries.clone(), p);
                let reference = reference_sort_and_clean(entries, p);
                assert_eq!(fast, reference, "round {round} p{p}");
            }
        }
    }

    /// Hand-picked corners of the fast comparator: the virtual trailing "/"
    /// against real bytes just below and above '/', the root ".", prefixes.
    #[test]
    fn fast_order_corners() {
        let names: &[(&[u8], bool)] = &[
            (b".", true),
            (b".", false),
            (b"a", true),
            (b"a", false),
            (b"a.", true),
            (b"a.", false),
            (b"a0", true),
            (b"a0", false),
            (b"a/b", true),
            (b"a/b", false),
            (b"a/b/c", false),
            (b"a/b/c", true),
            (b"a-", false),
            (b"a-/x", false),
            (b"a/.b", true),
            (b"a\xff", true),
            (b"ab/c/d/e", false),
            (b"ab/c/d", true),
            (b"ab/c", false),
        ];
        for p in 27..=32 {
            for a in names {
                for b in names {
                    let (ea, eb) = (FileEntry { name: a.0.to_vec().into(), ..ent("x", a.1) }, FileEntry { name: b.0.to_vec().into(), ..ent("x", b.1) });
                    assert_eq!(
                        f_name_cmp(&ea, &eb, p),
                        name_cmp(a.0, a.1, b.0, b.1, p),
                        "p{p} {:?} {:?}",
                        a,
                        b
                    );
                }
            }
        }
    }

    /// Sorting time of a CPAN-like 200,000-entry list, fast vs reference
    /// (`cargo test --release --lib sort_timing -- --ignored --nocapture`).
    fn cpu_now() -> std::time::Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    #[ignore = "timing probe, prints numbers only; run: cargo test --release --lib sort_timing -- --ignored --nocapture"]
    fn sort_timing() {
        let mut rng = Rng(42);
        let mut v: Vec<FileEntry> = Vec::new();
        v.push(ent(".", true));
        for a in 0..26u8 {
            let l1 = format!("authors/id/{}", (b'A' + a) as char);
            v.push(ent(&l1, true));
            for b in 0..26u8 {
                let l2 = format!("{l1}/{}{}", (b'A' + a) as char, (b'A' + b) as char);
                v.push(ent(&l2, true));
                for c in 0..6 {
                    let l3 = format!("{l2}/{}{}AUTH{c}", (b'A' + a) as char, (b'A' + b) as char);
                    v.push(ent(&l3, true));
                    for f in 0..(rng.below(90) + 1) {
                        v.push(ent(&format!("{l3}/Some-Module-Name-{f}.{}.tar.gz", rng.below(100)), false));
                    }
                }
            }
        }
        eprintln!("{} entries", v.len());
        for (what, input) in [("sender order", v.clone()), ("shuffled", {
            let mut s = v.clone();
            for i in (1..s.len()).rev() {
                let j = rng.below(i + 1);
                s.swap(i, j);
            }
            s
        })] {
            for p in [28, 31] {
                // Best of 5: the machine is shared.
                let best = |f: &dyn Fn(Vec<FileEntry>) -> (Vec<Option<FileEntry>>, Vec<usize>)| {
                    (0..5)
                        .map(|_| {
                            let i = input.clone();
                            let t = cpu_now();
                            let r = f(i);
                            let d = cpu_now() - t;
                            drop(r);
                            d
                        })
                        .min()
                        .unwrap()
                };
                assert_eq!(sort_and_clean(input.clone(), p), reference_sort_and_clean(input.clone(), p));
                let fast = best(&|i| sort_and_clean(i, p));
                let slow = best(&|i| reference_sort_and_clean(i, p));
                let order_only = (0..5)
                    .map(|_| {
                        let t = cpu_now();
                        drop(sorted_order(&input, p));
                        cpu_now() - t
                    })
                    .min()
                    .unwrap();
                eprintln!("{what}: fast {fast:?} (order alone {order_only:?}), reference {slow:?}");
            }
        }
    }

    // ---------------------------------------------------------------
    // Hard links, inc-recursion
    // ---------------------------------------------------------------

    #[test]
    fn inc_recurse_lists_and_cross_list_hlinks() {
        let mut o = all_opts(31, true);
        o.inc_recurse = true;
        let mut enc = Enc::default();
        let mut root = tf(".", S_IFDIR | 0o755);
        root.top = true;
        root.uid_name = Some(b"alice".to_vec());
        root.gid_name = Some(b"staff".to_vec());
        let mut f1 = tf("f", S_IFREG | 0o644);
        f1.hl = Some((1, 1));
        f1.sum = vec![3; 16];
        f1.uid_name = Some(b"alice".to_vec());
        f1.gid_name = Some(b"staff".to_vec());
        let d = tf("d", S_IFDIR | 0o755);
        let first = vec![root, f1.clone(), d];
        let buf1 = encode_list(&o, &mut enc, &first, 1, 0, true);
        let mut dec = FlistDecoder::new(o.clone());
        dec.begin_list(1, None);
        let (l1, used) = decode_checked(&mut dec, &buf1);
        assert_eq!(used, buf1.len());
        assert_eq!(l1.uid_names, [(1000, b"alice".to_vec())]);
        assert_eq!(l1.gid_names, [(1000, b"staff".to_vec())]);
        let lead = l1.entries.iter().flatten().find(|e| e.name == b"f").unwrap();
        assert_eq!(lead.hlink(), Some(HardLinkKey::Ndx(2)));
        // Sub-list for "d": ndx_start = 1 + 3 + 1.
        let mut g = f1.clone();
        g.name = b"d/g".to_vec();
        let mut h = f1.clone();
        h.name = b"d/h".to_vec();
        let sub = vec![g, h];
        let buf2 = encode_list(&o, &mut enc, &sub, 5, 0, true);
        dec.begin_list(5, Some(b"d"));
        let (l2, used) = decode_checked(&mut dec, &buf2);
        assert_eq!(used, buf2.len());
        for e in l2.entries.iter().flatten() {
            // Full entries with a back reference to list 1.
            assert_eq!(e.hlink(), Some(HardLinkKey::Ndx(2)));
            assert_eq!(e.checksum(), Some(&[3u8; 16][..]));
            assert!(!e.hlink_first);
        }
        // A sub-list entry outside its directory is rejected.
        let bad = encode_list(&o, &mut Enc::default(), &[tf("e/x", S_IFREG)], 7, 0, false);
        dec.begin_list(7, Some(b"d"));
        match dec.step(&bad) {
            Err(DecodeError::Malformed(m)) => assert!(m.contains("e/x"), "{m}"),
            other => panic!("{other:?}"),
        }
        // First inc list: nested names are not allowed.
        let bad = encode_list(&o, &mut Enc::default(), &[tf("a/b", S_IFREG)], 1, 0, false);
        let mut dec = FlistDecoder::new(o.clone());
        dec.begin_list(1, None);
        assert!(matches!(dec.step(&bad), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn hlink_follower_copies_leader_in_received_order() {
        let o = all_opts(30, false);
        let mut z = tf("z", S_IFLNK | 0o777);
        z.link = b"target".to_vec();
        z.hl = Some((2, 2));
        z.uid = 77;
        let mut a = tf("a", S_IFREG | 0o644);
        a.uid = 5;
        let mut y = tf("y", S_IFLNK | 0o777);
        y.link = b"target".to_vec();
        y.hl = Some((2, 2));
        y.uid = 77;
        let buf = encode_list(&o, &mut Enc::default(), &[z, a, y], 0, 0, true);
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        let (l, _) = decode_checked(&mut dec, &buf);
        let names: Vec<_> = l.entries.iter().flatten().map(|e| e.name.clone()).collect();
        assert_eq!(names, [b"a".to_vec(), b"y".to_vec(), b"z".to_vec()]);
        let y = l.entries[1].as_ref().unwrap();
        assert_eq!(y.link_target(), Some(&b"target"[..]));
        assert_eq!(y.uid, Some(77));
        assert_eq!(y.hlink(), Some(HardLinkKey::Ndx(0)));
        assert_eq!(l.entries[2].as_ref().unwrap().hlink(), Some(HardLinkKey::Ndx(0)));
    }

    #[test]
    fn hlink_reference_out_of_range() {
        let o = all_opts(31, true);
        // flags HLINKED (no FIRST), name "x", first_hlink_ndx 0 with an empty list.
        let mut buf = vec![];
        put::varint(&mut buf, (XMIT_HLINKED) as i32);
        buf.extend_from_slice(&[1, b'x']);
        put::varint(&mut buf, 0);
        let mut dec = FlistDecoder::new(o.clone());
        dec.begin_list(0, None);
        assert!(matches!(dec.step(&buf), Err(DecodeError::Malformed(_))));
        // Negative reference.
        let mut buf = vec![];
        put::varint(&mut buf, (XMIT_HLINKED) as i32);
        buf.extend_from_slice(&[1, b'x']);
        put::varint(&mut buf, -1);
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        assert!(matches!(dec.step(&buf), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn hlink_bits_ignored_without_dash_h() {
        let mut o = all_opts(29, false);
        let mut f = tf("f", S_IFREG | 0o644);
        f.hl = Some((1, 2));
        f.sum = vec![0; 16];
        // Encoded with -H ...
        let buf = encode_list(&o, &mut Enc::default(), &[f], 0, 0, true);
        // ... decoded with -H: key present.
        let mut dec = FlistDecoder::new(o.clone());
        dec.begin_list(0, None);
        let (l, _) = decode_fast(&mut dec, &buf).unwrap();
        assert_eq!(l.entries[0].as_ref().unwrap().hlink(), Some(HardLinkKey::DevIno(2, 2)));
        // Without -H the sender would not send dev/ino; an entry flagged anyway
        // leaves dev/ino unread (like rsync) and carries no key.
        o.preserve_hard_links = false;
        let mut f = tf("f", S_IFREG | 0o644);
        f.sum = vec![0; 16];
        let mut buf = vec![];
        let mut enc = Enc::default();
        enc.entry(&o, &mut buf, &f, 0, 0);
        buf[0] |= 0; // no-op: flags unchanged
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        let (p, _) = dec.step(&buf).unwrap();
        assert_eq!(p, FlistProgress::Entry);
        assert_eq!(dec.cur.entries[0].hlink(), None);
    }

    // ---------------------------------------------------------------
    // Malformed input
    // ---------------------------------------------------------------

    fn one_entry_bytes(o: &FlistOptions, f: &TF) -> Vec<u8> {
        let mut out = vec![];
        Enc::default().entry(o, &mut out, f, 0, 0);
        out
    }

    fn expect_malformed(o: &FlistOptions, buf: &[u8], needle: &str) {
        let mut dec = FlistDecoder::new(o.clone());
        dec.begin_list(0, None);
        match decode_fast(&mut dec, buf) {
            Err(DecodeError::Malformed(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("expected Malformed({needle}), got {other:?}"),
        }
    }

    #[test]
    fn unsafe_names_rejected() {
        for p in [27, 29, 31] {
            let o = FlistOptions::new(p);
            for (name, why) in [
                ("/etc/passwd", "absolute"),
                ("..", "'..'"),
                ("a/../b", "'..'"),
                ("a/..", "'..'"),
                ("a//b", "empty path"),
                ("a/", "empty path"),
                ("./a", "'.' component"),
                ("a/.", "'.' component"),
                ("a\0b", "NUL"),
            ] {
                let buf = one_entry_bytes(&o, &tf(name, S_IFREG | 0o644));
                expect_malformed(&o, &buf, why);
            }
            // The message escapes the name.
            let buf = one_entry_bytes(&o, &tf("../\n", S_IFREG | 0o644));
            expect_malformed(&o, &buf, "\"../\\#012\"");
            // "." must be a directory.
            let buf = one_entry_bytes(&o, &tf(".", S_IFREG | 0o644));
            expect_malformed(&o, &buf, "non-directory");
        }
        // Too long: l1 + l2 ≥ 4096.
        let o = FlistOptions::new(31);
        let buf = one_entry_bytes(&o, &tf(&"n".repeat(4096), S_IFREG));
        expect_malformed(&o, &buf, "too long");
        let buf = one_entry_bytes(&o, &tf(&"n".repeat(4095), S_IFREG | 0o644));
        let mut dec = FlistDecoder::new(o.clone());
        dec.begin_list(0, None);
        assert!(dec.step(&buf).is_ok());
        // Empty name.
        expect_malformed(&o, &[0x02, 0x00], "empty name");
    }

    #[test]
    fn same_name_prefix_longer_than_previous() {
        let o = FlistOptions::new(31);
        let mut buf = one_entry_bytes(&o, &tf("ab", S_IFREG | 0o644));
        // flags SAME_NAME|SAME_MODE|SAME_TIME, l1 = 3 (> 2), l2 = 1, "c"
        buf.extend_from_slice(&[(XMIT_SAME_NAME | XMIT_SAME_MODE | XMIT_SAME_TIME) as u8, 3, 1, b'c']);
        expect_malformed(&o, &buf, "prefix length 3");
    }

    #[test]
    fn bad_modes_and_values() {
        let o = FlistOptions::new(31);
        // Unknown file type.
        let buf = one_entry_bytes(&o, &tf("x", 0o170644));
        expect_malformed(&o, &buf, "invalid file mode");
        let buf = one_entry_bytes(&o, &tf("x", 0o644));
        expect_malformed(&o, &buf, "invalid file mode");
        // SAME_MODE on the very first entry (mode 0).
        expect_malformed(&o, &[0x02, 1, b'x', 0, 0, 0, 0, 0, 0, 0], "invalid file mode");
        // nsec out of range.
        let mut f = tf("x", S_IFREG | 0o644);
        f.nsec = 1_000_000_000;
        expect_malformed(&o, &one_entry_bytes(&o, &f), "nsec");
        // Negative size.
        let mut f = tf("x", S_IFREG | 0o644);
        f.size = -1;
        expect_malformed(&o, &one_entry_bytes(&o, &f), "negative size");
        // Symlink target too long.
        let mut lo = FlistOptions::new(31);
        lo.preserve_links = true;
        let mut f = tf("x", S_IFLNK | 0o777);
        f.link = vec![b'a'; 4096];
        expect_malformed(&lo, &one_entry_bytes(&lo, &f), "symlink target length");
        f.link = vec![b'a'; 4095];
        let mut dec = FlistDecoder::new(lo.clone());
        dec.begin_list(0, None);
        assert!(dec.step(&one_entry_bytes(&lo, &f)).is_ok());
        // Negative long-name length (protocol 29: int).
        let o29 = FlistOptions::new(29);
        expect_malformed(&o29, &[XMIT_LONG_NAME as u8, 0xff, 0xff, 0xff, 0xff], "negative name length");
        // Oversized checksum configuration.
        let mut oc = FlistOptions::new(31);
        oc.always_checksum = true;
        oc.checksum_len = 1 << 20;
        expect_malformed(&oc, &[0], "checksum length");
        // Unsupported protocol.
        expect_malformed(&FlistOptions::new(26), &[0], "unsupported protocol");
        // Varint overflow in flags.
        let mut ov = FlistOptions::new(31);
        ov.varint_flags = true;
        expect_malformed(&ov, &[0xFC, 0, 0, 0, 0, 0, 0], "overflow");
    }

    #[test]
    fn step_without_begin_is_error() {
        let mut dec = FlistDecoder::new(FlistOptions::new(31));
        assert!(matches!(dec.step(&[0]), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn prev_state_persists_across_lists() {
        // The second list's first entry reuses name prefix / mode / time of
        // the first list's last entry.
        let mut o = FlistOptions::new(31);
        o.varint_flags = true;
        o.inc_recurse = true;
        let mut enc = Enc::default();
        let d = tf("d", S_IFDIR | 0o755);
        let buf1 = encode_list(&o, &mut enc, &[d], 1, 0, true);
        let mut g = tf("d/g", S_IFDIR | 0o755);
        g.content = true;
        let buf2 = encode_list(&o, &mut enc, &[g], 3, 0, true);
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(1, None);
        decode_checked(&mut dec, &buf1);
        dec.begin_list(3, Some(b"d"));
        let (l, _) = decode_checked(&mut dec, &buf2);
        assert_eq!(l.entries[0].as_ref().unwrap().name, b"d/g");
        assert_eq!(l.entries[0].as_ref().unwrap().mode, S_IFDIR | 0o755);
    }

    #[test]
    fn proto27_devices_and_dirs() {
        let mut o = all_opts(27, false);
        o.always_checksum = false;
        let mut top = tf("top", S_IFDIR | 0o755);
        top.top = true;
        let sub = tf("top/sub", S_IFDIR | 0o755);
        let mut c = tf("top/c", S_IFCHR | 0o600);
        c.rdev = (1, 3);
        let mut c2 = tf("top/c2", S_IFCHR | 0o600);
        c2.rdev = (1, 3);
        let buf = encode_list(&o, &mut Enc::default(), &[top, sub, c, c2], 0, 0, true);
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        let (l, _) = decode_checked(&mut dec, &buf);
        let by = |n: &str| l.entries.iter().flatten().find(|e| e.name == n.as_bytes()).unwrap();
        assert_eq!(by("top").flags, FLAG_TOP_DIR | FLAG_CONTENT_DIR);
        assert_eq!(by("top/sub").flags, FLAG_CONTENT_DIR);
        assert_eq!(by("top/c").rdev(), Some((1, 3)));
        assert_eq!(by("top/c2").rdev(), Some((1, 3)));
    }

    #[test]
    fn proto30_dir_flags() {
        let o = FlistOptions::new(30);
        let mut a = tf("a", S_IFDIR | 0o755);
        a.top = true;
        let mut b = tf("b", S_IFDIR | 0o755);
        b.content = false;
        let mut c = tf("c", S_IFDIR | 0o755);
        c.content = false;
        c.implied = true;
        let d = tf("d", S_IFDIR | 0o755);
        let buf = encode_list(&o, &mut Enc::default(), &[a, b, c, d], 0, 0, true);
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        let (l, _) = decode_checked(&mut dec, &buf);
        let flags: Vec<u32> = l.entries.iter().flatten().map(|e| e.flags).collect();
        assert_eq!(flags, [FLAG_TOP_DIR | FLAG_CONTENT_DIR, 0, FLAG_IMPLIED_DIR, FLAG_CONTENT_DIR]);
    }

    #[test]
    fn proto29_mtime_is_unsigned() {
        let o = FlistOptions::new(29);
        let mut f = tf("x", S_IFREG | 0o644);
        f.mtime = 0xFFFF_FFF0;
        let buf = encode_list(&o, &mut Enc::default(), &[f], 0, 0, true);
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        let (l, _) = decode_checked(&mut dec, &buf);
        assert_eq!(l.entries[0].as_ref().unwrap().mtime, 0xFFFF_FFF0);
    }

    // ---------------------------------------------------------------
    // Vectors captured from a real rsync 3.5.0 daemon (demultiplexed
    // MSG_DATA payload after the seed), serving this tree:
    //   a-b a.txt(nsec mtime, hard-linked with b/hard) ab a/x(uid 1234
    //   gid 5678) a/sub/y ab.d/ b/bdev(8,1) b/cdev(4,300) b/fifo b/hard
    //   b/link->../a.txt b/sock b/\xff\xfe c.d/t
    // Server args: --server --sender <opts> . m/
    // ---------------------------------------------------------------

    const REAL_V32: &str = concat!(
        "a001012e0000106b2f6b02ebc863faed4100000000a09a0162000010f0bec8cf13a09803612d62000200ebb996b4a4810000",
        "a0b80103622e64000010ebc863faed410000a0ba0100000010ebb996b4a0b8010162000200ebc863faa4810000b23a01042e",
        "7478740003003a72837be715cd5ba01803632e640000106b2f6b02ecb9a82eed410000a09806622f63646576000000ecb9a8",
        "2ea421000004812ca0b802046669666f000000ebc863faa4110000a0b8020462646576000000ecb9a82ea46100000801a0b8",
        "02046c696e6b000800ebb996b4ffa10000082e2e2f612e747874a0b80204736f636b000000f0bec8cf13edc10000a2380204",
        "6861726406a03a0202fffe0002006b2f6b02ecb9a82ea08203612f78000200ebb996b484d2962ea0a00203737562000010eb",
        "b996b4ed4100000000a0b805022f79000200ebb996b4a4810000a09a05632e642f74000200ecb9a82e00000004726f6f7400",
        "04726f6f74",
    );
    const REAL_V32I: &str = concat!(
        "ac01012e0000106b2f6b02ebc863faed4100000004726f6f740004726f6f74a09a0162000010f0bec8cf13a09803612d6200",
        "0200ebb996b4a4810000a0b80103622e64000010ebc863faed410000a0ba0100000010ebb996b4a0b8010162000200ebc863",
        "faa4810000b23a01042e7478740003003a72837be715cd5ba01803632e640000106b2f6b02ecb9a82eed4100000000ff65a0",
        "8003612f78000200ebb996b4a481000084d2962ea0a00203737562000010ebb996b4ed41000000000000ff04a0b805022f79",
        "000200ebb996b4a48100000000fffe806700000000ff01a09806622f63646576000000ecb9a82ea421000004812ca0b80204",
        "6669666f000000ebc863faa4110000a0b8020462646576000000ecb9a82ea46100000801a0b802046c696e6b000800ebb996",
        "b4ffa10000082e2e2f612e747874a0b80204736f636b000000f0bec8cf13edc10000a238020468617264070003003a72837b",
        "e715cd5ba4810000a03a0202fffe0002006b2f6b02ecb9a82e0000ff01a09a05632e642f74000200ecb9a82e0000fffe8002",
        "0000",
    );
    const REAL_V30C: &str = concat!(
        "01012e0000106b2f6b02ed41000000009a01620000109803612d62000200a4810000401b30e3b8b5d629635a5c613cdb7919",
        "b80103622e64000010ed410000ba0100000010b8010162000200a4810000c3be117041a113540deb0ff532b195433e120104",
        "2e7478740003003a72837b764efa883dda1e11db47671c4a3bbd9e1803632e640000106b2f6b02ed4100009806622f636465",
        "76000000a421000004812cbc0102046669666f000000a411000000b8020462646576000000a46100000801b802046c696e6b",
        "000800ffa10000082e2e2f612e747874bc010204736f636b000000edc10000003c02020468617264063a0202fffe0002006b",
        "2f6b02f4d5d0c0671be202bc241807c243e80b8203612f7800020084d2962e009520053b00386d1173f3988c55d192a00203",
        "737562000010ed4100000000b805022f79000200a4810000a8a78d0ff555c931f045b6f4481298469a05632e642f74000200",
        "b7269fa2508548e4032c455818f1e321000000",
    );
    const REAL_V29: &str = concat!(
        "01012e001000002f6b026bed41000000000000000000009a0162001000009803612d6202000000a4810000b80103622e6400",
        "100000ed410000ba010000100000b801016202000000a48100003e0201042e7478740300000072837b3a01fe0000b4039900",
        "1803632e64001000002f6b026bed4100009806622f6364657600000000a4210000040000002c010000bc0902046669666f00",
        "000000a411000000bc0802046264657600000000a46100000800000001b802046c696e6b08000000ffa10000080000002e2e",
        "2f612e747874bc090204736f636b00000000edc10000003c060204686172640300000072837b3aa4810000b40399003a0202",
        "fffe020000002f6b026b8203612f7802000000d20400002e160000a0020373756200100000ed4100000000000000000000b8",
        "05022f7902000000a48100009a05632e642f740200000000000000000000000000000000",
    );
    const REAL_V27: &str = concat!(
        "01012e001000002f6b026bed41000000000000000000009a0162001000009803612d6202000000a481000001fe0000b50399",
        "00b80103622e6400100000ed410000ba010000100000b801016202000000a481000001fe0000b90399003a01042e74787403",
        "00000072837b3a01fe0000b40399001803632e64001000002f6b026bed4100009806622f6364657600000000a42100002c04",
        "1000bc02046669666f00000000a4110000b802046264657600000000a461000001080000b802046c696e6b08000000ffa100",
        "00080000002e2e2f612e747874bc0204736f636b00000000edc10000380204686172640300000072837b3aa481000001fe00",
        "00b40399003a0202fffe020000002f6b026b01fe0000be0399008203612f7802000000d20400002e16000001fe0000b60399",
        "00a0020373756200100000ed4100000000000000000000b805022f7902000000a481000001fe0000b70399009a05632e642f",
        "740200000001fe0000bf03990000000000000000000000000000",
    );

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
    }

    fn real_opts(p: i32) -> FlistOptions {
        FlistOptions {
            preserve_links: true,
            preserve_hard_links: true,
            preserve_uid: true,
            preserve_gid: true,
            preserve_devices: true,
            preserve_specials: true,
            ..FlistOptions::new(p)
        }
    }

    /// Order printed by `rsync --list-only -r --no-i-r` for the tree.
    const REAL_ORDER_29: &[&[u8]] = &[
        b".", b"a-b", b"a.txt", b"ab", b"a", b"a/x", b"a/sub", b"a/sub/y", b"ab.d", b"b", b"b/bdev", b"b/cdev",
        b"b/fifo", b"b/hard", b"b/link", b"b/sock", b"b/\xff\xfe", b"c.d", b"c.d/t",
    ];

    fn names(l: &FileList) -> Vec<Vec<u8>> {
        l.entries.iter().map(|e| e.as_ref().unwrap().name.to_vec()).collect()
    }

    fn check_real_common(l: &FileList, p: i32) {
        let by = |n: &[u8]| l.entries.iter().flatten().find(|e| e.name == n).unwrap().clone();
        let a = by(b"a.txt");
        assert_eq!((a.size, a.mtime), (3, 981_173_106));
        assert_eq!(a.mtime_nsec, if p >= 31 { 123_456_789 } else { 0 });
        assert_eq!(by(b"b/hard").hlink(), a.hlink());
        assert!(a.hlink().is_some() && a.hlink_first && !by(b"b/hard").hlink_first);
        assert_eq!(by(b"b/bdev").rdev(), Some((8, 1)));
        assert_eq!(by(b"b/bdev").mode, S_IFBLK | 0o644);
        assert_eq!(by(b"b/cdev").rdev(), Some((4, 300)));
        assert_eq!(by(b"b/fifo").mode & S_IFMT, S_IFIFO);
        assert_eq!(by(b"b/sock").mode & S_IFMT, S_IFSOCK);
        assert_eq!(by(b"b/link").link_target(), Some(&b"../a.txt"[..]));
        assert_eq!((by(b"a/x").uid, by(b"a/x").gid), (Some(1234), Some(5678)));
        assert_eq!(by(b".").flags, FLAG_TOP_DIR | FLAG_CONTENT_DIR);
        assert_eq!(by(b"a/sub").flags, FLAG_CONTENT_DIR);
        assert_eq!(l.io_error, 0);
    }

    #[test]
    fn real_daemon_protocol_32() {
        let buf = unhex(REAL_V32);
        let o = FlistOptions { varint_flags: true, safe_flist: true, id0_names: true, ..real_opts(32) };
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        let (l, used) = decode_checked(&mut dec, &buf);
        assert_eq!(used, buf.len());
        assert_eq!(names(&l), REAL_ORDER_29);
        check_real_common(&l, 32);
        assert_eq!(l.entries[2].as_ref().unwrap().hlink(), Some(HardLinkKey::Ndx(6)));
        assert_eq!(l.uid_names, [(0, b"root".to_vec())]);
        assert_eq!(l.gid_names, [(0, b"root".to_vec())]);
    }

    #[test]
    fn real_daemon_protocol_30_checksums() {
        let buf = unhex(REAL_V30C);
        let o = FlistOptions { always_checksum: true, checksum_len: 16, ..real_opts(30) };
        let mut dec = FlistDecoder::new(o);
        dec.begin_list(0, None);
        let (l, used) = decode_checked(&mut dec, &buf);
        assert_eq!(used, buf.len());
        assert_eq!(names(&l), REAL_ORDER_29);
        check_real_common(&l, 30);
        for e in l.entries.iter().flatten() {
            assert_eq!(e.checksum().map(|c| c.len()), e.is_reg().then_some(16));
        }
        let by = |n: &[u8]| l.entries.iter().flatten().find(|e| e.name == n).unwrap().clone();
        assert_eq!(by(b"a.txt").checksum(), by(b"b/hard").checksum());
        assert_ne!(by(b"a.txt").checksum(), by(b"ab").checksum());
    }

    #[test]
    fn real_daemon_protocol_29_and_27() {
        let buf = unhex(REAL_V29);
        let mut dec = FlistDecoder::new(real_opts(29));
        dec.begin_list(0, None);
        let (l, used) = decode_checked(&mut dec, &buf);
        assert_eq!(used, buf.len());
        assert_eq!(names(&l), REAL_ORDER_29);
        check_real_common(&l, 29);
        assert!(matches!(l.entries[2].as_ref().unwrap().hlink(), Some(HardLinkKey::DevIno(..))));

        let buf = unhex(REAL_V27);
        let mut dec = FlistDecoder::new(real_opts(27));
        dec.begin_list(0, None);
        let (l, used) = decode_checked(&mut dec, &buf);
        assert_eq!(used, buf.len());
        // Protocol 27 sorts by plain bytes.
        let mut plain: Vec<Vec<u8>> = REAL_ORDER_29.iter().map(|n| n.to_vec()).collect();
        plain.sort();
        assert_eq!(names(&l), plain);
        check_real_common(&l, 27);
        // Every regular file carries dev/ino under -H before protocol 28.
        assert!(l.entries.iter().flatten().filter(|e| e.is_reg()).all(|e| e.hlink().is_some()));
    }

    #[test]
    fn real_daemon_protocol_32_inc_recurse() {
        use crate::proto::wire::{NdxState, NDX_FLIST_EOF, NDX_FLIST_OFFSET};
        let buf = unhex(REAL_V32I);
        let o = FlistOptions { varint_flags: true, safe_flist: true, id0_names: true, inc_recurse: true, ..real_opts(32) };
        let mut dec = FlistDecoder::new(o);
        let (mut pos, mut ndx_start, mut parent) = (0usize, 1i32, None::<Vec<u8>>);
        let mut dirs: Vec<Vec<u8>> = vec![];
        let mut ndx = NdxState::default();
        let mut all: Vec<(i32, Vec<u8>)> = vec![];
        let mut parents: Vec<Vec<u8>> = vec![];
        let mut hl = vec![];
        loop {
            dec.begin_list(ndx_start, parent.as_deref());
            let (l, used) = decode_checked(&mut dec, &buf[pos..]);
            pos += used;
            for &k in &l.dir_slots {
                dirs.push(l.entries[k].as_ref().unwrap().name.to_vec());
            }
            for (i, e) in l.entries.iter().enumerate() {
                let e = e.as_ref().unwrap();
                all.push((l.ndx_start + i as i32, e.name.to_vec()));
                if e.hlink().is_some() {
                    hl.push((e.name.to_vec(), e.hlink(), e.hlink_first));
                }
            }
            ndx_start = l.ndx_start + l.entries.len() as i32 + 1;
            let mut r = Reader::new(&buf[pos..]);
            let n = ndx.read(&mut r, true).unwrap();
            pos += r.consumed();
            if n == NDX_FLIST_EOF {
                break;
            }
            parent = Some(dirs[(NDX_FLIST_OFFSET - n) as usize].clone());
            parents.push(parent.clone().unwrap());
        }
        assert_eq!(pos, buf.len());
        let want_parents: &[&[u8]] = &[b"a", b"a/sub", b"ab.d", b"b", b"c.d"];
        assert_eq!(parents, want_parents);
        let expect: &[(i32, &[u8])] = &[
            (1, b"."), (2, b"a-b"), (3, b"a.txt"), (4, b"ab"), (5, b"a"), (6, b"ab.d"), (7, b"b"), (8, b"c.d"),
            (10, b"a/x"), (11, b"a/sub"), (13, b"a/sub/y"), (16, b"b/bdev"), (17, b"b/cdev"), (18, b"b/fifo"),
            (19, b"b/hard"), (20, b"b/link"), (21, b"b/sock"), (22, b"b/\xff\xfe"), (24, b"c.d/t"),
        ];
        let got: Vec<(i32, &[u8])> = all.iter().map(|(i, n)| (*i, &n[..])).collect();
        assert_eq!(got, expect);
        // The leader "a.txt" was the 7th entry *received* in list 1 (sender
        // readdir order, global 1 + 6), not its sorted slot 3; the follower in
        // b's sub-list is a full entry referring back to that received index.
        assert_eq!(hl, [(b"a.txt".to_vec(), Some(HardLinkKey::Ndx(7)), true), (b"b/hard".to_vec(), Some(HardLinkKey::Ndx(7)), false)]);
    }

    /// Random bytes (and random mutations of valid lists) never panic.
    #[test]
    fn random_bytes_never_panic() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        let mut opts = vec![];
        for p in 27..=32 {
            for varint in [false, true] {
                let mut o = all_opts(p, varint);
                opts.push(o.clone());
                o.inc_recurse = true;
                opts.push(o);
            }
        }
        let valid: Vec<Vec<u8>> =
            opts.iter().map(|o| encode_list(o, &mut Enc::default(), &sample_files(o.protocol), 0, 1, true)).collect();
        for round in 0..6000 {
            let oi = rnd() as usize % opts.len();
            let o = &opts[oi];
            let buf: Vec<u8> = if round % 2 == 0 {
                let n = rnd() as usize % 300;
                (0..n).map(|_| rnd() as u8).collect()
            } else {
                let mut b = valid[oi].clone();
                for _ in 0..1 + rnd() % 4 {
                    let i = rnd() as usize % b.len();
                    b[i] = rnd() as u8;
                }
                b
            };
            let mut dec = FlistDecoder::new(o.clone());
            dec.begin_list(if o.inc_recurse { 1 } else { 0 }, None);
            let mut pos = 0;
            for _ in 0..10_000 {
                match dec.step(&buf[pos..]) {
                    Ok((FlistProgress::Entry, n)) => pos += n,
                    Ok((FlistProgress::Done(_), _)) | Err(_) => break,
                }
            }
        }
    }
}
