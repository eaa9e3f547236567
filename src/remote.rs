//! Remote source syntax, as rsync accepts it: `rsync://[user@]host[:port]/module[/path]`
//! and `[user@]host::module[/path]` for a daemon, `[user@]host:path` for a
//! server started over a remote shell (ssh).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Empty for a module listing.
    pub module: String,
    /// Path below the module (may be empty), raw bytes, no leading '/'; for a
    /// remote-shell source, the remote path as given.
    pub path: Vec<u8>,
    /// Reached over a remote shell (`host:path`) rather than a daemon.
    pub shell: bool,
}

impl RemoteSpec {
    /// The server argument: `module/path` (daemon) or the path (remote shell).
    pub fn remote_arg(&self) -> Vec<u8> {
        if self.shell {
            return if self.path.is_empty() { b".".to_vec() } else { self.path.clone() };
        }
        let mut a = self.module.clone().into_bytes();
        a.push(b'/');
        a.extend_from_slice(&self.path);
        a
    }
}

/// Why a `scheme://` source other than `rsync://` is refused, or `None`.
///
/// rmirror speaks the plain daemon protocol and rsync over a remote shell,
/// nothing else. `rsyncs://` (rsync-ssl, TLS) in particular must never turn
/// into an unauthenticated plaintext connection, and no `scheme://host/…`
/// may fall through to the `host:path` remote-shell syntax (which would start
/// ssh to a host named after the scheme). Callers refuse these before any
/// connection is made, with exit code 4 ("requested action not supported").
pub fn unsupported_scheme(src: &str) -> Option<String> {
    let i = src.find("://")?;
    let scheme = &src[..i];
    let valid = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid || scheme.eq_ignore_ascii_case("rsync") {
        return None;
    }
    let shown = crate::text::escape_bytes(src.as_bytes(), false);
    if scheme.eq_ignore_ascii_case("rsyncs") {
        return Some(format!(
            "{shown}: TLS (rsync-ssl, rsyncs://) is not implemented in rmirror, and it will not fall back to an \
             unauthenticated plaintext connection; refusing to connect. Write rsync://{} to accept plaintext \
             explicitly, or reach the daemon over ssh (host:path with -e) or a TLS tunnel",
            crate::text::escape_bytes(src[i + 3..].as_bytes(), false)
        ));
    }
    Some(format!(
        "{shown}: unsupported URL scheme {:?}; refusing to connect. Sources are rsync://host[:port]/module/path, \
         host::module/path, or [user@]host:path (over ssh)",
        crate::text::escape_bytes(scheme.as_bytes(), false)
    ))
}

/// Parse a source argument; `None` when it is not a daemon URL.
pub fn parse(src: &str) -> Result<RemoteSpec, String> {
    if let Some(why) = unsupported_scheme(src) {
        return Err(why);
    }
    let rsync_url = src.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("rsync://"));
    let (userhost, rest, url_port) = if let Some(r) = src.get(8..).filter(|_| rsync_url) {
        let (hostpart, rest) = match r.find('/') {
            Some(i) => (&r[..i], &r[i + 1..]),
            None => (r, ""),
        };
        let (uh, port) = split_port(hostpart)?;
        (uh.to_string(), rest.to_string(), port)
    } else if let Some(i) = src.find("::") {
        (src[..i].to_string(), src[i + 2..].trim_start_matches('/').to_string(), None)
    } else if let Some(i) = src.find(':').filter(|&i| !src[..i].contains('/') && i > 0) {
        return parse_shell(&src[..i], &src[i + 1..]);
    } else {
        return Err(format!(
            "{src:?} is not an rsync daemon source: use rsync://host/module/path or host::module/path"
        ));
    };
    let (user, host) = match userhost.rfind('@') {
        Some(i) => (Some(userhost[..i].to_string()), userhost[i + 1..].to_string()),
        None => (None, userhost),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err(format!("no host in {src:?}"));
    }
    if host.starts_with('-') {
        return Err(format!("host {host:?} looks like an option; refusing it"));
    }
    let (module, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i + 1..].as_bytes().to_vec()),
        None => (rest.clone(), Vec::new()),
    };
    if module.contains(|c: char| c.is_control()) {
        return Err("module name contains control characters".into());
    }
    if path.split(|&b| b == b'/').any(|c| c == b"..") {
        return Err(format!("path {:?} contains '..'", String::from_utf8_lossy(&path)));
    }
    Ok(RemoteSpec { user, host, port: url_port, module, path, shell: false })
}

fn parse_shell(userhost: &str, path: &str) -> Result<RemoteSpec, String> {
    let (user, host) = match userhost.rfind('@') {
        Some(i) => (Some(userhost[..i].to_string()), userhost[i + 1..].to_string()),
        None => (None, userhost.to_string()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err("no host before ':'".into());
    }
    if host.starts_with('-') || user.as_deref().is_some_and(|u| u.starts_with('-')) {
        return Err(format!("host {host:?} looks like an option; refusing it"));
    }
    if path.starts_with('-') {
        return Err(format!("remote path {path:?} looks like an option; refusing it"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("host {host:?} contains spaces or control characters"));
    }
    Ok(RemoteSpec { user, host, port: None, module: String::new(), path: path.as_bytes().to_vec(), shell: true })
}

/// Quote one argument for the remote POSIX shell that ssh hands the command to.
pub fn shell_quote(arg: &[u8]) -> Vec<u8> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"_./=,:+@%-".contains(&b);
    if !arg.is_empty() && arg.iter().all(|&b| safe(b)) {
        return arg.to_vec();
    }
    let mut q = vec![b'\''];
    for &b in arg {
        if b == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(b);
        }
    }
    q.push(b'\'');
    q
}

fn split_port(hostpart: &str) -> Result<(&str, Option<u16>), String> {
    // [v6]:port, host:port, host
    if let Some(end) = hostpart.rfind(']') {
        let after = &hostpart[end + 1..];
        if let Some(p) = after.strip_prefix(':') {
            let port = p.parse().map_err(|_| format!("bad port {p:?}"))?;
            return Ok((&hostpart[..end + 1], Some(port)));
        }
        return Ok((hostpart, None));
    }
    match hostpart.rfind(':') {
        Some(i) if !hostpart[..i].contains(':') => {
            let p = &hostpart[i + 1..];
            let port = p.parse().map_err(|_| format!("bad port {p:?}"))?;
            Ok((&hostpart[..i], Some(port)))
        }
        _ => Ok((hostpart, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn forms() {
        let r = parse("rsync://u@h:8873/m/a/b/").unwrap();
        assert_eq!(
            r,
            RemoteSpec {
                user: Some("u".into()),
                host: "h".into(),
                port: Some(8873),
                module: "m".into(),
                path: b"a/b/".to_vec(),
                shell: false
            }
        );
        let r = parse("h::m/x").unwrap();
        assert_eq!((r.host.as_str(), r.module.as_str(), r.path.as_slice()), ("h", "m", &b"x"[..]));
        let r = parse("rsync://h/").unwrap();
        assert_eq!(r.module, "");
        let r = parse("rsync://h").unwrap();
        assert_eq!(r.module, "");
        assert_eq!(parse("rsync://[::1]:99/m").unwrap().host, "::1");
        assert!(parse("/local/path").is_err());
        assert!(parse("/local/pa:th").is_err());
        let r = parse("me@host:/srv/x/").unwrap();
        assert!(r.shell);
        assert_eq!((r.user.as_deref(), r.host.as_str(), r.remote_arg()), (Some("me"), "host", b"/srv/x/".to_vec()));
        assert_eq!(parse("host:").unwrap().remote_arg(), b".");
        assert!(parse("-oProxyCommand=x:y").is_err());
        assert!(parse("host:-e").is_err());
        assert_eq!(shell_quote(b"a b'c"), b"'a b'\\''c'".to_vec());
        assert_eq!(shell_quote(b"-lHtpre.LfxCvu"), b"-lHtpre.LfxCvu".to_vec());
        assert!(parse("rsync://-oProxy/m").is_err());
        assert!(parse("rsync://h/m/../x").is_err());
        assert_eq!(parse("rsync://h/m").unwrap().remote_arg(), b"m/");
        assert_eq!(parse("RSYNC://h:1/m/x").unwrap(), parse("rsync://h:1/m/x").unwrap());
    }

    /// rsyncs:// (TLS) and unknown schemes are refused, never parsed as a
    /// plaintext daemon URL or as `host:path` (ssh to a host "rsyncs").
    #[test]
    fn schemes_other_than_rsync_are_refused() {
        for src in ["rsyncs://h/m/", "RSYNCS://h:874/m", "rsyncs://u@h/", "https://h/m/", "ftp://h/m", "ssh://h/x", "s+x.y-z://h/"] {
            let why = unsupported_scheme(src).unwrap_or_else(|| panic!("{src} accepted"));
            assert!(why.contains("refusing to connect"), "{why}");
            assert_eq!(parse(src).err().as_deref(), Some(why.as_str()));
        }
        assert!(unsupported_scheme("rsyncs://h/m").unwrap().contains("TLS"));
        assert!(unsupported_scheme("rsyncs://h/m").unwrap().contains("rsync://h/m"));
        // Not a scheme: rsync URLs, daemon and shell syntaxes, local-looking paths.
        for src in ["rsync://h/m", "Rsync://h/m", "h::m/a://b", "host:/p://x", "1x://h/", "./a://b", "a/b://c", "://h"] {
            assert!(unsupported_scheme(src).is_none(), "{src}");
        }
        assert!(unsupported_scheme("\x1b[2J://h").is_none());
        let esc = unsupported_scheme("x\x1b://h").unwrap_or_default();
        assert!(esc.is_empty(), "control bytes are not a scheme");
        assert!(!unsupported_scheme("rsyncs://h/\x1b[2J").unwrap().contains('\x1b'), "escaped");
    }
}
