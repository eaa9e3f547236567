//! The daemon's text phase (`clientserver.c exchange_protocols`,
//! `start_inband_exchange`) and challenge/response authentication
//! (`authenticate.c auth_client`).

use base64::Engine as _;
use md4::Md4;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// Lowest protocol this client speaks (rsync 2.6.0, 2004).
pub const MIN_PROTOCOL: i32 = 27;
/// Highest protocol this client speaks (rsync 3.4+).
pub const MAX_PROTOCOL: i32 = 32;
/// Longest text line we accept before `@RSYNCD: OK` (MOTD, listing, errors).
pub const MAX_LINE: usize = 4096;
/// Most MOTD/listing lines we accept, so a server cannot stream text forever.
pub const MAX_TEXT_LINES: usize = 100_000;

/// Auth digests in the client's preference order (`checksum.c valid_auth_checksums_items`).
pub const AUTH_DIGESTS: &[&str] = &["sha512", "sha256", "sha1", "md5", "md4"];

/// Our greeting line for a given protocol.
pub fn greeting(protocol: i32) -> Vec<u8> {
    format!("@RSYNCD: {}.0 {}\n", protocol, AUTH_DIGESTS.join(" ")).into_bytes()
}

/// A parsed server greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerGreeting {
    pub protocol: i32,
    pub sub: i32,
    pub digests: Vec<String>,
}

/// Parse `@RSYNCD: <proto>[.<sub>] [digests…]`.
pub fn parse_greeting(line: &[u8]) -> Result<ServerGreeting, String> {
    let text = std::str::from_utf8(line).map_err(|_| "server greeting is not text".to_string())?;
    let rest = text
        .strip_prefix("@RSYNCD: ")
        .ok_or_else(|| format!("server did not greet as an rsync daemon: {:?}", crate::text::escape_bytes(line, false)))?;
    let mut parts = rest.split(' ').filter(|s| !s.is_empty());
    let ver = parts.next().ok_or("server greeting carries no protocol version")?;
    let (p, s) = match ver.split_once('.') {
        Some((p, s)) => (p, Some(s)),
        None => (ver, None),
    };
    let protocol: i32 = p.parse().map_err(|_| format!("bad protocol version {:?} in server greeting", ver))?;
    let sub: i32 = match s {
        Some(s) => s.parse().map_err(|_| format!("bad sub-protocol {:?} in server greeting", ver))?,
        None => 0,
    };
    if !(20..=40).contains(&protocol) {
        return Err(format!("server speaks protocol {protocol}, outside the range 20..40 any rsync accepts"));
    }
    if s.is_none() && protocol >= 30 {
        return Err(format!("server greeting omitted the subprotocol value for protocol {protocol}"));
    }
    let digests = parts.map(|d| d.to_ascii_lowercase()).collect();
    Ok(ServerGreeting { protocol, sub, digests })
}

/// The negotiated protocol: min of both, minus one when equal with differing
/// sub-protocols (pre-releases), as `compat.c check_sub_protocol` does.
pub fn negotiate_protocol(ours: i32, theirs: &ServerGreeting) -> Result<i32, String> {
    let mut p = ours.min(theirs.protocol);
    if p == theirs.protocol && theirs.sub != 0 && theirs.protocol == ours {
        p -= 1;
    }
    if p < MIN_PROTOCOL {
        return Err(format!(
            "server speaks protocol {} (rsync older than 2.6.0); rmirror needs {} or newer",
            theirs.protocol, MIN_PROTOCOL
        ));
    }
    Ok(p)
}

/// What a text line before `@RSYNCD: OK` means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonLine {
    AuthReqd(String),
    Ok,
    Exit,
    Error(Vec<u8>),
    Text(Vec<u8>),
}

pub fn classify_line(line: &[u8]) -> DaemonLine {
    if let Some(ch) = line.strip_prefix(b"@RSYNCD: AUTHREQD ") {
        return DaemonLine::AuthReqd(String::from_utf8_lossy(ch).trim().to_string());
    }
    if line == b"@RSYNCD: OK" {
        return DaemonLine::Ok;
    }
    if line == b"@RSYNCD: EXIT" {
        return DaemonLine::Exit;
    }
    if line.starts_with(b"@ERROR") {
        let msg = line.strip_prefix(b"@ERROR: ").or_else(|| line.strip_prefix(b"@ERROR:")).unwrap_or(&line[6..]);
        return DaemonLine::Error(msg.to_vec());
    }
    DaemonLine::Text(line.to_vec())
}

/// Pick the auth digest: the server's list entry ranking best in our own list;
/// without a list, md5 at protocol ≥ 30 and the seeded ("old") md4 below.
pub fn choose_auth_digest(server: &[String], protocol: i32) -> Result<&'static str, String> {
    if server.is_empty() {
        return Ok(if protocol >= 30 { "md5" } else { "md4-old" });
    }
    AUTH_DIGESTS
        .iter()
        .copied()
        .find(|d| server.iter().any(|s| s == d))
        .ok_or_else(|| format!("server offers no auth digest rmirror knows (server: {})", server.join(" ")))
}

/// `user hash` line answering a challenge.
pub fn auth_response(user: &str, password: &[u8], challenge: &str, digest: &str) -> Vec<u8> {
    let c = challenge.as_bytes();
    let hash: Vec<u8> = match digest {
        "md4-old" => {
            let mut h = Md4::new();
            h.update([0u8; 4]);
            h.update(password);
            h.update(c);
            h.finalize().to_vec()
        }
        "md4" => Md4::new().chain_update(password).chain_update(c).finalize().to_vec(),
        "md5" => Md5::new().chain_update(password).chain_update(c).finalize().to_vec(),
        "sha1" => Sha1::new().chain_update(password).chain_update(c).finalize().to_vec(),
        "sha256" => Sha256::new().chain_update(password).chain_update(c).finalize().to_vec(),
        _ => Sha512::new().chain_update(password).chain_update(c).finalize().to_vec(),
    };
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash);
    format!("{user} {b64}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_parse_and_negotiate() {
        let g = parse_greeting(b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4").unwrap();
        assert_eq!(g.protocol, 32);
        assert_eq!(g.digests.len(), 5);
        assert_eq!(negotiate_protocol(32, &g).unwrap(), 32);
        assert_eq!(negotiate_protocol(29, &g).unwrap(), 29);
        let old = parse_greeting(b"@RSYNCD: 26").unwrap();
        assert!(negotiate_protocol(32, &old).is_err());
        assert!(parse_greeting(b"@RSYNCD: 31").is_err());
        assert!(parse_greeting(b"HTTP/1.1 400").is_err());
        assert!(parse_greeting(b"@RSYNCD: x.0").is_err());
    }

    #[test]
    fn digest_choice() {
        let s = vec!["md5".to_string(), "md4".to_string()];
        assert_eq!(choose_auth_digest(&s, 32).unwrap(), "md5");
        assert_eq!(choose_auth_digest(&[], 29).unwrap(), "md4-old");
        assert_eq!(choose_auth_digest(&[], 30).unwrap(), "md5");
        assert!(choose_auth_digest(&["blake9".into()], 32).is_err());
    }

    #[test]
    fn response_is_unpadded_base64() {
        let r = auth_response("u", b"pw", "abc", "md5");
        let s = String::from_utf8(r).unwrap();
        let b64 = s.trim_end().split(' ').nth(1).unwrap();
        assert_eq!(b64.len(), 22);
        assert!(!b64.contains('='));
        let r = auth_response("u", b"pw", "abc", "sha512");
        assert_eq!(String::from_utf8(r).unwrap().trim_end().split(' ').nth(1).unwrap().len(), 86);
    }

    #[test]
    fn lines() {
        assert_eq!(classify_line(b"@RSYNCD: OK"), DaemonLine::Ok);
        assert_eq!(classify_line(b"@ERROR: Unknown module 'x'"), DaemonLine::Error(b"Unknown module 'x'".to_vec()));
        assert_eq!(classify_line(b"@RSYNCD: AUTHREQD abc"), DaemonLine::AuthReqd("abc".into()));
    }
}
