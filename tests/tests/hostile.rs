//! Hostile and broken input: every case ends with a logged reason, the
//! connection dropped, nothing written outside the folder, no partial file
//! visible, and the server still serving the next client.

use std::io::Write;
use std::net::Shutdown;
use std::path::Path;

use ferry_e2e::{
    Server, V1, connect, data, raw_frame, read_to_close, tutorial_send, tutorial_upload, write_file,
};
use ferry_proto::{
    ClientMsg, ErrorCode, MAX_FRAME_LEN, OnClash, Outcome, PlanEntry, ServerMsg, read_frame,
    to_body,
};

/// Names that must never be stored as given.
fn hostile_names(outside: &Path) -> Vec<String> {
    vec![
        "../x".into(),
        "a/../../x".into(),
        "..".into(),
        ".".into(),
        "".into(),
        "/etc/passwd".into(),
        outside.join("escaped.txt").to_string_lossy().into_owned(),
        "..\\..\\x".into(),
        "C:\\x".into(),
        "\\\\srv\\share".into(),
        "a\u{0}b".into(),
        "\u{1b}[2Jspoof".into(),
        "invoice\u{202E}fdp.exe".into(),
        "bell\u{7}".into(),
        "x".repeat(256),
        "a//b".into(),
        "trailing/".into(),
        ".ferry-staging/sneaky".into(),
    ]
}

/// A good upload on a fresh connection still lands.
fn assert_still_serving(server: &Server, tag: &str) {
    let name = format!("ok-{tag}.txt");
    tutorial_send(&server.addr(), &name, b"fine");
    server.expect_log(&format!("name=\"{name}\""));
    assert_eq!(server.read(&name), b"fine");
}

fn assert_nothing_stored(server: &Server) {
    let files: Vec<String> = server
        .files()
        .into_iter()
        .filter(|f| !f.starts_with("ok-"))
        .collect();
    assert!(files.is_empty(), "unexpected files: {files:?}");
    assert!(server.staging_is_empty(), "partial upload left in staging");
}

fn outside_is_empty(server: &Server) -> bool {
    std::fs::read_dir(server.root().join("outside"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn hostile_names_from_tutorial_clients_are_refused() {
    let server = Server::start();
    std::fs::create_dir(server.root().join("outside")).expect("mkdir");
    let names = hostile_names(&server.root().join("outside"));
    for (i, name) in names.iter().enumerate() {
        let mut s = connect(&server.addr());
        s.write_all(&tutorial_upload(name, b"evil")).expect("send");
        s.shutdown(Shutdown::Write).expect("shutdown");
        // The server drops the connection without writing anything back.
        assert!(read_to_close(&mut s).is_empty(), "{name:?}");
        server.expect_log(&format!(
            "refused `{}`",
            ferry_proto::path::escape_for_display(name)
        ));
        assert_nothing_stored(&server);
        assert!(outside_is_empty(&server), "{name:?} escaped");
        assert_still_serving(&server, &i.to_string());
    }
}

#[test]
fn hostile_names_from_v1_clients_get_a_bad_name_ack() {
    let server = Server::start();
    std::fs::create_dir(server.root().join("outside")).expect("mkdir");
    for (i, name) in hostile_names(&server.root().join("outside"))
        .iter()
        .enumerate()
    {
        let mut c = V1::connect(&server.addr());
        c.upload(1, name, b"evil", OnClash::Rename);
        match c.recv() {
            Some(ServerMsg::Ack(ack)) => assert!(
                matches!(
                    ack.outcome,
                    Outcome::Failed {
                        code: ErrorCode::BadName,
                        ..
                    }
                ),
                "{name:?}: {ack:?}"
            ),
            other => panic!("{name:?}: expected a bad_name ack, got {other:?}"),
        }
        assert_eq!(c.recv(), None, "connection should close after a refusal");
        assert_nothing_stored(&server);
        assert!(outside_is_empty(&server));
        assert_still_serving(&server, &i.to_string());
    }
}

#[test]
fn symlinks_on_the_way_are_refused_and_never_followed() {
    let server = Server::start();
    let outside = server.block_with_symlink("link");
    std::os::unix::fs::symlink(outside.join("target"), server.dir().join("last")).expect("symlink");

    let mut c = V1::connect(&server.addr());
    c.upload(1, "link/x.txt", b"evil", OnClash::Rename);
    c.expect_failed(ErrorCode::BadName);
    server.expect_log("is not a folder (or is a symlink)");

    // A symlink at the final name is a taken name, never a way out.
    for policy in [OnClash::Rename, OnClash::Overwrite] {
        let mut c = V1::connect(&server.addr());
        c.upload(1, "last", b"not through the link", policy);
        match policy {
            OnClash::Rename => assert_eq!(c.expect_stored(), "last (1)"),
            _ => {
                c.expect_failed(ErrorCode::Exists);
            }
        }
    }
    assert!(outside_is_empty(&server));
    assert!(
        std::fs::symlink_metadata(server.dir().join("last"))
            .expect("still there")
            .file_type()
            .is_symlink()
    );
}

/// Raw first frames (or byte streams) that are not valid, and what the log
/// must say about each.
fn malformed_streams() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut negative = (-1i32).to_le_bytes().to_vec();
    negative.extend_from_slice(b"{}");
    vec![
        ("empty frame", vec![0, 0, 0, 0], "empty message"),
        (
            "huge length",
            (1u32 << 30).to_le_bytes().to_vec(),
            "over the 65536-byte limit",
        ),
        ("negative length", negative, "over the 65536-byte limit"),
        (
            "truncated prefix",
            vec![5, 0],
            "stream ended inside a frame",
        ),
        (
            "truncated header",
            raw_frame(b"{\"size\": 3, \"filename\": \"x\"}")[..10].to_vec(),
            "stream ended inside a frame",
        ),
        ("not json", raw_frame(b"hello there"), "malformed message"),
        (
            "not an object",
            raw_frame(b"[1, 2, 3]"),
            "not a JSON object",
        ),
        (
            "negative size",
            raw_frame(b"{\"size\": -5, \"filename\": \"x\"}"),
            "malformed message",
        ),
        (
            "fractional size",
            raw_frame(b"{\"size\": 1.5, \"filename\": \"x\"}"),
            "malformed message",
        ),
        (
            "string size",
            raw_frame(b"{\"size\": \"5\", \"filename\": \"x\"}"),
            "malformed message",
        ),
        (
            "missing name",
            raw_frame(b"{\"size\": 5}"),
            "malformed message",
        ),
        (
            "invalid utf-8",
            raw_frame(b"{\"size\": 1, \"filename\": \"\xff\"}"),
            "malformed message",
        ),
    ]
}

#[test]
fn malformed_frames_drop_the_connection_with_a_reason() {
    let server = Server::start_with(&["--header-timeout", "2"]);
    for (i, (what, bytes, reason)) in malformed_streams().into_iter().enumerate() {
        let mut s = connect(&server.addr());
        s.write_all(&bytes).expect("send");
        s.shutdown(Shutdown::Write).expect("shutdown");
        assert!(
            read_to_close(&mut s).is_empty(),
            "{what}: server answered a non-v1 client"
        );
        server.expect_log(reason);
        assert_nothing_stored(&server);
        assert_still_serving(&server, &i.to_string());
    }
}

/// A first frame that names a `type` is a v1 client's, even when it is
/// not a hello the server can take, and a v1 client reads: it is told why
/// before the connection closes (a tutorial client never is, above).
#[test]
fn a_v1_client_whose_first_frame_is_not_a_good_hello_is_told_why() {
    let server = Server::start();
    for (i, (what, body, reason)) in [
        (
            "unknown type",
            &b"{\"type\": \"teleport\"}"[..],
            "unknown variant `teleport`",
        ),
        (
            "file before hello",
            b"{\"type\":\"file\",\"id\":1,\"path\":\"a\",\"size\":1}",
            "must open with hello, not file",
        ),
        (
            "hello without client",
            b"{\"type\":\"hello\",\"version\":1}",
            "missing field `client`",
        ),
        (
            "hello without version",
            b"{\"type\":\"hello\",\"client\":\"c\"}",
            "missing field `version`",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = connect(&server.addr());
        s.write_all(&raw_frame(body)).expect("send");
        let answer = read_frame(&mut s).map(|body| body.map(|b| ServerMsg::parse(&b)));
        match answer {
            Ok(Some(Ok(ServerMsg::Error {
                code: ErrorCode::Protocol,
                message,
            }))) => assert!(message.contains(reason), "{what}: {message}"),
            other => panic!("{what}: expected a protocol error, got {other:?}"),
        }
        server.expect_log(reason);
        assert_nothing_stored(&server);
        assert_still_serving(&server, &i.to_string());
    }
}

/// A v1 client whose frame is broken, or who goes silent inside a header,
/// is told why before the connection closes.
#[test]
fn a_v1_client_dropped_for_a_broken_frame_or_a_stalled_header_is_told_why() {
    let server = Server::start_with(&["--header-timeout", "1"]);
    let mut c = V1::connect(&server.addr());
    c.stream
        .write_all(&raw_frame(b"{\"type\":\"file\",\"id\":"))
        .expect("send");
    assert!(
        matches!(
            c.recv(),
            Some(ServerMsg::Error {
                code: ErrorCode::Protocol,
                ..
            })
        ),
        "a broken message is explained"
    );

    let mut c = V1::connect(&server.addr());
    // Four bytes of length, then nothing of the frame they announce.
    c.stream.write_all(&100u32.to_le_bytes()).expect("send");
    match c.recv() {
        Some(ServerMsg::Error {
            code: ErrorCode::Timeout,
            message,
        }) => assert!(message.contains("inside a header frame"), "{message}"),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    assert_nothing_stored(&server);
}

#[test]
fn a_file_whose_offset_is_past_its_size_is_a_protocol_error() {
    let server = Server::start();
    let mut c = V1::connect(&server.addr());
    c.stream
        .write_all(&raw_frame(
            br#"{"type":"file","id":1,"path":"big.bin","size":2097152,"offset":2097153,"resume_key":"k"}"#,
        ))
        .expect("send");
    match c.recv() {
        Some(ServerMsg::Error {
            code: ErrorCode::Protocol,
            message,
        }) => assert!(
            message.contains("`offset` 2097153 is past the end of the file (`size` 2097152)"),
            "{message}"
        ),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert_nothing_stored(&server);
    assert_still_serving(&server, "after");
}

#[test]
fn unknown_protocol_versions_are_told_and_dropped() {
    let server = Server::start();
    let mut s = connect(&server.addr());
    s.write_all(&raw_frame(
        br#"{"type":"hello","version":99,"client":"future"}"#,
    ))
    .expect("send");
    let reply = read_to_close(&mut s);
    let body = ferry_proto::decode(&reply)
        .expect("frame")
        .expect("whole")
        .1;
    assert!(matches!(
        ServerMsg::parse(body).expect("parses"),
        ServerMsg::Error {
            code: ErrorCode::UnsupportedVersion,
            ..
        }
    ));
    server.expect_log("unsupported protocol version 99");
    assert_still_serving(&server, "v");
}

#[test]
fn oversized_declarations_are_refused_before_any_byte_is_written() {
    let server = Server::start_with(&["--max-file-size", "1K"]);
    // Tutorial client: dropped, nothing written.
    tutorial_send(&server.addr(), "big.bin", &data(2048, 1));
    server.expect_log("over the limit of 1024 bytes");
    assert_nothing_stored(&server);

    // v1 client: told why, before sending the body.
    let mut c = V1::connect(&server.addr());
    c.start_file(3, "big.bin", 2048);
    assert_eq!(c.expect_failed(ErrorCode::TooLarge).id, 3);
    // Beyond any disk: refused as no space, whatever the limit.
    let unlimited = Server::start();
    let mut c = V1::connect(&unlimited.addr());
    c.start_file(4, "huge.bin", 1 << 60);
    c.expect_failed(ErrorCode::NoSpace);
    unlimited.expect_log("not enough space");
    assert_nothing_stored(&unlimited);
    assert_still_serving(&server, "after");
}

#[test]
fn a_body_shorter_than_declared_leaves_nothing() {
    let server = Server::start();
    let full = tutorial_upload("short.bin", &data(100_000, 2));
    let mut s = connect(&server.addr());
    s.write_all(&full[..50_000]).expect("send");
    drop(s);
    server.expect_log("client left after");
    assert_nothing_stored(&server);
    assert_still_serving(&server, "short");
}

#[test]
fn a_v1_body_longer_than_declared_is_not_stored() {
    let server = Server::start();
    let mut c = V1::connect(&server.addr());
    c.start_file(1, "long.bin", 10);
    c.stream.write_all(&data(5000, 3)).expect("body and more");
    let _ = c.stream.shutdown(Shutdown::Write);
    let _ = read_to_close(&mut c.stream);
    server.expect_log("connection dropped");
    assert_nothing_stored(&server);
    assert_still_serving(&server, "long");
}

/// Small files are held in memory until the committer writes them out,
/// bigger ones go straight to a file: both kinds are checked the same way.
const BODY_SIZES: [usize; 2] = [4, 200 * 1024];

#[test]
fn a_wrong_digest_is_refused_and_the_connection_goes_on() {
    for size in BODY_SIZES {
        let server = Server::start();
        let body = data(size, 5);
        let mut c = V1::connect(&server.addr());
        c.start_file(1, "tampered.bin", size as u64);
        c.stream.write_all(&body).expect("body");
        c.send(&ClientMsg::Done {
            id: 1,
            blake3: blake3::hash(b"something else").to_hex().to_string(),
        });
        c.expect_failed(ErrorCode::DigestMismatch);
        server.expect_log("digest mismatch");
        assert_nothing_stored(&server);
        // Same connection, next file: fine.
        c.upload(2, "honest.bin", &body, OnClash::Rename);
        c.expect_stored();
        assert_eq!(server.read("honest.bin"), body, "{size} bytes");
    }
}

/// A digest that is not one (uppercase, short, not hex) is refused as
/// such, not blamed on the bytes, and the connection goes on.
#[test]
fn a_digest_written_wrong_is_refused_for_what_it_is() {
    let server = Server::start();
    let mut c = V1::connect(&server.addr());
    let body = b"right bytes";
    let upper = blake3::hash(body).to_hex().to_uppercase();
    for (id, digest) in [(1, upper.as_str()), (2, "abc"), (3, &"zz".repeat(32))] {
        c.start_file(id, "badly-signed.txt", body.len() as u64);
        c.stream.write_all(body).expect("body");
        c.send(&ClientMsg::Done {
            id,
            blake3: digest.to_string(),
        });
        let ack = c.expect_failed(ErrorCode::DigestMismatch);
        let Outcome::Failed { message, .. } = ack.outcome else {
            unreachable!("expect_failed checked it")
        };
        assert!(
            message.contains("not 64 lowercase hex digits"),
            "{digest}: {message}"
        );
    }
    assert_nothing_stored(&server);
    c.upload(4, "badly-signed.txt", body, OnClash::Rename);
    c.expect_stored();
    assert_eq!(server.read("badly-signed.txt"), body);
}

/// Folders made for files that never commit (aborted here) are not held
/// open until some later commit: a client naming ever new deep folders
/// cannot run the server out of file descriptors.
#[test]
fn aborted_files_in_new_folders_do_not_pile_up_open_files() {
    let server = Server::start();
    let open_files = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .expect("the server's fds")
            .count()
    };
    let mut c = V1::connect(&server.addr());
    let before = open_files();
    let deep: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    // Sent without waiting for the acks, as a client streaming files does.
    for n in 0..100u64 {
        let path = format!("n{n}/{}/f.bin", deep.join("/"));
        c.start_file(10 + n, &path, 1);
        c.stream.write_all(b"x").expect("body");
        c.send(&ClientMsg::Abort {
            id: 10 + n,
            reason: "changed".into(),
        });
    }
    for _ in 0..100 {
        c.expect_failed(ErrorCode::Aborted);
    }
    let after = open_files();
    // 1,100 folders made; without a bound each held its parent open.
    assert!(after < before + 64, "{before} open before, {after} after");
    // And the connection still stores.
    c.upload(200, "last.bin", b"y", OnClash::Rename);
    c.expect_stored();
}

/// A name at the length limit that is taken is still stored beside it,
/// its stem cut to make room for the number.
#[test]
fn a_taken_name_at_the_length_limit_is_still_renamed() {
    let server = Server::start();
    let name = format!("{}.txt", "n".repeat(251));
    let mut c = V1::connect(&server.addr());
    c.upload(1, &name, b"first", OnClash::Rename);
    assert_eq!(c.expect_stored(), name);
    c.upload(2, &name, b"second", OnClash::Rename);
    let renamed = c.expect_stored();
    assert!(renamed.len() <= 255, "{renamed}");
    assert!(renamed.ends_with("n (1).txt"), "{renamed}");
    assert_eq!(server.read(&renamed), b"second");
    assert_eq!(server.read(&name), b"first");
}

/// An abort reason as long as a frame allows is echoed back cut short: in
/// full, the ack would be too big to send and the connection would die.
#[test]
fn a_huge_abort_reason_is_echoed_cut_short() {
    let server = Server::start();
    let mut c = V1::connect(&server.addr());
    c.start_file(1, "changed.bin", 1);
    c.stream.write_all(b"x").expect("body");
    c.send(&ClientMsg::Abort {
        id: 1,
        reason: "why ".repeat(16_000),
    });
    let ack = c.expect_failed(ErrorCode::Aborted);
    let Outcome::Failed { message, .. } = ack.outcome else {
        unreachable!("expect_failed checked it")
    };
    // The reason quoted is 512 bytes at most, its "..." included.
    let quoted = message
        .strip_prefix("aborted by the sender: ")
        .expect("the reason is quoted");
    assert!(quoted.len() <= 512, "{} bytes", quoted.len());
    assert!(quoted.len() > 500, "{} bytes", quoted.len());
    assert!(quoted.ends_with("..."), "{message}");
    c.upload(2, "next.bin", b"next", OnClash::Rename);
    c.expect_stored();
}

#[test]
fn a_file_its_sender_aborts_is_not_stored_and_the_connection_goes_on() {
    for size in BODY_SIZES {
        let server = Server::start();
        let body = data(size, 6);
        let mut c = V1::connect(&server.addr());
        c.start_file(1, "changed.bin", size as u64);
        c.stream.write_all(&body).expect("body");
        c.send(&ClientMsg::Abort {
            id: 1,
            reason: "the file changed while it was sent".into(),
        });
        let ack = c.expect_failed(ErrorCode::Aborted);
        assert_eq!(ack.id, 1);
        server.expect_log("sender aborted the file");
        assert_nothing_stored(&server);
        c.upload(2, "next.bin", &body, OnClash::Rename);
        c.expect_stored();
        assert_eq!(server.read("next.bin"), body, "{size} bytes");
    }
}

#[test]
fn out_of_order_v1_messages_are_protocol_errors() {
    let server = Server::start();
    let mut c = V1::connect(&server.addr());
    c.send(&ClientMsg::Done {
        id: 1,
        blake3: "00".repeat(32),
    });
    assert!(matches!(
        c.recv(),
        Some(ServerMsg::Error {
            code: ErrorCode::Protocol,
            ..
        })
    ));
    server.expect_log("unexpected `done` message");

    let mut c = V1::connect(&server.addr());
    c.start_file(1, "a", 1);
    c.stream.write_all(b"x").expect("body");
    c.send(&ClientMsg::Done {
        id: 2,
        blake3: blake3::hash(b"x").to_hex().to_string(),
    });
    assert!(matches!(
        c.recv(),
        Some(ServerMsg::Error {
            code: ErrorCode::Protocol,
            ..
        })
    ));
    server.expect_log("expected `done` for file 1, got `done` for file 2");
    assert_nothing_stored(&server);
}

/// A plan whose answer would not fit in a frame (long names that exist,
/// repeated in every verdict) is refused with a reason, not cut off.
#[test]
fn a_plan_whose_answer_would_not_fit_is_refused_with_a_reason() {
    let server = Server::start();
    let long = ["a", "b", "c"].map(|c| c.repeat(199)).join("/");
    write_file(&server.dir().join(&long), b"there");
    let asking = |n: u64| ClientMsg::Plan {
        files: (0..n)
            .map(|id| PlanEntry {
                id,
                path: long.clone(),
                size: 5,
                on_clash: OnClash::Rename,
                blake3: None,
                resume_key: None,
            })
            .collect(),
    };
    let question = asking(100);
    assert!(to_body(&question).len() <= MAX_FRAME_LEN);
    let mut c = V1::connect(&server.addr());
    c.send(&question);
    match c.recv() {
        Some(ServerMsg::Error {
            code: ErrorCode::Protocol,
            message,
        }) => assert!(message.contains("ask about fewer at a time"), "{message}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    server.expect_log("would not fit in one frame");
    // Asked in smaller pieces, the same question is answered.
    let mut c = V1::connect(&server.addr());
    c.send(&asking(10));
    assert!(matches!(c.recv(), Some(ServerMsg::Plan { verdicts }) if verdicts.len() == 10));
}

#[test]
fn a_client_cannot_forge_log_lines() {
    let server = Server::start();
    let forged = "INFO stored peer=1.2.3.4:5 name=\\\"forged.txt\\\"";
    let body = format!("{{\"type\":\"hello\\n{forged}\"}}");
    let mut s = connect(&server.addr());
    s.write_all(&raw_frame(body.as_bytes())).expect("send");
    let _ = read_to_close(&mut s);
    server.expect_log("connection dropped");
    for line in server.log().lines() {
        assert!(!line.starts_with("INFO stored"), "forged line: {line}");
    }
    assert!(server.log().contains("\\n"), "the newline shows escaped");
}

#[test]
fn swapping_a_folder_for_a_symlink_mid_upload_never_redirects_a_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let server = Server::start();
    let outside = server.root().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let folder = server.dir().join("d");
    let parked = server.dir().join("d.real");
    std::fs::create_dir(&folder).expect("mkdir");

    // One thread keeps swapping `d` between the real folder and a symlink
    // pointing outside, as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, folder, parked, outside) = (
            Arc::clone(&stop),
            folder.clone(),
            parked.clone(),
            outside.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if std::fs::rename(&folder, &parked).is_ok() {
                    let _ = std::os::unix::fs::symlink(&outside, &folder);
                    let _ = std::fs::remove_file(&folder);
                    let _ = std::fs::rename(&parked, &folder);
                }
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(3);
    let mut stored = 0;
    let mut i = 0u64;
    while Instant::now() < until {
        let mut c = V1::connect(&server.addr());
        c.upload(i, &format!("d/f{i}.txt"), b"inside only", OnClash::Rename);
        if let Some(ServerMsg::Ack(ack)) = c.recv()
            && matches!(ack.outcome, Outcome::Stored { .. })
        {
            stored += 1;
        }
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().expect("flipper");
    assert!(
        std::fs::read_dir(&outside).expect("ls").next().is_none(),
        "a write went through the symlink"
    );
    assert!(stored > 0, "some uploads landed while the folder was real");
    assert!(outside_is_empty(&server));
}

#[test]
fn look_alike_names_become_one_and_windows_names_can_be_refused() {
    let server = Server::start();
    // "é" composed, then the same name decomposed (as macOS writes it).
    let mut c = V1::connect(&server.addr());
    c.upload(1, "caf\u{e9}.txt", b"one", OnClash::Rename);
    c.upload(2, "cafe\u{301}.txt", b"two", OnClash::Rename);
    let stored = [c.expect_stored(), c.expect_stored()];
    assert_eq!(
        stored,
        ["caf\u{e9}.txt", "caf\u{e9} (1).txt"],
        "no twin side by side"
    );
    assert_eq!(server.files(), ["caf\u{e9} (1).txt", "caf\u{e9}.txt"]);

    let portable = Server::start_with(&["--portable-names"]);
    for name in ["CON.txt", "nul", "report.", "what?.txt"] {
        let mut c = V1::connect(&portable.addr());
        c.upload(1, name, b"x", OnClash::Rename);
        assert!(
            matches!(c.recv(), Some(ServerMsg::Ack(a)) if matches!(a.outcome, Outcome::Failed { code: ErrorCode::BadName, .. })),
            "{name}"
        );
    }
    portable.expect_log("cannot be stored on Windows");
    let mut c = V1::connect(&portable.addr());
    c.upload(1, "console.txt", b"fine", OnClash::Rename);
    c.expect_stored();
}
