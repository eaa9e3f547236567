//! Remote source syntax: `rsync://[user@]host[:port]/module[/path]` and
//! `[user@]host::module[/path]`, as rsync accepts them.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Empty for a module listing.
    pub module: String,
    /// Path below the module (may be empty), raw bytes, no leading '/'.
    pub path: Vec<u8>,
}

impl RemoteSpec {
    /// The server argument: `module/path`.
    pub fn remote_arg(&self) -> Vec<u8> {
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
    Ok(RemoteSpec { user, host, port: url_port, module, path })
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
            RemoteSpec { user: Some("u".into()), host: "h".into(), port: Some(8873), module: "m".into(), path: b"a/b/".to_vec() }
        );
        let r = parse("h::m/x").unwrap();
        assert_eq!((r.host.as_str(), r.module.as_str(), r.path.as_slice()), ("h", "m", &b"x"[..]));
        let r = parse("rsync://h/").unwrap();
        assert_eq!(r.module, "");
        let r = parse("rsync://h").unwrap();
        assert_eq!(r.module, "");
        assert_eq!(parse("rsync://[::1]:99/m").unwrap().host, "::1");
        assert!(parse("/local/path").is_err());
        assert!(parse("rsync://-oProxy/m").is_err());
        assert!(parse("rsync://h/m/../x").is_err());
        assert_eq!(parse("rsync://h/m").unwrap().remote_arg(), b"m/");
    }
}
