//! `--safe-links`: whether a symlink from the sender could point outside the
//! transferred tree (rsync 3.4+ `unsafe_symlink()`, the CVE-2024-12088 fix).
//!
//! A mirror that a web or FTP server publishes and that follows symlinks
//! would otherwise serve e.g. `pub/x -> /etc/passwd`; mirroring tools
//! (ftpsync, rrr-client) therefore run rsync with `--safe-links`, and rmirror
//! skips such links by default.

/// Whether the symlink at `link` (its path within the transfer, as the file
/// list names it) pointing at `target` is unsafe: it is empty or absolute,
/// or following it may leave the tree.
///
/// Rules (rsync's, so that both skip the same links):
/// * an empty or absolute target is unsafe;
/// * `..` is only allowed as a leading run (`../../x`, also `..//../x`): a
///   later `/../`, or a target ending in `/..`, is unsafe — a directory on
///   the way could later be replaced by a link to `.`, changing where it
///   points;
/// * the link's own directory depth is the margin (`..` in the link path
///   resets it to 0, `.` is ignored); walking the target's directory
///   components, `..` takes one level and must never go below 0, any other
///   name adds one. A final `..` also takes a level.
pub fn unsafe_symlink(target: &[u8], link: &[u8]) -> bool {
    if target.is_empty() || target[0] == b'/' {
        return true;
    }
    // Skip the leading run of `../` (with any extra slashes after each).
    let mut rest = target;
    while let Some(r) = rest.strip_prefix(b"../") {
        rest = r;
        while let Some(r) = rest.strip_prefix(b"/") {
            rest = r;
        }
    }
    if contains(rest, b"/../") {
        return true;
    }
    if target.len() > 3 && target.ends_with(b"/..") {
        return true;
    }

    // The link's safety margin: how deep its directory is in the transfer.
    let mut depth: i64 = 0;
    let (dirs, last) = split_last(link);
    for c in components(dirs) {
        match c {
            b"." => {}
            b".." => depth = 0,
            _ => depth += 1,
        }
    }
    if last == b".." {
        depth = 0;
    }

    let (dirs, last) = split_last(target);
    for c in components(dirs) {
        match c {
            b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    if last == b".." {
        depth -= 1;
    }
    depth < 0
}

/// Everything before the last `/` (empty when there is none), and the name after it.
fn split_last(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (&[], p),
    }
}

/// The non-empty components of `p` (repeated slashes count as one).
fn components(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::unsafe_symlink;

    #[test]
    fn table() {
        // (link path in the transfer, target, unsafe?)
        let cases: &[(&str, &str, bool)] = &[
            // the hostile case H10, at the top level
            ("l", "/etc/passwd", true),
            ("l", "../../x", true),
            ("l", "a/a/a/../../../x", true),
            ("l", "ok/../../x", true),
            ("l", "x/..", true),
            ("l", "", true),
            ("l", "/", true),
            ("sub/l", "/etc/passwd", true),
            // in the tree
            ("l", "f", false),
            ("l", "d/f", false),
            ("l", "./f", false),
            ("l", ".", false),
            ("l", "d/", false),
            ("l", "...", false),
            ("l", "..f", false),
            ("sub/l", "../f", false),
            ("sub/l", "./f", false),
            ("sub/l", "..", false),
            ("sub/l", "../..", true),
            ("sub/sub2/l", "../../f", false),
            ("sub/sub2/l", "..//../f", false),
            ("sub/sub2/l", "../../../f", true),
            ("sub/l", "../../f", true),
            ("sub/l", "..//..///f", true),
            ("l", "..", true),
            ("l", "../", true),
            ("l", "./../f", true),
            ("l", "./././f", false),
            // `..` after a name is refused even when it stays inside
            ("sub/sub2/l", "d/../f", true),
            ("sub/sub2/l", "d/..", true),
            ("sub/sub2/l", "../d/../f", true),
            // ... and `/..` only counts as a whole component
            ("sub/l", "d/..f", false),
            ("sub/l", "d/x..", false),
            // the link's own path: `.` ignored, `..` starts the count over
            ("./sub/l", "../f", false),
            ("././l", "../f", true),
            ("a/b/../l", "../f", true),
            ("a/../b/l", "../f", false),
            ("a//b/l", "../../f", false),
            ("a/b/..", "../f", true),
            // repeated slashes in the target
            ("sub/l", "d//f", false),
            ("sub/l", "..//f", false),
            ("l", "..//f", true),
        ];
        for &(link, target, want) in cases {
            assert_eq!(
                unsafe_symlink(target.as_bytes(), link.as_bytes()),
                want,
                "{link} -> {target:?}: expected {}",
                if want { "unsafe" } else { "safe" }
            );
        }
    }

    #[test]
    fn non_utf8_bytes_are_names() {
        assert!(!unsafe_symlink(b"\xff/\xfe", b"l"));
        assert!(unsafe_symlink(b"\xff/../../x", b"sub/l"));
    }
}
