//! RECENT file names: `{filenameroot}-{interval}{serializer_suffix}` and the
//! principal `{filenameroot}.recent` (a symlink to, or a copy of, the
//! shortest-interval file).

use super::interval::Interval;

/// Default `filenameroot`.
pub const DEFAULT_FILENAMEROOT: &str = "RECENT";
/// Longest file name accepted by these helpers.
pub const MAX_RFILENAME_BYTES: usize = 255;

/// The three parts of a RECENT file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RFileName {
    pub root: String,
    /// Unparsed interval text (parse with [`Interval::parse`]).
    pub interval: String,
    /// Includes the dot, e.g. `.json`.
    pub suffix: String,
}

/// `rfilename("RECENT", 1h, ".json") == "RECENT-1h.json"`.
pub fn rfilename(root: &str, interval: &Interval, suffix: &str) -> String {
    format!("{root}-{interval}{suffix}")
}

/// Name of the principal pointer file, e.g. `RECENT.recent`.
pub fn principal_name(root: &str) -> String {
    format!("{root}.recent")
}

/// Split `RECENT-6h.json` into root/interval/suffix, like the reference's
/// `split_rfilename` (`(.+)-([^-.]+)(\.[^.]+)`, here anchored at the end).
/// Returns `None` for names that do not have that shape (e.g. `RECENT.recent`)
/// or contain a `/`.
pub fn split_rfilename(name: &str) -> Option<RFileName> {
    if name.len() > MAX_RFILENAME_BYTES || name.contains('/') || name.contains('\0') {
        return None;
    }
    let dot = name.rfind('.')?;
    let (stem, suffix) = name.split_at(dot);
    if suffix.len() < 2 || suffix == ".recent" {
        return None;
    }
    let dash = stem.rfind('-')?;
    let (root, interval) = (&stem[..dash], &stem[dash + 1..]);
    if root.is_empty() || interval.is_empty() || interval.contains('.') {
        return None;
    }
    Some(RFileName {
        root: root.to_string(),
        interval: interval.to_string(),
        suffix: suffix.to_string(),
    })
}

/// Is `name` a principal pointer name (`<root>.recent`)?  Returns the root.
pub fn principal_root(name: &str) -> Option<&str> {
    let root = name.strip_suffix(".recent")?;
    (!root.is_empty() && !root.contains('/')).then_some(root)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalLinkError {
    #[error(
        "RECENT.recent symlink target {0:?} contains '/' (the reference client refuses that too)"
    )]
    HasSlash(String),
    #[error("RECENT.recent symlink target {0:?} is not of the form <root>-<interval><suffix>")]
    NotRFileName(String),
    #[error("RECENT.recent symlink target {target:?} has root {got:?}, expected {want:?}")]
    WrongRoot {
        target: String,
        got: String,
        want: String,
    },
    #[error("RECENT.recent symlink target {target:?} has a bad interval: {why}")]
    BadInterval { target: String, why: String },
}

/// Validate the target of the `<root>.recent` symlink (as read from the
/// rsync file list) and return its parts; the caller then fetches that
/// file.  `root` is the root from the pointer's own name.
pub fn check_principal_symlink(
    root: &str,
    target: &str,
) -> Result<(RFileName, Interval), PrincipalLinkError> {
    if target.contains('/') {
        return Err(PrincipalLinkError::HasSlash(
            target.chars().take(200).collect(),
        ));
    }
    let parts = split_rfilename(target)
        .ok_or_else(|| PrincipalLinkError::NotRFileName(target.chars().take(200).collect()))?;
    if parts.root != root {
        return Err(PrincipalLinkError::WrongRoot {
            target: target.to_string(),
            got: parts.root,
            want: root.to_string(),
        });
    }
    let iv = Interval::parse(&parts.interval).map_err(|e| PrincipalLinkError::BadInterval {
        target: target.to_string(),
        why: e.to_string(),
    })?;
    Ok((parts, iv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_join() {
        let p = split_rfilename("RECENT-6h.json").unwrap();
        assert_eq!(
            (p.root.as_str(), p.interval.as_str(), p.suffix.as_str()),
            ("RECENT", "6h", ".json")
        );
        let p = split_rfilename("MY-RECENT-Z.yaml").unwrap();
        assert_eq!(
            (p.root.as_str(), p.interval.as_str(), p.suffix.as_str()),
            ("MY-RECENT", "Z", ".yaml")
        );
        assert_eq!(split_rfilename("RECENT.recent"), None);
        assert_eq!(split_rfilename("MY-RECENT.recent"), None);
        assert_eq!(split_rfilename("-1h.json"), None);
        assert_eq!(split_rfilename("RECENT-.json"), None);
        assert_eq!(split_rfilename("a/RECENT-1h.json"), None);
        assert_eq!(split_rfilename("RECENT-1h."), None);
        assert_eq!(
            rfilename("RECENT", &Interval::parse("1h").unwrap(), ".json"),
            "RECENT-1h.json"
        );
        assert_eq!(principal_name("RECENT"), "RECENT.recent");
        assert_eq!(principal_root("RECENT.recent"), Some("RECENT"));
        assert_eq!(principal_root(".recent"), None);
        assert_eq!(principal_root("RECENT-1h.json"), None);
    }

    #[test]
    fn principal_symlink() {
        let (p, iv) = check_principal_symlink("RECENT", "RECENT-1h.json").unwrap();
        assert_eq!(p.suffix, ".json");
        assert_eq!(iv.secs(), 3600);
        assert!(matches!(
            check_principal_symlink("RECENT", "../RECENT-1h.json"),
            Err(PrincipalLinkError::HasSlash(_))
        ));
        assert!(matches!(
            check_principal_symlink("RECENT", "OTHER-1h.json"),
            Err(PrincipalLinkError::WrongRoot { .. })
        ));
        assert!(matches!(
            check_principal_symlink("RECENT", "RECENT-1x.json"),
            Err(PrincipalLinkError::BadInterval { .. })
        ));
        assert!(matches!(
            check_principal_symlink("RECENT", "whatever"),
            Err(PrincipalLinkError::NotRFileName(_))
        ));
    }
}
