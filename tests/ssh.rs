//! `rmirror sync user@host:path DEST` over a real OpenSSH server: the test
//! starts Debian's sshd on 127.0.0.1 and a free port with throwaway keys, and
//! checks the destination against the source with the real rsync.
//!
//! Where sshd cannot be started (not installed, no privilege-separation
//! directory, not root), the test prints why and passes without checking —
//! `scripts/test` installs `openssh-server` so CI runs it for real.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, tree, TestDir};

struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
    _dir: TestDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    fn ssh_command(&self) -> String {
        format!(
            "ssh -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            self.port,
            self.key.display()
        )
    }
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// Start sshd, or say why it cannot be started here.
fn start_sshd() -> Result<Sshd, String> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        return Err("sshd is not installed (Debian package openssh-server)".into());
    }
    if !rustix::process::geteuid().is_root() {
        return Err("not root: sshd needs root to switch users".into());
    }
    std::fs::create_dir_all("/run/sshd").map_err(|e| format!("cannot create /run/sshd: {e}"))?;
    let dir = TestDir::new("sshd");
    let host_key = dir.join("host_key");
    let key = dir.join("user_key");
    for k in [&host_key, &key] {
        run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(k))?;
    }
    std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).map_err(|e| e.to_string())?;
    let port = free_port();
    let conf = dir.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             PermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             StrictModes no\nUsePAM no\nPrintMotd no\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            dir.join("authorized_keys").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start sshd: {e}"))?;
    let d = Sshd { child, port, key, _dir: dir };
    // Wait until it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(d);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("sshd did not start listening within 10 s".into())
}

fn rmirror(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rmirror")).args(args).output().expect("run rmirror")
}

/// Real rsync's view: nothing differs between SRC and DEST (content checksums,
/// times, perms, links, hard links).
fn assert_same(src: &Path, dest: &Path) {
    let out = Command::new("rsync")
        .args(["-rlptHnic", "--delete"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", dest.display()))
        .output()
        .expect("run rsync");
    assert!(out.status.success(), "rsync failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(lines.trim().is_empty(), "destination differs from source:\n{lines}");
}

#[test]
fn pull_over_real_ssh() {
    let sshd = match start_sshd() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("SKIPPED pull_over_real_ssh: {why}");
            return;
        }
    };
    let src = TestDir::new("ssh-src");
    tree::cpan_like(60, 7).write(src.path());
    std::fs::write(src.join("name with 'quote' and space"), b"q").unwrap();
    let dest = TestDir::new("ssh-dest");
    let target = dest.join("mirror");
    let ssh = sshd.ssh_command();
    let source = format!("root@127.0.0.1:{}/", src.path().display());
    for protocol in ["32", "30", "29"] {
        let _ = std::fs::remove_dir_all(&target);
        let out = rmirror(&["sync", "-z", "--protocol", protocol, "-e", &ssh, &source, target.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "protocol {protocol}: exit {:?}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(src.path(), &target);
    }
    // An update with a deletion travels too.
    std::fs::write(src.join("new-file"), b"fresh").unwrap();
    std::fs::write(target.join("stale-file"), b"old").unwrap();
    let out = rmirror(&["sync", "--delete", "-e", &ssh, &source, target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_same(src.path(), &target);
    assert!(!target.join("stale-file").exists());
}

#[test]
fn option_like_hosts_and_paths_are_refused() {
    for src in ["-oProxyCommand=touch:/x", "host:-e.sh"] {
        // After `--` clap takes it as the source; our own parser must refuse it.
        let out = rmirror(&["sync", "--", src, "/tmp/rmirror-never-created"]);
        assert_eq!(out.status.code(), Some(1), "{src}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("looks like an option"));
    }
    assert!(!Path::new("/tmp/rmirror-never-created").exists());
}

#[test]
fn banner_from_remote_shell_is_a_clear_error() {
    // A "remote shell" that prints text before starting rsync, as a noisy login script would.
    let dir = TestDir::new("banner");
    let fake = dir.join("noisy-ssh");
    std::fs::write(&fake, "#!/bin/sh\necho 'Welcome to the machine'\nexec sleep 5\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = dir.join("dest");
    let out = rmirror(&["sync", "-e", fake.to_str().unwrap(), "host:/srv/", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("remote shell"));
    assert!(!dest.exists());
}
