//! The `ferry-server` binary's command line: what a person sees when they
//! start it right or wrong.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry-server"))
}

#[test]
fn help_names_every_flag() {
    let out = server().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--dir",
        "--max-file-size",
        "--max-connections",
        "--grace",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn port_zero_prints_the_real_port_and_creates_the_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a/b/uploads");
    let mut child = server()
        .args(["--listen", "127.0.0.1:0", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("line");
    let _ = child.kill();
    let _ = child.wait();
    let port: u16 = line
        .trim()
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert_ne!(port, 0);
    assert!(dir.is_dir());
}

#[test]
fn a_bad_address_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = server()
        .args(["--listen", "not-an-address", "--dir"])
        .arg(tmp.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot serve") && err.contains("not-an-address"),
        "{err}"
    );
}

#[test]
fn a_bad_size_is_refused_by_the_parser() {
    let out = server()
        .args(["--max-file-size", "lots"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a size"));
}
