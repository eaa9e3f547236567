//! 3. Auth: `auth users` module; right password from RSYNC_PASSWORD and from
//! `--password-file` works; a wrong one exits 5 naming authentication,
//! leaves DEST untouched, and no password ever appears in the output.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use crate::support::oracle::Oracle;
use crate::support::{tree, Module, Rsyncd, TestDir};

const USER: &str = "alice";
const PW: &str = "Corr3ct-H0rse-pw";
const WRONG: &str = "Wr0ng-Batt3ry-pw";

fn auth_daemon() -> (TestDir, Rsyncd) {
    let src = TestDir::new("src");
    tree::TreeSpec::new()
        .file("a.txt", "secret a\n")
        .file("d/b.txt", "secret b\n")
        .random_file("d/big.bin", 200_000, 3)
        .symlink("ln", "a.txt")
        .write(src.path());
    let d = Rsyncd::builder()
        .add_module(Module::new("sec", src.path()).comment("auth").auth(USER, PW))
        .start();
    (src, d)
}

#[track_caller]
fn assert_no_password(out: &Out) {
    for pw in [PW, WRONG] {
        for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !stream.windows(pw.len()).any(|w| w == pw.as_bytes()),
                "password {pw:?} leaked into {name}:\n{}",
                out.show()
            );
        }
    }
}

fn password_file(dir: &TestDir, name: &str, content: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn auth_right_password_from_env() {
    let (_src, d) = auth_daemon();
    let url = d.url_with_user("sec", USER);
    let dest = TestDir::new("dest");
    let out = rm(["sync", "-i"])
        .arg(&url)
        .arg(dest.path())
        .env("RSYNC_PASSWORD", PW)
        .run();
    out.ok();
    assert_no_password(&out);
    assert!(out.stdout().contains(">f+++++++++ d/big.bin"), "{}", out.show());
    Oracle::new(&url, dest.path()).password(PW).assert_clean();
}

#[test]
fn auth_right_password_from_file() {
    let (_src, d) = auth_daemon();
    let url = d.url_with_user("sec", USER);
    let dest = TestDir::new("dest");
    let pwdir = TestDir::new("pw");
    // rsync reads the first line; a trailing newline is not part of it.
    let pf = password_file(&pwdir, "pw", &format!("{PW}\n"), 0o600);
    let out = rm(["sync", "-v", "--password-file"])
        .arg(&pf)
        .arg(&url)
        .arg(dest.path())
        .run();
    out.ok();
    assert_no_password(&out);
    Oracle::new(&url, dest.path()).password(PW).assert_clean();
    // The file wins over nothing; the env var is not needed.
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"secret a\n");
}

/// Seeds DEST (with the real client), then runs rmirror with a wrong
/// password delivered by DELIVER; checks exit 5, the message, DEST intact,
/// no password in the output, and no summary line in the daemon log.
fn wrong_password_case(deliver_by_file: bool) {
    let (src, d) = auth_daemon();
    let url = d.url_with_user("sec", USER);
    let dest = TestDir::new("dest");
    {
        let out = crate::support::rsync_command()
            .args(["-aH", "--no-motd"])
            .arg(&url)
            .arg(dest.path())
            .env("RSYNC_PASSWORD", PW)
            .output()
            .unwrap();
        assert!(out.status.success(), "seeding failed: {out:?}");
    }
    // Make the source differ so a run that got through would change DEST.
    fs::write(src.join("a.txt"), "changed on the server\n").unwrap();
    fs::write(src.join("new.txt"), "new\n").unwrap();
    fs::write(dest.join("extra"), "extraneous\n").unwrap();
    let before = snapshot(dest.path());
    let n_sessions = d.sessions().len();

    let pwdir = TestDir::new("pw");
    let r = rm(["sync", "-i", "--delete"]);
    let r = if deliver_by_file {
        let pf = password_file(&pwdir, "pw", &format!("{WRONG}\n"), 0o600);
        r.arg("--password-file").arg(pf)
    } else {
        r.env("RSYNC_PASSWORD", WRONG)
    };
    let out = r.arg(&url).arg(dest.path()).run();
    out.expect_code(5);
    assert_no_password(&out);
    assert!(
        out.stderr().to_lowercase().contains("auth"),
        "stderr does not name authentication:\n{}",
        out.show()
    );
    assert!(
        out.stderr().contains("auth failed on module sec"),
        "expected the daemon's words (`@ERROR: auth failed on module sec`):\n{}",
        out.show()
    );
    assert_unchanged(&before, dest.path(), "wrong password");
    assert_eq!(d.sessions().len(), n_sessions, "a session ran despite the bad password");
    assert!(d.log().contains("auth failed"), "daemon log: {}", d.log());
}

#[test]
fn auth_wrong_password_env_exits_5_dest_untouched() {
    wrong_password_case(false);
}

#[test]
fn auth_wrong_password_file_exits_5_dest_untouched() {
    wrong_password_case(true);
}

/// No password at all (no env, no file, stdin closed): must fail (5), not
/// hang waiting for a prompt.
#[test]
fn auth_no_password_fails_without_hanging() {
    let (_src, d) = auth_daemon();
    let url = d.url_with_user("sec", USER);
    let dest = TestDir::new("dest");
    let before = snapshot(dest.path());
    let out = rm(["sync"])
        .arg(&url)
        .arg(dest.path())
        .timeout(std::time::Duration::from_secs(20))
        .run();
    assert!(!out.timed_out, "hung without a password:\n{}", out.show());
    assert_ne!(out.code, Some(0), "{}", out.show());
    assert_unchanged(&before, dest.path(), "no password");
}

/// rsync refuses a password file others can read (exit 1, before connecting).
#[test]
fn auth_other_readable_password_file_refused() {
    let (_src, d) = auth_daemon();
    let url = d.url_with_user("sec", USER);
    let dest = TestDir::new("dest");
    let pwdir = TestDir::new("pw");
    let pf = password_file(&pwdir, "pw", &format!("{PW}\n"), 0o644);
    let before = snapshot(dest.path());
    let out = rm(["sync", "--password-file"]).arg(&pf).arg(&url).arg(dest.path()).run();
    assert_no_password(&out);
    // The real client: "ERROR: password file must not be other-accessible", exit 1.
    let real = crate::support::rsync_command()
        .args(["-a", "--password-file"])
        .arg(&pf)
        .arg(&url)
        .arg(TestDir::new("rdest").path())
        .output()
        .unwrap();
    assert_eq!(real.status.code(), Some(1), "real rsync: {real:?}");
    out.expect_code(1);
    assert!(
        out.stderr().contains("other-accessible"),
        "expected rsync's message:\n{}",
        out.show()
    );
    assert_unchanged(&before, dest.path(), "other-readable password file");
}
