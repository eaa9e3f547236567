//! What the client asks of the server: the option set that shapes the file
//! list and transfer, turned into the server argv (`options.c server_options`,
//! `maybe_add_e_option`).

use crate::checksum::CsumType;
use crate::proto::token::Compression;

/// Compression request from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressRequest {
    #[default]
    Off,
    /// `-z`: negotiate (zstd preferred); zlib against servers without negotiation.
    Negotiate,
    /// `--compress-choice=NAME`.
    Explicit(Compression),
}

/// Options that change what the server sends. Everything here is forwarded.
#[derive(Debug, Clone)]
pub struct TransferOpts {
    pub recursive: bool,
    pub dirs: bool,
    pub links: bool,
    pub perms: bool,
    pub times: bool,
    pub hard_links: bool,
    pub owner: bool,
    pub group: bool,
    pub devices: bool,
    pub specials: bool,
    pub checksum: bool,
    pub relative: bool,
    pub numeric_ids: bool,
    pub compress: CompressRequest,
    pub checksum_choice: Option<CsumType>,
    pub timeout: Option<u32>,
    pub bwlimit: Option<u32>,
    pub block_size: Option<u32>,
    /// Filter rules already in wire form, for protocol ≥ 29.
    pub filter_rules: Vec<Vec<u8>>,
    /// Filter rules in the pre-29 wire form, or why they cannot be expressed.
    pub filter_rules_old: Result<Vec<Vec<u8>>, String>,
    /// `--files-from` names, forwarded to the server (`--files-from=- --from0`).
    pub files_from: Option<Vec<Vec<u8>>>,
    /// Offer incremental recursion (protocol ≥ 30, recursive pulls only).
    pub inc_recurse: bool,
    /// `--safe-links`: the receiver skips symlinks that could point outside
    /// the tree. rsync forwards the flag to the server too (the sender does
    /// nothing with it), so this does the same. Off here as in rsync; a
    /// [`crate::engine::pull::PullSpec`] turns it on by default.
    pub safe_links: bool,
}

impl Default for TransferOpts {
    fn default() -> Self {
        TransferOpts {
            recursive: true,
            dirs: false,
            links: true,
            perms: true,
            times: true,
            hard_links: true,
            owner: false,
            group: false,
            devices: false,
            specials: false,
            checksum: false,
            relative: false,
            numeric_ids: false,
            compress: CompressRequest::Off,
            checksum_choice: None,
            timeout: None,
            bwlimit: None,
            block_size: None,
            filter_rules: vec![],
            filter_rules_old: Ok(vec![]),
            files_from: None,
            inc_recurse: false,
            safe_links: false,
        }
    }
}

/// Capability letters we put after `-e.` (protocol ≥ 30), in rsync's order,
/// after `i` (incremental recursion) when [`TransferOpts::inc_recurse`] asks for it.
/// `L`: this receiver sets symlink times. `f` safe file list, `x` no xattr
/// shortcut, `C` checksum-seed order fix, `v` varint flist flags + name
/// negotiation, `u` names for id 0.
pub const CAPS: &str = "LfxCvu";

/// Compat flags (`compat.c`).
pub const CF_INC_RECURSE: i32 = 1 << 0;
pub const CF_SYMLINK_TIMES: i32 = 1 << 1;
pub const CF_SYMLINK_ICONV: i32 = 1 << 2;
pub const CF_SAFE_FLIST: i32 = 1 << 3;
pub const CF_AVOID_XATTR_OPTIM: i32 = 1 << 4;
pub const CF_CHKSUM_SEED_FIX: i32 = 1 << 5;
pub const CF_INPLACE_PARTIAL_DIR: i32 = 1 << 6;
pub const CF_VARINT_FLIST_FLAGS: i32 = 1 << 7;
pub const CF_ID0_NAMES: i32 = 1 << 8;

/// Flags a server may set given the letters in [`CAPS`]: what we offered plus the
/// two bits that only describe the server's own build.
pub const CF_ACCEPTED: i32 = CF_SYMLINK_TIMES
    | CF_SYMLINK_ICONV
    | CF_SAFE_FLIST
    | CF_AVOID_XATTR_OPTIM
    | CF_CHKSUM_SEED_FIX
    | CF_VARINT_FLIST_FLAGS
    | CF_ID0_NAMES;

/// Checksum names we offer, strongest first (canonical order, `checksum.c`).
/// md4 is not offered by name: its seed order differs between rsync builds.
pub const CHECKSUM_OFFER: &str = "xxh128 xxh3 xxh64 md5";
/// Compression names we offer, canonical order (`compat.c valid_compressions_items`).
pub const COMPRESS_OFFER: &str = "zstd zlibx zlib";

pub fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Zlib => "zlib",
        Compression::Zlibx => "zlibx",
        Compression::Zstd => "zstd",
    }
}

pub fn compression_from_name(s: &str) -> Option<Compression> {
    match s.to_ascii_lowercase().as_str() {
        "zstd" => Some(Compression::Zstd),
        "zlib" => Some(Compression::Zlib),
        "zlibx" => Some(Compression::Zlibx),
        "none" => Some(Compression::None),
        _ => None,
    }
}

impl TransferOpts {
    /// Whether the `i` capability is sent: only for a recursive tree pull.
    pub fn offers_inc_recurse(&self) -> bool {
        self.inc_recurse && self.recursive && self.files_from.is_none()
    }
}

/// Escape an option argument the way `options.c safe_arg` does for values the
/// daemon will un-backslash (3.5.0 `read_args`).
fn safe_opt(name: &str, value: &str) -> Vec<u8> {
    let mut s = String::from(name);
    s.push('=');
    for c in value.chars() {
        if c == '\\' || c == ' ' {
            s.push('\\');
        }
        s.push(c);
    }
    s.into_bytes()
}

/// The server argv (without argv[0]; the daemon supplies it), for a pull.
/// `remote_path` starts with the module name.
pub fn server_args(o: &TransferOpts, protocol: i32, remote_paths: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = vec![b"--server".to_vec(), b"--sender".to_vec()];
    let mut c = String::from("-");
    if o.links {
        c.push('l');
    }
    if o.dirs && !o.recursive {
        c.push('d');
    }
    if o.hard_links {
        c.push('H');
    }
    if o.owner {
        c.push('o');
    }
    if o.group {
        c.push('g');
    }
    if o.devices {
        c.push('D');
    }
    if o.times {
        c.push('t');
    }
    if o.perms {
        c.push('p');
    }
    if o.recursive {
        c.push('r');
    }
    if o.checksum {
        c.push('c');
    }
    if o.relative {
        c.push('R');
    }
    match o.compress {
        CompressRequest::Negotiate | CompressRequest::Explicit(Compression::Zlib) => c.push('z'),
        _ => {}
    }
    if protocol >= 30 {
        c.push_str("e.");
        if o.offers_inc_recurse() {
            c.push('i');
        }
        c.push_str(CAPS);
    }
    if c.len() > 1 {
        args.push(c.into_bytes());
    }
    if o.devices && !o.specials {
        args.push(b"--no-specials".to_vec());
    } else if o.specials && !o.devices {
        args.push(b"--specials".to_vec());
    }
    if o.safe_links {
        args.push(b"--safe-links".to_vec());
    }
    if o.numeric_ids {
        args.push(b"--numeric-ids".to_vec());
    }
    if let Some(t) = o.timeout {
        args.push(format!("--timeout={t}").into_bytes());
    }
    if let Some(b) = o.bwlimit {
        args.push(format!("--bwlimit={b}").into_bytes());
    }
    if let Some(b) = o.block_size {
        args.push(format!("-B{b}").into_bytes());
    }
    if let Some(cs) = o.checksum_choice {
        args.push(safe_opt("--checksum-choice", cs.name()));
    }
    match o.compress {
        CompressRequest::Explicit(Compression::Zlibx) => args.push(b"--new-compress".to_vec()),
        CompressRequest::Explicit(Compression::Zlib) => args.push(b"--old-compress".to_vec()),
        CompressRequest::Explicit(other) => args.push(safe_opt("--compress-choice", compression_name(other))),
        _ => {}
    }
    if o.files_from.is_some() {
        args.push(b"--files-from=-".to_vec());
        args.push(b"--from0".to_vec());
    }
    args.push(b".".to_vec());
    for p in remote_paths {
        args.push(p.clone());
    }
    args
}

/// Serialise argv for the daemon: `\0`-terminated with a final `\0` at protocol
/// ≥ 30, `\n`-terminated with a final empty line below.
pub fn encode_args(args: &[Vec<u8>], protocol: i32) -> Vec<u8> {
    let sep = if protocol >= 30 { 0u8 } else { b'\n' };
    let mut out = Vec::new();
    for a in args {
        out.extend_from_slice(a);
        out.push(sep);
    }
    out.push(sep);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn default_pull_args() {
        let o = TransferOpts::default();
        let a = server_args(&o, 32, &[b"m/".to_vec()]);
        let s: Vec<String> = a.iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect();
        assert_eq!(s, ["--server", "--sender", "-lHtpre.LfxCvu", ".", "m/"]);
        let inc = TransferOpts { inc_recurse: true, ..TransferOpts::default() };
        assert_eq!(server_args(&inc, 32, &[b"m/".to_vec()])[2], b"-lHtpre.iLfxCvu");
        let a = server_args(&o, 29, &[b"m/".to_vec()]);
        assert_eq!(a[2], b"-lHtpr");
        assert_eq!(encode_args(&a, 29).last(), Some(&b'\n'));
        let enc = encode_args(&[b"a".to_vec()], 30);
        assert_eq!(enc, b"a\0\0");
    }
    #[test]
    fn safe_links_is_forwarded_like_rsync() {
        let o = TransferOpts { safe_links: true, numeric_ids: true, ..TransferOpts::default() };
        let s: Vec<String> =
            server_args(&o, 32, &[b"m/".to_vec()]).iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect();
        assert_eq!(s, ["--server", "--sender", "-lHtpre.LfxCvu", "--safe-links", "--numeric-ids", ".", "m/"]);
        let s = server_args(&TransferOpts::default(), 29, &[b"m/".to_vec()]);
        assert!(!s.contains(&b"--safe-links".to_vec()));
    }
    #[test]
    fn compress_args() {
        let mut o = TransferOpts::default();
        o.compress = CompressRequest::Explicit(Compression::Zstd);
        let a = server_args(&o, 32, &[b"m/".to_vec()]);
        assert!(a.contains(&b"--compress-choice=zstd".to_vec()));
        assert!(!String::from_utf8_lossy(&a[2]).contains('z'));
        o.compress = CompressRequest::Negotiate;
        let a = server_args(&o, 32, &[b"m/".to_vec()]);
        assert!(String::from_utf8_lossy(&a[2]).starts_with("-lHtprze."));
    }
}
