//! The `ferry` binary's command line, as a person first meets it.

use std::process::Command;

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

#[test]
fn help_shows_the_picker_and_the_send_command() {
    let out = ferry().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["send", "--to", "--limit-rate", "FERRY_SERVER", "[DIR]"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}

#[test]
fn send_help_says_symlinks_are_not_followed() {
    let out = ferry().args(["send", "--help"]).output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Symlinks are not followed"), "{help}");
    assert!(help.contains("--follow-links"), "{help}");
}

#[test]
fn a_bad_rate_is_refused_with_a_hint() {
    let out = ferry()
        .args(["send", "--limit-rate", "fast", "x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("try 500K or 20M"));
}

#[test]
fn send_needs_at_least_one_path() {
    let out = ferry().arg("send").output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PATHS"));
}

#[test]
fn options_may_come_before_the_send_command() {
    // Nothing listens on port 1: the send fails for that reason, which
    // shows the command line itself was understood.
    let state = tempfile::tempdir().expect("tempdir");
    let out = ferry()
        .args(["--to", "127.0.0.1:1", "send", "/nonexistent-ferry-path"])
        .env("XDG_STATE_HOME", state.path())
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("nonexistent-ferry-path: cannot read"),
        "{said}"
    );
}

#[test]
fn the_picker_without_a_terminal_points_to_ferry_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ferry()
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use `ferry send PATH...`"));
    // Nothing meant for a terminal leaks into the output.
    assert!(!out.stdout.contains(&0x1b), "{:?}", out.stdout);
}
