//! Only the right people in: the server's token, tutorial clients when a
//! token is required, the delay for wrong guesses, and the refusal to listen
//! beyond this machine without a token.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_e2e::{
    Server, bin_path, connect, ferry_command, read_to_close, source_file, tutorial_send,
    tutorial_upload,
};
use ferry_proto::{ClientMsg, ErrorCode, ServerMsg, read_frame, to_body, write_frame};

const TOKEN: &str = "correct horse battery staple";

fn server_with_token(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("tempdir");
    let file = secrets.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write token");
    let mut args = vec!["--token-file", file.to_str().expect("utf8")];
    args.extend_from_slice(extra);
    (Server::start_with(&args), secrets)
}

/// Says hello with `token` and returns the server's answer.
fn hello(addr: &str, token: Option<&str>) -> Option<ServerMsg> {
    let mut s = connect(addr);
    let msg = ClientMsg::Hello {
        version: 1,
        client: "e2e".into(),
        token: token.map(str::to_string),
    };
    write_frame(&mut s, &to_body(&msg)).expect("hello");
    let body = read_frame(&mut s).ok()??;
    Some(ServerMsg::parse(&body).expect("parses"))
}

fn send_file(addr: &str, token: Option<&str>) -> std::process::Output {
    let (_src, file) = source_file("secret-plans.txt", b"plans");
    let state = tempfile::tempdir().expect("state dir");
    let mut cmd = ferry_command(state.path());
    cmd.args(["send", "--to", addr])
        .arg(&file)
        .env_remove("FERRY_TOKEN");
    if let Some(t) = token {
        cmd.env("FERRY_TOKEN", t);
    }
    cmd.output().expect("run ferry")
}

#[test]
fn a_token_is_required_and_checked() {
    let (server, _secrets) = server_with_token(&[]);
    assert!(matches!(
        hello(&server.addr(), None),
        Some(ServerMsg::Error {
            code: ErrorCode::Unauthorized,
            ..
        })
    ));
    assert!(matches!(
        hello(&server.addr(), Some("wrong")),
        Some(ServerMsg::Error {
            code: ErrorCode::Unauthorized,
            ..
        })
    ));
    server.expect_log("refused: this server needs a token, and none was given");
    server.expect_log("refused: the token given is wrong");

    let out = send_file(&server.addr(), Some("guess"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the server refused the token given"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = send_file(&server.addr(), None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the server refused: it needs a token (--token-file or FERRY_TOKEN)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.files().is_empty());

    let out = send_file(&server.addr(), Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.read("secret-plans.txt"), b"plans");
}

#[test]
fn repeated_wrong_tokens_from_one_address_are_slowed_down() {
    let (server, _secrets) = server_with_token(&[]);
    let mut waits = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        assert!(matches!(
            hello(&server.addr(), Some("nope")),
            Some(ServerMsg::Error {
                code: ErrorCode::Unauthorized,
                ..
            })
        ));
        waits.push(started.elapsed());
    }
    // 250 ms, then 500 ms, then 1 s: each at least as long as the rule says.
    assert!(waits[0] >= Duration::from_millis(250), "{waits:?}");
    assert!(waits[1] >= Duration::from_millis(500), "{waits:?}");
    assert!(waits[2] >= Duration::from_millis(1000), "{waits:?}");
    // The right token still gets in.
    assert!(matches!(
        hello(&server.addr(), Some(TOKEN)),
        Some(ServerMsg::Welcome { .. })
    ));
}

/// Guesses sent side by side on many connections are not each compared:
/// while one waits out the address's delay, the rest are turned away at
/// once, and so is the right token, until the delay is over.
#[test]
fn parallel_guesses_from_one_address_are_not_each_compared() {
    let (server, _secrets) = server_with_token(&[]);
    // Three wrong guesses one after another make the next delay 2 s: long
    // enough for everything below to happen inside it.
    for _ in 0..3 {
        hello(&server.addr(), Some("nope"));
    }
    let (tx, answers) = std::sync::mpsc::channel();
    for i in 0..8 {
        let mut s = connect(&server.addr());
        let tx = tx.clone();
        std::thread::spawn(move || {
            let msg = ClientMsg::Hello {
                version: 1,
                client: "e2e".into(),
                token: Some(format!("guess {i}")),
            };
            write_frame(&mut s, &to_body(&msg)).expect("hello");
            let answer = read_frame(&mut s)
                .ok()
                .flatten()
                .map(|body| ServerMsg::parse(&body).expect("parses"));
            let _ = tx.send(answer);
        });
    }
    let code = |answer: Option<ServerMsg>| match answer {
        Some(ServerMsg::Error { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Seven are told at once that the address must wait...
    for _ in 0..7 {
        let answer = answers
            .recv_timeout(Duration::from_secs(1))
            .expect("an answer at once");
        assert_eq!(code(answer), ErrorCode::LimitReached);
    }
    // ...and so is the right token, which is not even compared...
    let out = send_file(&server.addr(), Some(TOKEN));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "the server refused: too many wrong tokens from this address lately: \
             try again in a few seconds"
        ),
        "{stderr}"
    );
    // ...while one guess was compared and waits out its 2 s.
    let answer = answers
        .recv_timeout(Duration::from_secs(30))
        .expect("the compared guess's answer");
    assert_eq!(code(answer), ErrorCode::Unauthorized);
    server.expect_log("refused: too many wrong tokens from this address lately");
    assert!(server.files().is_empty());

    let out = send_file(&server.addr(), Some(TOKEN));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.read("secret-plans.txt"), b"plans");
}

/// A client that gives no token guesses nothing: it is told at once, as
/// often as it asks, and that does not slow down the next wrong guess.
#[test]
fn a_missing_token_is_answered_at_once_and_not_counted_as_a_guess() {
    let (server, _secrets) = server_with_token(&[]);
    let started = Instant::now();
    for _ in 0..6 {
        assert!(matches!(
            hello(&server.addr(), None),
            Some(ServerMsg::Error {
                code: ErrorCode::Unauthorized,
                ..
            })
        ));
    }
    // Counted as guesses, these six would have waited 15.75 s in all.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    hello(&server.addr(), Some("nope"));
    // The first wrong guess waits 250 ms, not the 8 s of a seventh.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn tutorial_clients_are_refused_when_a_token_is_required_unless_allowed() {
    let (server, _secrets) = server_with_token(&[]);
    let mut s = connect(&server.addr());
    s.write_all(&tutorial_upload("legacy.txt", b"old style"))
        .expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("close");
    assert!(
        read_to_close(&mut s).is_empty(),
        "never a reply to a tutorial client"
    );
    server.expect_log("tutorial-style upload refused: this server requires a token");
    assert!(server.files().is_empty());

    let (server, _secrets) = server_with_token(&["--allow-legacy"]);
    tutorial_send(&server.addr(), "legacy.txt", b"old style");
    server.expect_log("name=\"legacy.txt\"");
    assert_eq!(server.read("legacy.txt"), b"old style");
}

#[test]
fn the_server_will_not_listen_beyond_this_machine_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Refused before binding: nothing ever listens on the wildcard address.
    let out = Command::new(bin_path("ferry-server"))
        .args(["--listen", "0.0.0.0:0", "--dir"])
        .arg(dir.path())
        .env_remove("FERRY_TOKEN")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{err}"
    );
    assert!(err.contains("--insecure-no-auth"), "{err}");
}
