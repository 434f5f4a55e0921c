//! The README's quick start, run as written: the test reads the fenced block after
//! `<!-- quickstart -->` from README.md and runs it with bash (`set -euo pipefail`)
//! in a fresh directory where the real server runs on the embedded default, as
//! after `make run`. It substitutes exactly two things, and fails when either is
//! missing from the block (so README and test cannot drift apart):
//!
//! - `$PWD/target/release`, where `make run` puts the binaries, becomes the
//!   directory of the binaries this test built (`onboardctl` from the same
//!   workspace, see `support::workspace_bin`);
//! - `http://localhost:8080`, the default bind, becomes the free port the server
//!   got here.
//!
//! The server runs with the same defaults `make run` uses; only its bind address
//! is set (to that free port).

use std::path::Path;
use std::process::Command;

use crate::support::{workspace_bin, Server};

const README: &str = include_str!("../../../../README.md");

/// The fenced code block that follows `marker`.
fn block_after(text: &str, marker: &str) -> String {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let rest = &text[start + marker.len()..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body = &rest[open..];
    let first_line_end = body.find('\n').unwrap();
    let close = body[first_line_end..]
        .find("\n```")
        .expect("the block ends");
    body[first_line_end + 1..first_line_end + close + 1].to_owned()
}

#[test]
fn the_readme_starts_with_make_run_and_make_test() {
    let first = block_after(
        README,
        "On a fresh Debian/Ubuntu machine with Rust installed:",
    );
    let commands: Vec<&str> = first
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands, ["make run", "make test"], "{first}");
    // `make run` builds both binaries where the quick start looks for them.
    let makefile = include_str!("../../../../Makefile");
    let run = makefile
        .split("\nrun:")
        .nth(1)
        .and_then(|r| r.split("\n\n").next())
        .unwrap();
    assert!(
        run.contains("--release --bin onboard-server --bin onboardctl"),
        "{run}"
    );
    assert!(
        makefile.contains("\ninstall:") && makefile.contains("cargo install"),
        "make install"
    );
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let block = block_after(README, "<!-- quickstart -->");
    assert!(block.contains("$PWD/target/release"), "{block}");
    assert!(block.contains("http://localhost:8080"), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let bin_dir = workspace_bin("onboardctl")
        .parent()
        .unwrap()
        .display()
        .to_string();
    let script = block
        .replace("$PWD/target/release", &bin_dir)
        .replace("http://localhost:8080", &server.base);
    let out = Command::new("bash")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir.path())
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server\n{}",
        server.log()
    );
    // load-test-data, then the curl registration's answer, then the list.
    assert!(
        stdout.contains("3 model(s) and 5 device(s) created"),
        "{stdout}"
    );
    let answer = stdout
        .lines()
        .find(|l| l.starts_with('{') && l.contains("SN-000123"))
        .unwrap_or_else(|| panic!("no registration answer: {stdout}"));
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
    assert_eq!(answer["status"], "registered");
    assert!(answer["private_key_pem"].as_str().is_some());
    for serial in ["SN-000123", "DEMO-0001", "DEMO-0005"] {
        assert!(stdout.contains(serial), "{serial} listed: {stdout}");
    }
    // On the server's database, in the directory it runs in.
    assert!(Path::new(&dir.path().join("data/onboard.db")).is_file());
    assert_eq!(
        std::fs::metadata(dir.path().join("line7-keys.csv"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap(),
        0o600
    );
}
