//! 8. Connection-level failures and their exit codes.

use std::net::TcpListener;
use std::time::Duration;

use crate::common::*;
use crate::support::{free_port, tree, Module, Rsyncd, TestDir};

#[test]
fn error_unknown_module_exit_5_with_daemon_message() {
    let src = TestDir::new("src");
    tree::TreeSpec::new().file("a", "a\n").write(src.path());
    let d = Rsyncd::builder().add_module(Module::new("pub", src.path())).start();
    let dest = TestDir::new("dest");
    std::fs::write(dest.join("keep"), "k\n").unwrap();
    let before = snapshot(dest.path());
    let url = format!("{}nope/", d.root_url());
    let out = sync(&url, dest.path(), &["--delete"]);
    out.expect_code(5);
    assert!(
        out.stderr().contains("Unknown module 'nope'"),
        "daemon's message missing:\n{}",
        out.show()
    );
    assert_unchanged(&before, dest.path(), "unknown module");
}

#[test]
fn error_connection_refused_exit_10() {
    let port = free_port(); // nothing listens there any more
    let dest = TestDir::new("dest");
    let out = sync(&format!("rsync://127.0.0.1:{port}/pub/"), dest.path(), &[]);
    out.expect_code(10);
    assert!(out.stderr().to_lowercase().contains("refused"), "{}", out.show());
}

/// A listener that accepts (the kernel completes the handshake) but never
/// sends the greeting: `--timeout=2` must end the run with exit 30.
#[test]
fn error_silent_server_timeout_exit_30() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dest = TestDir::new("dest");
    let out = rm(["sync", "--timeout=2"])
        .arg(format!("rsync://127.0.0.1:{port}/pub/"))
        .arg(dest.path())
        .timeout(Duration::from_secs(30))
        .run();
    out.expect_code(30);
    assert!(out.elapsed < Duration::from_secs(15), "took {:?}", out.elapsed);
    drop(l);
}

/// A listening socket whose accept queue is full (backlog 0, one connection
/// already queued, never accepted): Linux drops further SYNs, so connect()
/// hangs and `--contimeout=2` must give exit 35. Skipped (passes) if the
/// kernel completes the connection anyway.
#[test]
fn error_connect_timeout_exit_35() {
    let Some((fd, port, _filler)) = full_backlog_listener() else {
        eprintln!("skip: could not build a listener whose accept queue blocks connect()");
        return;
    };
    let dest = TestDir::new("dest");
    let out = rm(["sync", "--contimeout=2"])
        .arg(format!("rsync://127.0.0.1:{port}/pub/"))
        .arg(dest.path())
        .timeout(Duration::from_secs(30))
        .run();
    unsafe { libc::close(fd) };
    out.expect_code(35);
    assert!(
        out.elapsed >= Duration::from_millis(1500) && out.elapsed < Duration::from_secs(15),
        "took {:?}",
        out.elapsed
    );
}

/// listen(fd, 0) on 127.0.0.1 plus one queued connection; returns the raw
/// fd, the port and the filler stream, or None if a second connect still
/// succeeds within 1 s (then the trick does not work here).
fn full_backlog_listener() -> Option<(i32, u16, Vec<std::net::TcpStream>)> {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as _;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        addr.sin_port = 0;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) != 0
            || libc::listen(fd, 0) != 0
        {
            libc::close(fd);
            return None;
        }
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut l = len;
        libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut l);
        let port = u16::from_be(got.sin_port);
        let sa: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let mut fillers = Vec::new();
        // fill the queue (backlog 0 admits one), then probe
        for _ in 0..2 {
            match std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(500)) {
                Ok(s) => fillers.push(s),
                Err(_) => return Some((fd, port, fillers)),
            }
        }
        libc::close(fd);
        None
    }
}
