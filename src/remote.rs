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

/// Parse a source argument; `None` when it is not a daemon URL.
pub fn parse(src: &str) -> Result<RemoteSpec, String> {
    let (userhost, rest, url_port) = if let Some(r) = src.strip_prefix("rsync://") {
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
    }
}
