//! The server's limits: connections per address, files per connection and
//! a floor of free disk space. Each refusal is a clear error to a v1 client
//! and a line in the log.

use std::io::Write;

use ferry_e2e::{
    Server, V1, all_output, connect, data, ferry_send, read_to_close, source_file, tutorial_upload,
    write_file,
};
use ferry_proto::{ErrorCode, OnClash, Outcome, ServerMsg};

#[test]
fn one_address_cannot_take_more_than_its_share_of_connections() {
    let server = Server::start_with(&["--max-per-address", "2"]);
    let first = V1::try_connect(&server.addr());
    let second = V1::try_connect(&server.addr());
    assert!(first.is_some() && second.is_some());
    assert!(V1::try_connect(&server.addr()).is_none());
    server.expect_log("per-address limit (2) reached: refusing connection");
    drop(first);
    // A place frees up once a connection is gone.
    let mut again = None;
    for _ in 0..100 {
        again = V1::try_connect(&server.addr());
        if again.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(again.is_some());
}

/// Under a one-connection limit, the server may not have given back the
/// place of a connection that just closed when the next one knocks: the
/// last send's, or `ferry send`'s own first one (it opens a second for a
/// big file after small ones, to ask about resuming first). The client
/// tries again a moment later rather than fail.
#[test]
fn sends_in_a_row_fit_a_one_connection_limit() {
    let server = Server::start_with(&["--max-per-address", "1"]);
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("tree");
    for i in 0..20 {
        write_file(&tree.join(format!("a-{i:02}.txt")), &data(2000, i));
    }
    write_file(&tree.join("big.bin"), &data(2 << 20, 7));
    for round in 0..4 {
        let out = ferry_send(
            &server.addr(),
            &["--on-clash", "overwrite", tree.to_str().expect("utf8")],
        );
        assert!(out.status.success(), "round {round}: {}", all_output(&out));
    }
    assert_eq!(server.read("tree/big.bin"), data(2 << 20, 7));
}

#[test]
fn files_per_connection_are_capped_and_ferry_send_reconnects_for_more() {
    let server = Server::start_with(&["--max-files-per-connection", "3"]);
    let mut c = V1::connect(&server.addr());
    for id in 0..4 {
        c.upload(id, &format!("f{id}.txt"), b"x", OnClash::Rename);
    }
    let mut outcomes = Vec::new();
    while let Some(ServerMsg::Ack(ack)) = c.recv() {
        outcomes.push(ack.outcome);
    }
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(
        outcomes[..3]
            .iter()
            .all(|o| matches!(o, Outcome::Stored { .. }))
    );
    assert!(matches!(
        outcomes[3],
        Outcome::Failed {
            code: ErrorCode::LimitReached,
            ..
        }
    ));
    server.expect_log("takes 3 files per connection");

    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("many");
    std::fs::create_dir(&tree).expect("mkdir");
    for i in 0..8 {
        std::fs::write(tree.join(format!("m{i}.txt")), b"y").expect("write");
    }
    let out = ferry_send(&server.addr(), &[tree.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", all_output(&out));
    for i in 0..8 {
        assert_eq!(server.read(&format!("many/m{i}.txt")), b"y");
    }
}

/// A tutorial client cannot be told about the limit: past it, the
/// connection ends, with the reason logged and the files before it kept.
#[test]
fn files_per_connection_are_capped_for_tutorial_clients_too() {
    let server = Server::start_with(&["--max-files-per-connection", "3"]);
    let mut stream = connect(&server.addr());
    let mut bytes = Vec::new();
    for i in 0..5 {
        bytes.extend(tutorial_upload(&format!("t{i}.txt"), b"x"));
    }
    stream.write_all(&bytes).expect("send");
    read_to_close(&mut stream);
    server.expect_log("takes 3 files per connection");
    for i in 0..3 {
        assert_eq!(server.read(&format!("t{i}.txt")), b"x");
    }
    let files = server.files();
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("t3") || f.starts_with("t4")),
        "{files:?}"
    );
}

#[test]
fn uploads_may_not_eat_into_the_free_space_floor() {
    // A floor larger than any disk here: every upload is refused.
    let server = Server::start_with(&["--min-free", "1000000T"]);
    let (_src, file) = source_file("tiny.txt", b"tiny");
    let path = file.to_str().expect("utf8");

    let plan = ferry_send(&server.addr(), &["--dry-run", path]);
    assert!(!plan.status.success());
    assert!(
        all_output(&plan).contains("REFUSED    tiny.txt: not enough space"),
        "{}",
        all_output(&plan)
    );

    let out = ferry_send(&server.addr(), &[path]);
    assert!(!out.status.success());
    assert!(
        all_output(&out).contains("tiny.txt: FAILED: not enough space"),
        "{}",
        all_output(&out)
    );
    server.expect_log("not enough space");
    assert!(server.files().is_empty());
}

#[test]
fn the_folder_quota_is_kept() {
    let server = Server::start_with(&["--quota", "10K"]);
    let mut c = V1::connect(&server.addr());
    c.upload(1, "first.bin", &[1u8; 8 * 1024], OnClash::Rename);
    c.expect_stored();
    let mut c = V1::connect(&server.addr());
    c.upload(2, "second.bin", &[2u8; 8 * 1024], OnClash::Rename);
    let ack = c.expect_failed(ErrorCode::LimitReached);
    assert!(
        matches!(&ack.outcome, Outcome::Failed { message, .. } if message.contains("quota")),
        "{ack:?}"
    );
    server.expect_log("quota is used up");
    assert_eq!(server.files(), ["first.bin"]);
}

/// `ferry send` tells a quota from a per-connection limit (both are
/// `limit_reached`): a file refused even first on a fresh connection failed,
/// and the user is told the server's reason, not that it hung up.
#[test]
fn ferry_send_names_the_quota_when_it_refuses_a_file() {
    let server = Server::start_with(&["--quota", "10K"]);
    let src = tempfile::tempdir().expect("tempdir");
    for name in ["q1.bin", "q2.bin", "q3.bin", "q4.bin"] {
        write_file(&src.path().join("q").join(name), &[7u8; 4096]);
    }
    let out = ferry_send(
        &server.addr(),
        &[src.path().join("q").to_str().expect("utf8")],
    );
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("q/q3.bin: FAILED: the folder's quota is used up")
            && text.contains("q/q4.bin: FAILED: the folder's quota is used up"),
        "{text}"
    );
    assert!(!text.contains("closed the connection"), "{text}");
    assert_eq!(server.files(), ["q/", "q/q1.bin", "q/q2.bin"]);
}

#[test]
fn uploads_running_side_by_side_cannot_both_pass_the_quota() {
    use std::io::Write;

    let server = Server::start_with(&["--quota", "10K"]);
    // Both announce 8 KiB before either has sent a byte of it.
    let mut a = V1::connect(&server.addr());
    let mut b = V1::connect(&server.addr());
    a.start_file(1, "a.bin", 8 * 1024);
    a.stream.write_all(&[1u8; 100]).expect("a starts");
    server.expect_log("path=\"a.bin\"");
    b.start_file(1, "b.bin", 8 * 1024);
    // The second must not pass the room the first has taken.
    b.expect_failed(ErrorCode::LimitReached);
    a.stream.write_all(&[1u8; 8 * 1024 - 100]).expect("a ends");
    a.finish(1, &[1u8; 8 * 1024]);
    a.expect_stored();
    assert_eq!(server.files(), ["a.bin"]);
}

/// Every small file waiting for its group commit holds an open file, and
/// each session's queue is sized as if it were alone. Several clients
/// streaming small files into a server with few open files must all get
/// through: later files wait for earlier ones to be committed instead of
/// failing with "too many open files".
#[test]
fn many_small_file_streams_stay_within_the_open_file_limit() {
    let server = Server::start_with_open_file_limit(128, &[]);
    let trees: Vec<tempfile::TempDir> = (0..4)
        .map(|client| {
            let tree = tempfile::tempdir().expect("tempdir");
            for i in 0..300 {
                let name = format!("c{client}/f{i:03}.bin");
                write_file(&tree.path().join(&name), &data(1024, i as u8));
            }
            tree
        })
        .collect();
    let addr = server.addr();
    std::thread::scope(|scope| {
        let sends: Vec<_> = trees
            .iter()
            .enumerate()
            .map(|(client, tree)| {
                let folder = tree.path().join(format!("c{client}"));
                let addr = &addr;
                scope.spawn(move || ferry_send(addr, &[folder.to_str().expect("utf8")]))
            })
            .collect();
        for send in sends {
            let out = send.join().expect("sender thread");
            assert!(out.status.success(), "{}", all_output(&out));
        }
    });
    let files = server.files();
    assert_eq!(files.iter().filter(|f| !f.ends_with('/')).count(), 4 * 300);
    assert!(
        !server.log().contains("Too many open files"),
        "{}",
        server.log()
    );
}

/// A low open-file limit serves fewer connections at once, and says so,
/// instead of failing uploads with "too many open files": every sender
/// either gets all its files stored or is told the server is busy.
#[test]
fn a_low_open_file_limit_serves_fewer_connections_instead_of_failing_files() {
    let server = Server::start_with_open_file_limit(256, &["--max-connections", "128"]);
    server.expect_log("is enough for 12 connection(s) at once, not --max-connections 128");
    let tree = tempfile::tempdir().expect("tempdir");
    for i in 0..100 {
        write_file(
            &tree.path().join(format!("many/f{i:03}.bin")),
            &data(512, i as u8),
        );
    }
    let folder = tree.path().join("many");
    let addr = server.addr();
    let outputs: Vec<_> = std::thread::scope(|scope| {
        let sends: Vec<_> = (0..30)
            .map(|_| {
                let (addr, folder) = (&addr, &folder);
                scope.spawn(move || ferry_send(addr, &[folder.to_str().expect("utf8")]))
            })
            .collect();
        sends
            .into_iter()
            .map(|s| s.join().expect("sender thread"))
            .collect()
    });
    let served = outputs.iter().filter(|out| out.status.success()).count();
    for out in outputs.iter().filter(|out| !out.status.success()) {
        let said = all_output(out);
        assert!(said.contains("busy"), "{said}");
    }
    assert!(served >= 1, "nobody was served");
    let log = server.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
}
