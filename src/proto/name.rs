//! File-list names, arena-allocated (issue 3).
//!
//! A list of N entries used to cost N heap allocations for the names alone
//! (one `Vec<u8>` each, 24 bytes inline plus the allocation's own overhead),
//! allocated one by one while decoding and freed one by one when the list
//! went. The decoder now appends every name of a list to one byte buffer; when
//! the list is complete that buffer is frozen into a shared chunk and each
//! entry's [`Name`] is a (chunk, start, length) view of it: 16 bytes, no
//! allocation of its own, and the whole list's names are freed together when
//! the last entry referring to them goes. With incremental recursion a chunk
//! holds one directory's sub-list, so memory stays proportional to the
//! directories in flight.
//!
//! A `Name` dereferences to `[u8]` and compares, hashes and orders as its
//! bytes. Cloning one is a reference-count increment; something kept for long
//! after its list is done (a set of directory names, say) should hold
//! `name.to_vec()` rather than a clone, so as not to pin the list's chunk.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Range};
use std::sync::{Arc, OnceLock};

/// A path as it appeared in a file list (raw bytes, `/`-separated).
#[derive(Clone)]
pub struct Name {
    chunk: Arc<Vec<u8>>,
    start: u32,
    len: u32,
}

fn empty_chunk() -> &'static Arc<Vec<u8>> {
    static EMPTY: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::new(Vec::new()))
}

impl Name {
    /// A name with its own (single-name) chunk; for names that do not come
    /// from a decoded list (tests, local scans).
    pub fn new(bytes: &[u8]) -> Name {
        Name::from(bytes.to_vec())
    }

    /// A name not yet in its chunk: `range` locates it in the decoder's
    /// pending buffer until [`Name::place`] points it at the frozen chunk.
    /// Reads as empty meanwhile.
    pub(crate) fn pending(range: Range<usize>) -> Name {
        Name { chunk: empty_chunk().clone(), start: range.start as u32, len: range.len() as u32 }
    }

    /// Where this name lies in its chunk (or in the pending buffer).
    pub(crate) fn range(&self) -> Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }

    /// Point a pending name at the chunk its bytes were frozen into.
    pub(crate) fn place(&mut self, chunk: &Arc<Vec<u8>>) {
        self.chunk = chunk.clone();
    }

    /// Whether both names are views of one chunk.
    pub fn shares_chunk_with(&self, other: &Name) -> bool {
        Arc::ptr_eq(&self.chunk, &other.chunk)
    }

    /// Bytes held by this name's chunk (allocated capacity included).
    pub fn chunk_len(&self) -> usize {
        self.chunk.capacity()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.chunk.get(self.range()).unwrap_or(&[])
    }
}

impl Default for Name {
    fn default() -> Name {
        Name::pending(0..0)
    }
}

impl From<Vec<u8>> for Name {
    fn from(v: Vec<u8>) -> Name {
        // Names are < MAX_PATH; a longer vector (never from the decoder)
        // keeps only what u32 can address rather than wrapping.
        let len = v.len().min(u32::MAX as usize) as u32;
        Name { chunk: Arc::new(v), start: 0, len }
    }
}

impl From<&[u8]> for Name {
    fn from(v: &[u8]) -> Name {
        Name::new(v)
    }
}

impl From<&str> for Name {
    fn from(v: &str) -> Name {
        Name::new(v.as_bytes())
    }
}

impl Deref for Name {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Name {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::borrow::Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl PartialEq for Name {
    fn eq(&self, o: &Name) -> bool {
        self.as_bytes() == o.as_bytes()
    }
}
impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h)
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, o: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Name {
    fn cmp(&self, o: &Name) -> std::cmp::Ordering {
        self.as_bytes().cmp(o.as_bytes())
    }
}

impl PartialEq<[u8]> for Name {
    fn eq(&self, o: &[u8]) -> bool {
        self.as_bytes() == o
    }
}
impl PartialEq<&[u8]> for Name {
    fn eq(&self, o: &&[u8]) -> bool {
        self.as_bytes() == *o
    }
}
impl<const N: usize> PartialEq<[u8; N]> for Name {
    fn eq(&self, o: &[u8; N]) -> bool {
        self.as_bytes() == o
    }
}
impl<const N: usize> PartialEq<&[u8; N]> for Name {
    fn eq(&self, o: &&[u8; N]) -> bool {
        self.as_bytes() == *o
    }
}
impl PartialEq<Vec<u8>> for Name {
    fn eq(&self, o: &Vec<u8>) -> bool {
        self.as_bytes() == o.as_slice()
    }
}
impl PartialEq<Name> for Vec<u8> {
    fn eq(&self, o: &Name) -> bool {
        self.as_slice() == o.as_bytes()
    }
}
impl PartialEq<Name> for [u8] {
    fn eq(&self, o: &Name) -> bool {
        self == o.as_bytes()
    }
}
impl PartialEq<Name> for &[u8] {
    fn eq(&self, o: &Name) -> bool {
        *self == o.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_two_words_and_reads_its_slice() {
        assert_eq!(std::mem::size_of::<Name>(), 16);
        let chunk = Arc::new(b"authors/id/A/AB/x.tar.gz".to_vec());
        let mut n = Name::pending(11..15);
        assert_eq!(n.as_bytes(), b"", "a pending name reads as empty, never out of range");
        n.place(&chunk);
        assert_eq!(n, b"A/AB");
        assert_eq!(n, Name::new(b"A/AB"));
        assert_eq!(format!("{n:?}"), "\"A/AB\"");
        let mut bad = Name::pending(20..40);
        bad.place(&chunk);
        assert_eq!(bad.as_bytes(), b"", "a range outside the chunk reads as empty");
    }

    #[test]
    fn names_share_their_chunk() {
        let chunk = Arc::new(b"a/bc/d".to_vec());
        let mut a = Name::pending(0..1);
        let mut b = Name::pending(2..4);
        a.place(&chunk);
        b.place(&chunk);
        drop(chunk);
        let a2 = a.clone();
        assert_eq!(Arc::strong_count(&a.chunk), 3);
        assert_eq!((a2.as_bytes(), b.as_bytes()), (&b"a"[..], &b"bc"[..]));
        let set: std::collections::HashSet<Name> = [a, b, a2].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains(&b"bc"[..]));
    }
}
