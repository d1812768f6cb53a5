//! `ferry send` against the real server: files, trees, clashes, failures.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use ferry_e2e::{
    Server, all_output, data, ferry_command, ferry_command_held_to_permissions, ferry_send,
    ferry_send_in, send_signal, source_file, text, write_file,
};

#[test]
fn sends_one_file_verified() {
    let server = Server::start();
    let (_src, file) = source_file("photo.jpg", &data(5 << 20, 3));
    let out = ferry_send(&server.addr(), &[file.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("stored 1 file, 5 MiB"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("all verified"));
    assert_eq!(server.read("photo.jpg"), data(5 << 20, 3));
}

#[test]
fn sends_a_tree_keeping_its_name_empty_files_and_empty_folders() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("project");
    write_file(&tree.join("README"), b"read me");
    write_file(&tree.join("src/main.rs"), b"fn main() {}");
    write_file(&tree.join("src/deep/er/x.bin"), &data(70_000, 1));
    write_file(&tree.join("empty.txt"), b"");
    fs::create_dir_all(tree.join("assets/none")).expect("mkdir");
    let out = ferry_send(&server.addr(), &[tree.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        server.files(),
        [
            "project/",
            "project/README",
            "project/assets/",
            "project/assets/none/",
            "project/empty.txt",
            "project/src/",
            "project/src/deep/",
            "project/src/deep/er/",
            "project/src/deep/er/x.bin",
            "project/src/main.rs",
        ]
    );
    assert_eq!(server.read("project/src/deep/er/x.bin"), data(70_000, 1));
    assert_eq!(server.read("project/empty.txt"), b"");
    assert!(
        text(&out.stdout).contains("stored 4 files and 1 empty folder, "),
        "{}",
        text(&out.stdout)
    );
}

/// A send of only an empty folder says it made one, not "0 files".
#[test]
fn an_empty_folder_alone_is_counted() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    fs::create_dir(src.path().join("nothing")).expect("mkdir");
    let out = ferry_send(
        &server.addr(),
        &[src.path().join("nothing").to_str().expect("utf8")],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        text(&out.stdout).starts_with("stored 1 empty folder, 0 B in "),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(server.files(), ["nothing/"]);
}

#[test]
fn a_second_send_keeps_both_unless_asked_otherwise() {
    let server = Server::start();
    let (_src, file) = source_file("report.pdf", b"version one");
    let path = file.to_str().expect("utf8");
    assert!(ferry_send(&server.addr(), &[path]).status.success());
    write_file(&file, b"version two");
    let out = ferry_send(&server.addr(), &[path]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("name taken, stored as report (1).pdf"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.read("report.pdf"), b"version one");
    assert_eq!(server.read("report (1).pdf"), b"version two");

    let out = ferry_send(&server.addr(), &["--on-clash", "skip-identical", path]);
    assert!(out.status.success());
    // Only the file under the very name counts: it differs, so both stay.
    assert!(
        text(&out.stderr).contains("stored as report (2).pdf"),
        "{}",
        text(&out.stderr)
    );

    write_file(&file, b"version three");
    let out = ferry_send(&server.addr(), &["--on-clash", "overwrite", path]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("; 1 replaced an existing file"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(server.read("report.pdf"), b"version three");
}

#[test]
fn skip_identical_sends_nothing_new_for_the_same_bytes() {
    let server = Server::start();
    let (_src, file) = source_file("same.bin", &data(10_000, 8));
    let path = file.to_str().expect("utf8");
    assert!(ferry_send(&server.addr(), &[path]).status.success());
    let out = ferry_send(&server.addr(), &["--on-clash", "skip-identical", path]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("stored 0 files")
            && text(&out.stdout).contains("; 1 already there, identical"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(server.files(), ["same.bin"]);
    // Asked first, and not sent again at all.
    let received = server
        .log()
        .lines()
        .filter(|l| l.contains("receiving") && l.contains("same.bin"))
        .count();
    assert_eq!(received, 1, "{}", server.log());
}

#[test]
fn an_unreachable_server_is_a_clear_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener); // nothing listens there now
    let src = tempfile::tempdir().expect("tempdir");
    for i in 0..10 {
        write_file(&src.path().join(format!("t/f{i}.txt")), b"x");
    }
    let out = ferry_send(&addr, &[src.path().join("t").to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    // One reason for all: three files named, the rest counted.
    assert!(
        err.contains("t/f0.txt: not sent") && err.contains("connection refused"),
        "{err}"
    );
    assert_eq!(err.matches("connection refused").count(), 4, "{err}");
    assert!(err.contains("... and 7 more not sent"), "{err}");
}

/// Ctrl-C stops a transfer cleanly: a summary, exit status 130, and what
/// was not sent remembered, so that --retry-failed sends just that.
#[test]
fn ctrl_c_stops_cleanly_and_remembers_what_was_not_sent() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("t");
    for i in 0..4 {
        write_file(&tree.join(format!("f{i}.bin")), &data(1 << 20, i));
    }
    let state = tempfile::tempdir().expect("state dir");
    let child = ferry_command(state.path())
        .args(["send", "--to", &server.addr(), "--limit-rate", "1M"])
        .arg(&tree)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    server.expect_log("t/f0.bin");
    send_signal(child.id(), "INT");
    let out = child.wait_with_output().expect("ferry ends");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("not sent: cancelled"), "{err}");
    // The file cut short is big enough to resume, and the user is told it
    // may be; here its first bytes had arrived, so the retry resumes it.
    let kept: Vec<&str> = err
        .lines()
        .filter_map(|l| {
            l.strip_suffix(
                ": not sent: cancelled; the server may keep what arrived, and sending it again resumes if so",
            )
        })
        .collect();
    assert_eq!(kept.len(), 1, "{err}");

    let again = ferry_send_in(state.path(), &server.addr(), &["--retry-failed"]);
    assert!(again.status.success(), "{}", all_output(&again));
    let resumed = format!("{}: resumed at", kept[0].trim_start_matches("ferry: "));
    assert!(
        all_output(&again).contains(&resumed),
        "{}",
        all_output(&again)
    );
    for i in 0..4 {
        assert_eq!(server.read(&format!("t/f{i}.bin")), data(1 << 20, i));
    }
}

/// A stand-in server that welcomes one client, then reads at most
/// `read_up_to` bytes of what it sends and never answers: a server slow to
/// sync (it reads all) or one that stopped reading. Returns its address and
/// the count of bytes read so far.
fn silent_server(read_up_to: u64) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use ferry_proto::{PROTOCOL_VERSION, ServerMsg, read_frame, to_body, write_frame};
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let received = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&received);
    thread::spawn(move || {
        let Ok((mut peer, _)) = listener.accept() else {
            return;
        };
        if read_frame(&mut peer).ok().flatten().is_none() {
            return;
        }
        let welcome = ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            server: "silent".into(),
            max_file_size: None,
        };
        if write_frame(&mut peer, &to_body(&welcome)).is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        while counted.load(Ordering::SeqCst) < read_up_to {
            match peer.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    counted.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
        // Kept open, unanswered, until the test ends.
        thread::sleep(Duration::from_secs(120));
    });
    (addr, received)
}

/// Sends `file` to the stand-in at `addr`, presses Ctrl-C once `wanted`
/// bytes have arrived there, and checks that ferry stops within 10 s,
/// with a summary and exit status 130. Returns what it printed.
fn ctrl_c_against(
    addr: &str,
    received: &std::sync::atomic::AtomicU64,
    wanted: u64,
    file: &std::path::Path,
) -> String {
    use std::sync::atomic::Ordering;

    let state = tempfile::tempdir().expect("state dir");
    let mut child = ferry_command(state.path())
        .args(["send", "--to", addr, "--no-resume"])
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    let until = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::SeqCst) < wanted && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        received.load(Ordering::SeqCst) >= wanted,
        "the bytes went out"
    );
    // Long enough for this side to be waiting, not still writing.
    thread::sleep(Duration::from_millis(300));
    send_signal(child.id(), "INT");
    let until = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("ferry still waits 10 s after Ctrl-C");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("ferry ends");
    assert_eq!(out.status.code(), Some(130), "{}", all_output(&out));
    let err = text(&out.stderr);
    assert!(err.contains("interrupted"), "{err}");
    err
}

/// Ctrl-C while the last acks are awaited: a server that took the bytes
/// but is slow to answer (a long sync) does not hold the send for minutes.
/// The file went out whole, so it is not called unsent outright: it may
/// be stored.
#[test]
fn ctrl_c_does_not_wait_for_a_server_slow_to_answer() {
    let (addr, received) = silent_server(u64::MAX);
    let (_src, file) = source_file("one.txt", &data(1024, 1));
    let err = ctrl_c_against(&addr, &received, 1024, &file);
    assert!(
        err.contains("cancelled before the server confirmed it (a retry first asks"),
        "{err}"
    );
}

/// Ctrl-C while a write waits for a server that stopped reading (its disk
/// stalled, say): the write does not hold the send for its full timeout.
#[test]
fn ctrl_c_does_not_wait_for_a_server_that_stopped_reading() {
    let (addr, received) = silent_server(1 << 20);
    let (_src, file) = source_file("big.bin", &data(64 << 20, 2));
    let err = ctrl_c_against(&addr, &received, 1 << 20, &file);
    assert!(err.contains("not sent: cancelled"), "{err}");
}

/// A retry does not store a second copy of a file the server already has
/// byte for byte (one a cancel left unconfirmed, say); the others go.
#[test]
fn a_retry_skips_files_the_server_already_has() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let there = src.path().join("t/there.txt");
    let missing = src.path().join("t/missing.txt");
    write_file(&there, b"arrived, never confirmed");
    write_file(&missing, b"never arrived");
    write_file(
        &server.dir().join("t/there.txt"),
        b"arrived, never confirmed",
    );
    let state = tempfile::tempdir().expect("state dir");
    let record = serde_json::json!({
        "servers": { server.addr(): [
            { "local": there, "remote": "t/there.txt" },
            { "local": missing, "remote": "t/missing.txt" },
        ] },
    });
    write_retry_record(state.path(), &record);
    let out = ferry_send_in(state.path(), &server.addr(), &["--retry-failed"]);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        text(&out.stderr).contains("1 file already on the server, identical"),
        "{}",
        all_output(&out)
    );
    assert_eq!(server.files(), ["t/", "t/missing.txt", "t/there.txt"]);
}

/// The check for files already stored asks the server about the whole
/// plan, and hands its answers on for the plan screen: they must still be
/// the answers for the files left, in their order, after the stored ones
/// are taken out. Under skip-identical they need digests, so none are
/// handed on.
#[test]
fn the_already_stored_check_keeps_each_verdict_with_its_file() {
    use ferry_client::transfer::plan::Plan;
    use ferry_client::transfer::retry::drop_already_stored;
    use ferry_client::transfer::{Item, ItemKind, Options};
    use ferry_proto::{Clash, OnClash, Verdict};
    use std::sync::atomic::AtomicBool;

    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, bytes: &[u8]| {
        let local = src.path().join(name);
        write_file(&local, bytes);
        Item {
            local,
            remote: name.to_string(),
            kind: ItemKind::File {
                size: bytes.len() as u64,
            },
        }
    };
    write_file(&server.dir().join("stored.txt"), b"same bytes");
    write_file(&server.dir().join("taken.txt"), b"other bytes");
    let items = vec![
        file("new-1.txt", b"1"),
        file("stored.txt", b"same bytes"),
        Item {
            local: src.path().join("empty"),
            remote: "empty".into(),
            kind: ItemKind::Folder,
        },
        file("taken.txt", b"mine"),
        file("new-2.txt", b"2"),
    ];
    let stop = AtomicBool::new(false);

    let mut plan = Plan {
        items: items.clone(),
        ..Plan::default()
    };
    let options = Options::new(server.addr());
    let verdicts = drop_already_stored(&mut plan, &options, &stop)
        .expect("the server answers")
        .expect("verdicts handed on");
    let left: Vec<&str> = plan.items.iter().map(|i| i.remote.as_str()).collect();
    assert_eq!(left, ["new-1.txt", "empty", "taken.txt", "new-2.txt"]);
    assert_eq!(plan.already_stored, ["stored.txt"]);
    assert_eq!(verdicts.len(), plan.items.len());
    assert_eq!(verdicts[0], Some(Verdict::New));
    assert_eq!(verdicts[1], None, "a folder has no verdict");
    assert!(
        matches!(
            &verdicts[2],
            Some(Verdict::Clash { result: Clash::Renamed, stored_as }) if stored_as == "taken (1).txt"
        ),
        "{:?}",
        verdicts[2]
    );
    assert_eq!(verdicts[3], Some(Verdict::New));

    let mut plan = Plan {
        items,
        ..Plan::default()
    };
    let options = Options {
        on_clash: OnClash::SkipIdentical,
        ..Options::new(server.addr())
    };
    let verdicts = drop_already_stored(&mut plan, &options, &stop).expect("the server answers");
    assert_eq!(verdicts, None);
    assert_eq!(plan.already_stored, ["stored.txt"]);
    assert_eq!(server.files(), ["stored.txt", "taken.txt"], "nothing sent");
}

/// Something else listening on the port (here, what an SSH server says
/// first) is named as such, not as a broken frame of a huge size.
#[test]
fn a_port_that_is_not_a_ferry_server_is_called_that() {
    use std::io::Write;
    use std::net::TcpListener;

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    thread::spawn(move || {
        for peer in listener.incoming().take(4) {
            let Ok(mut peer) = peer else { return };
            let _ = peer.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
            thread::sleep(Duration::from_millis(200));
        }
    });
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join("a.txt");
    write_file(&file, b"a");
    let out = ferry_send(&addr, &[file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let said = text(&out.stderr);
    assert!(
        said.contains("not a Ferry server: it speaks another protocol"),
        "{said}"
    );
    assert!(!said.contains("broken frame"), "{said}");
}

/// A mistyped port is a usage error, told once, before any file is looked
/// at: not a "not sent" per file, and nothing for --retry-failed to keep.
#[test]
fn an_address_that_cannot_be_a_server_is_refused_up_front() {
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join("report.pdf");
    write_file(&file, b"pdf");
    let state = tempfile::tempdir().expect("state dir");
    for addr in ["127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:80x"] {
        let out = ferry_command(state.path())
            .args(["send", "--to", addr])
            .arg(&file)
            .output()
            .expect("run ferry");
        assert_eq!(out.status.code(), Some(2), "{addr}: {}", all_output(&out));
        let said = text(&out.stderr);
        assert!(said.contains("is not a port"), "{addr}: {said}");
        assert!(!said.contains("report.pdf"), "{addr}: {said}");
    }
    assert!(!state.path().join("ferry/failed.json").exists());
}

#[test]
fn symlinks_are_skipped_by_default_and_followed_on_request() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("t");
    write_file(&tree.join("real.txt"), b"real");
    std::os::unix::fs::symlink(tree.join("real.txt"), tree.join("link.txt")).expect("symlink");
    let out = ferry_send(&server.addr(), &[tree.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("link.txt: is a symlink (not followed)"));
    assert_eq!(server.files(), ["t/", "t/real.txt"]);

    let out = ferry_send(
        &server.addr(),
        &[
            "-L",
            "--on-clash",
            "overwrite",
            tree.to_str().expect("utf8"),
        ],
    );
    assert!(out.status.success());
    assert_eq!(server.read("t/link.txt"), b"real");
}

#[test]
fn a_refused_file_fails_alone_and_the_rest_still_land() {
    let server = Server::start();
    // On the server, `batch/blocked` is a symlink: anything under it is refused.
    let elsewhere = server.block_with_symlink("batch/blocked");
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("batch");
    for i in 0..5 {
        write_file(&tree.join(format!("a{i}.txt")), format!("a{i}").as_bytes());
        write_file(&tree.join(format!("z{i}.txt")), format!("z{i}").as_bytes());
    }
    write_file(&tree.join("blocked/x.txt"), b"never");
    let out = ferry_send(&server.addr(), &[tree.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("batch/blocked/x.txt: FAILED")
            && err.contains("is not a folder (or is a symlink)"),
        "{err}"
    );
    assert!(
        text(&out.stdout).contains("10 of 11 files stored"),
        "{}",
        text(&out.stdout)
    );
    for i in 0..5 {
        assert_eq!(
            server.read(&format!("batch/a{i}.txt")),
            format!("a{i}").as_bytes()
        );
        assert_eq!(
            server.read(&format!("batch/z{i}.txt")),
            format!("z{i}").as_bytes()
        );
    }
    assert!(
        fs::read_dir(&elsewhere).expect("ls").next().is_none(),
        "nothing went through the link"
    );
}

#[test]
fn files_over_the_server_limit_are_reported_without_sending() {
    let server = Server::start_with(&["--max-file-size", "1K"]);
    let src = tempfile::tempdir().expect("tempdir");
    write_file(&src.path().join("small.txt"), b"ok");
    write_file(&src.path().join("big.bin"), &data(4096, 1));
    let out = ferry_send(
        &server.addr(),
        &[
            src.path().join("big.bin").to_str().expect("utf8"),
            src.path().join("small.txt").to_str().expect("utf8"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("big.bin: FAILED: over the server's limit of 1 KiB"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.files(), ["small.txt"]);
}

#[test]
fn limit_rate_slows_the_sender_down() {
    let server = Server::start();
    let (_src, file) = source_file("paced.bin", &data(1 << 20, 2));
    let started = Instant::now();
    let out = ferry_send(
        &server.addr(),
        &["--limit-rate", "2M", file.to_str().expect("utf8")],
    );
    assert!(out.status.success());
    // 1 MiB at 2 MiB/s cannot take less than half a second.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.read("paced.bin"), data(1 << 20, 2));
}

#[test]
fn a_killed_sender_leaves_no_partial_file_and_a_resend_works() {
    // Without resuming, nothing of an interrupted upload is kept at all.
    // (Resuming is tested in resume.rs.)
    let server = Server::start();
    let (_src, file) = source_file("big.bin", &data(8 << 20, 6));
    let state = tempfile::tempdir().expect("state dir");
    let mut child = ferry_command(state.path())
        .args([
            "send",
            "--to",
            &server.addr(),
            "--limit-rate",
            "2M",
            "--no-resume",
        ])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ferry");
    server.expect_log("path=\"big.bin\"");
    thread::sleep(Duration::from_millis(300));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    server.expect_log("client left after");
    assert!(server.files().is_empty());
    assert!(server.staging_is_empty());

    let out = ferry_send(&server.addr(), &[file.to_str().expect("utf8")]);
    assert!(out.status.success());
    assert_eq!(server.read("big.bin"), data(8 << 20, 6));
}

#[test]
fn the_server_address_can_come_from_the_environment() {
    let server = Server::start();
    let (_src, file) = source_file("env.txt", b"from env");
    let state = tempfile::tempdir().expect("state dir");
    let out = ferry_command(state.path())
        .args(["send"])
        .arg(&file)
        .env("FERRY_SERVER", server.addr())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.read("env.txt"), b"from env");
}

/// A file rewritten in place while it goes out, at the same size, is
/// aborted rather than stored half old and half new: its digest covers
/// what was read, so only its changed status tells.
#[test]
fn a_file_rewritten_while_it_is_sent_is_never_stored() {
    use ferry_client::transfer::{Event, Item, ItemKind, ItemResult, Options, send};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let server = Server::start();
    let (_src, file) = source_file("log.bin", &vec![0u8; 3 << 20]);
    let items = vec![Item {
        local: file.clone(),
        remote: "log.bin".into(),
        kind: ItemKind::File { size: 3 << 20 },
    }];
    let mut options = Options::new(server.addr());
    // About three seconds: time to rewrite it under the sender.
    options.limit_rate = Some(1 << 20);
    let rewritten = Arc::new(AtomicBool::new(false));
    let reporter = {
        let rewritten = Arc::clone(&rewritten);
        Arc::new(move |event: Event| {
            if matches!(event, Event::Progress { .. }) && !rewritten.swap(true, Ordering::SeqCst) {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .expect("open to rewrite");
                std::io::Write::write_all(&mut f, &data(3 << 20, 4)).expect("rewrite");
            }
        })
    };
    let report = send(&items, &options, &AtomicBool::new(false), reporter);
    assert!(rewritten.load(Ordering::SeqCst), "rewritten mid-send");
    match &report.results[0] {
        ItemResult::Failed { reason } => {
            assert!(
                reason.contains("changed while it was being sent"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(server.files().is_empty(), "{:?}", server.files());
}

/// A file whose size changed between planning and sending is aborted: the
/// server keeps nothing, neither a cut copy nor a longer one, whatever the
/// size of the read that notices (the last read of a small file also looks
/// for its end).
#[test]
fn a_file_that_changed_size_since_planning_is_never_stored() {
    use ferry_client::transfer::{Item, ItemKind, ItemResult, Options, send};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let planned = 4096;
    let cases = [
        ("grew-by-one.bin", planned + 1, "grew"),
        ("grew-a-lot.bin", planned * 3, "grew"),
        ("shrank.bin", planned - 100, "shrank"),
        ("as-planned.bin", planned, ""),
    ];
    let items: Vec<Item> = cases
        .iter()
        .map(|(name, actual, _)| {
            let local = src.path().join(name);
            write_file(&local, &data(*actual as usize, 9));
            Item {
                local,
                remote: (*name).to_string(),
                kind: ItemKind::File { size: planned },
            }
        })
        .collect();
    let report = send(
        &items,
        &Options::new(server.addr()),
        &AtomicBool::new(false),
        Arc::new(|_| {}),
    );
    for ((name, _, why), result) in cases.iter().zip(&report.results) {
        match result {
            ItemResult::Failed { reason } if !why.is_empty() => {
                assert!(reason.contains(why), "{name}: {reason}");
            }
            ItemResult::Stored { bytes, .. } if why.is_empty() => {
                assert_eq!(*bytes, planned, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(server.files(), ["as-planned.bin"]);
    assert!(server.staging_is_empty());
}

/// A send starts before the walk that feeds it is over, and when the walk
/// falls behind for long, the connection is ended (rather than left silent
/// for the server to give up on) and a new one carries on.
#[test]
fn a_send_fed_by_a_slow_walk_starts_at_once_and_carries_on_over_a_new_connection() {
    use ferry_client::transfer::{Feed, Item, ItemKind, ItemResult, Options, send_feed};
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let item = |name: &str, seed: u8| {
        let local = src.path().join(name);
        write_file(&local, &data(10_000, seed));
        Item {
            local,
            remote: name.to_string(),
            kind: ItemKind::File { size: 10_000 },
        }
    };
    let (feed, writer) = Feed::open();
    writer.push(item("first.bin", 1));
    writer.push(item("second.bin", 2));
    let sender = {
        let feed = Arc::clone(&feed);
        let addr = server.addr();
        thread::spawn(move || {
            send_feed(
                &feed,
                &Options::new(addr),
                &AtomicBool::new(false),
                Arc::new(|_| {}),
            )
        })
    };
    // What was handed on goes out while the sender waits for more.
    let until = Instant::now() + Duration::from_secs(1);
    while server.files().len() < 2 && Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        server.files(),
        ["first.bin", "second.bin"],
        "stored while the walk goes on"
    );
    // Longer, in all, than the sender waits with a connection open.
    thread::sleep(Duration::from_millis(1500));
    writer.push(item("third.bin", 3));
    writer.push(item("fourth.bin", 4));
    drop(writer);
    let report = sender.join().expect("sender");
    assert_eq!(report.results.len(), 4);
    for result in &report.results {
        assert!(matches!(result, ItemResult::Stored { .. }), "{result:?}");
    }
    assert_eq!(server.read("fourth.bin"), data(10_000, 4));
    let log = server.log();
    let connections: HashSet<&str> = log
        .lines()
        .filter(|line| line.contains(" stored "))
        .filter_map(|line| line.split("peer=").nth(1)?.split(' ').next())
        .collect();
    assert_eq!(connections.len(), 2, "{log}");
}

/// A path that cannot be sent at all (here: missing) fails the send, and
/// the summary says so rather than "all verified"; the dry run counts it.
#[test]
fn a_missing_path_is_counted_in_the_summary_not_hidden() {
    let server = Server::start();
    let (src, file) = source_file("good.txt", b"good");
    let missing = src.path().join("missing.txt");
    let args = [
        file.to_str().expect("utf8"),
        missing.to_str().expect("utf8"),
    ];
    let out = ferry_send(&server.addr(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let said = text(&out.stdout);
    assert!(!said.contains("all verified"), "{said}");
    assert!(
        said.contains("1 path could not be sent, see above"),
        "{said}"
    );
    assert!(
        text(&out.stderr).contains("missing.txt: cannot read"),
        "{}",
        all_output(&out)
    );
    assert_eq!(server.read("good.txt"), b"good");

    let mut dry = vec!["--dry-run"];
    dry.extend(args);
    let out = ferry_send(&server.addr(), &dry);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(
        text(&out.stdout).contains("1 path that cannot be sent (see above)"),
        "{}",
        all_output(&out)
    );
}

/// A file that cannot be read here is named on the plan, and one of them
/// neither stops the others nor hides what the server already has: under
/// skip-identical, the dry run and the send still ask about every other
/// file, and the unreadable one is remembered for `--retry-failed`.
#[test]
fn an_unreadable_file_is_told_on_the_plan_and_the_rest_goes() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("t");
    write_file(&tree.join("there.txt"), b"already there");
    write_file(&tree.join("new.txt"), b"new");
    write_file(&tree.join("secret.txt"), b"secret");
    fs::set_permissions(tree.join("secret.txt"), fs::Permissions::from_mode(0o000)).expect("chmod");
    let state = tempfile::tempdir().expect("state dir");
    let run = |args: &[&str]| {
        ferry_command_held_to_permissions(state.path())
            .args([
                "send",
                "--to",
                &server.addr(),
                "--on-clash",
                "skip-identical",
            ])
            .args(args)
            .output()
            .expect("run ferry")
    };
    write_file(&server.dir().join("t/there.txt"), b"already there");

    let tree_arg = tree.to_str().expect("utf8");
    let dry = run(&["--dry-run", tree_arg]);
    let said = text(&dry.stdout);
    assert_eq!(dry.status.code(), Some(1), "{}", all_output(&dry));
    assert!(
        said.contains("REFUSED    t/secret.txt: cannot be read here: permission denied"),
        "{}",
        all_output(&dry)
    );
    assert!(said.contains("identical  t/there.txt"), "{said}");
    assert!(said.contains("new        t/new.txt"), "{said}");

    let out = run(&[tree_arg]);
    let all = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(!all.contains("cannot ask the server"), "{all}");
    assert!(
        all.contains("cannot be read here: permission denied"),
        "{all}"
    );
    assert_eq!(server.read("t/new.txt"), b"new");
    assert!(!server.dir().join("t/secret.txt").exists());

    let retry = run(&["--retry-failed", "--dry-run"]);
    let said = text(&retry.stdout);
    assert!(said.contains("t/secret.txt"), "{}", all_output(&retry));
    assert!(!said.contains("t/new.txt"), "{said}");
}

/// Scripts pipe ferry's output into `head` and the like: a pipe closed
/// early ends the output, not the program with a panic.
#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    for i in 0..200 {
        write_file(&src.path().join(format!("t/f{i:03}.txt")), b"x");
    }
    let state = tempfile::tempdir().expect("state dir");
    let mut child = ferry_command(state.path())
        .args(["send", "--to", &server.addr(), "--dry-run"])
        .arg(src.path().join("t"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry");
    // Read nothing and close: every line ferry prints meets a closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("ferry ends");
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

/// Asked to send only what is left out (a symlink not followed), ferry
/// sends nothing, and says so with its exit status too.
#[test]
fn sending_nothing_but_a_skipped_symlink_fails() {
    let server = Server::start();
    let (src, file) = source_file("real.txt", b"real");
    let link = src.path().join("latest");
    std::os::unix::fs::symlink(&file, &link).expect("symlink");
    let out = ferry_send(&server.addr(), &[link.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(
        text(&out.stderr).contains("nothing to send"),
        "{}",
        all_output(&out)
    );
    assert!(server.files().is_empty());
}

/// A folder sent again costs a few lines about taken names, not one per
/// file.
#[test]
fn taken_names_are_told_in_a_few_lines() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    for i in 0..20 {
        write_file(&src.path().join(format!("t/f{i:02}.txt")), b"x");
    }
    let tree = src.path().join("t");
    let tree = tree.to_str().expect("utf8");
    assert!(ferry_send(&server.addr(), &[tree]).status.success());
    let out = ferry_send(&server.addr(), &[tree]);
    assert!(out.status.success(), "{}", all_output(&out));
    let err = text(&out.stderr);
    assert_eq!(err.matches("name taken, stored as").count(), 3, "{err}");
    assert!(
        err.contains("... and 17 more files whose name was taken"),
        "{err}"
    );
    // The summary on stdout counts them too, for a script that reads it.
    assert!(
        text(&out.stdout).contains("; 20 stored under a new name (name taken)"),
        "{}",
        text(&out.stdout)
    );
}

/// The retry list names files by absolute path, so --retry-failed works
/// from any folder, whatever folder the first send ran in.
#[test]
fn a_retry_from_another_folder_finds_the_files() {
    let server = Server::start_with(&["--max-file-size", "1K"]);
    let src = tempfile::tempdir().expect("tempdir");
    write_file(&src.path().join("t/big.bin"), &data(4096, 3));
    write_file(&src.path().join("t/small.txt"), b"ok");
    let state = tempfile::tempdir().expect("state dir");
    let first = ferry_command(state.path())
        .current_dir(src.path())
        .args(["send", "--to", &server.addr(), "t"])
        .output()
        .expect("run ferry");
    assert_eq!(first.status.code(), Some(1), "{}", all_output(&first));
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let again = ferry_command(state.path())
        .current_dir(elsewhere.path())
        .args(["send", "--to", &server.addr(), "--retry-failed"])
        .output()
        .expect("run ferry");
    let said = all_output(&again);
    // Still over the limit, but found and sent: refused by the server,
    // not missing here.
    assert!(said.contains("over the server's limit"), "{said}");
    assert!(!said.contains("No such file"), "{said}");
}

/// Writes `record` where `ferry` run with state folder `state` keeps its
/// retry record, as an earlier transfer would have left it; returns where.
fn write_retry_record(state: &std::path::Path, record: &serde_json::Value) -> std::path::PathBuf {
    let path = state.join("ferry/failed.json");
    write_file(&path, record.to_string().as_bytes());
    path
}

/// A send stopped while still walking its paths left files it had never
/// found out of the retry list. --retry-failed sends what the list names,
/// then names those paths and fails, rather than saying all went; and it
/// keeps saying so until a send walks them whole.
#[test]
fn a_retry_after_a_walk_cut_short_names_what_it_cannot_cover() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let failed = src.path().join("t/a.txt");
    write_file(&failed, b"a");
    let state = tempfile::tempdir().expect("state dir");
    // What `ferry send t` leaves when stopped mid-walk with a.txt unsent.
    let record = serde_json::json!({
        "servers": { server.addr(): [{ "local": failed, "remote": "t/a.txt" }] },
        "unwalked": { server.addr(): [src.path().join("t")] },
    });
    write_retry_record(state.path(), &record);
    let retry = || {
        ferry_command(state.path())
            .args(["send", "--to", &server.addr(), "--retry-failed"])
            .output()
            .expect("run ferry")
    };
    for attempt in ["with a file to retry", "with none left"] {
        let out = retry();
        let said = all_output(&out);
        assert_eq!(out.status.code(), Some(1), "{attempt}: {said}");
        assert!(
            said.contains("was stopped before it found every file in")
                && said.contains(&src.path().join("t").display().to_string()),
            "{attempt}: {said}"
        );
        assert!(!said.contains("sent everything"), "{attempt}: {said}");
        assert_eq!(server.files(), ["t/", "t/a.txt"], "{attempt}");
    }
    // Sending the paths again, whole, ends the story.
    let whole = ferry_command(state.path())
        .args([
            "send",
            "--to",
            &server.addr(),
            "--on-clash",
            "skip-identical",
        ])
        .arg(src.path().join("t"))
        .output()
        .expect("run ferry");
    assert!(whole.status.success(), "{}", all_output(&whole));
    let after = retry();
    assert!(after.status.success(), "{}", all_output(&after));
    assert!(text(&after.stdout).contains("sent everything"));
}

/// An empty folder that could not be made is remembered like a file that
/// could not be stored, and --retry-failed makes it.
#[test]
fn an_empty_folder_not_made_is_retried() {
    let server = Server::start();
    // A file where the folder should go.
    write_file(&server.dir().join("e"), b"in the way");
    let src = tempfile::tempdir().expect("tempdir");
    fs::create_dir(src.path().join("e")).expect("empty folder");
    let state = tempfile::tempdir().expect("state dir");
    let first = ferry_send_in(
        state.path(),
        &server.addr(),
        &[src.path().join("e").to_str().expect("utf8")],
    );
    assert_eq!(first.status.code(), Some(1), "{}", all_output(&first));
    assert!(
        text(&first.stdout)
            .contains("not stored: 1 empty folder. See above; ferry send --retry-failed"),
        "{}",
        all_output(&first)
    );
    fs::remove_file(server.dir().join("e")).expect("out of the way");
    let again = ferry_send_in(state.path(), &server.addr(), &["--retry-failed"]);
    assert!(again.status.success(), "{}", all_output(&again));
    assert!(server.dir().join("e").is_dir());
}

/// A retry that cannot reach the server says so once and keeps the record
/// for the next try.
#[test]
fn a_retry_to_a_server_that_is_down_keeps_its_record() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let (_src, file) = source_file("a.txt", b"a");
    let state = tempfile::tempdir().expect("state dir");
    let record = serde_json::json!({
        "servers": { dead.clone(): [{ "local": file, "remote": "a.txt" }] },
    });
    let record_path = write_retry_record(state.path(), &record);
    let out = ferry_send_in(state.path(), &dead, &["--retry-failed"]);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert_eq!(text(&out.stderr).lines().count(), 1, "{}", all_output(&out));
    let kept = fs::read_to_string(&record_path).expect("the record is kept");
    assert!(kept.contains("a.txt"), "{kept}");
}

/// A dry run with only empty folders has nothing to ask the server, but
/// does not call the plan good without having reached it.
#[test]
fn a_dry_run_of_folders_alone_still_needs_the_server() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let src = tempfile::tempdir().expect("tempdir");
    let folder = src.path().join("empty");
    fs::create_dir(&folder).expect("folder");
    let args = ["--dry-run", folder.to_str().expect("utf8")];
    let out = ferry_send(&dead, &args);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    let server = Server::start();
    let out = ferry_send(&server.addr(), &args);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        text(&out.stdout).contains("folder     empty/"),
        "{}",
        all_output(&out)
    );
}

/// Under a rate cap, small files leave as they are paced out, not in one
/// burst at the end: the server holds some while the sender still runs.
#[test]
fn paced_small_files_arrive_while_the_send_goes_on() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    for i in 0..40 {
        write_file(&src.path().join(format!("t/f{i:02}.txt")), &data(1024, i));
    }
    let state = tempfile::tempdir().expect("state dir");
    // 40 KiB at 8 KiB/s: about five seconds.
    let mut child = ferry_command(state.path())
        .args(["send", "--to", &server.addr(), "--limit-rate", "8K"])
        .arg(src.path().join("t"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ferry");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored_while_running = loop {
        let stored = server.files().iter().any(|f| f.ends_with(".txt"));
        let running = child.try_wait().expect("wait").is_none();
        if stored || !running || Instant::now() > deadline {
            break stored && running;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let status = child.wait().expect("ferry ends");
    assert!(status.success());
    assert!(stored_while_running, "every file arrived only at the end");
    assert_eq!(
        server
            .files()
            .iter()
            .filter(|f| f.ends_with(".txt"))
            .count(),
        40
    );
}

/// Ctrl-C while files are still being read for a skip-identical plan stops
/// at once, as during the send: reading a 64 GiB file (holes) would take
/// far longer than the wait here.
#[test]
fn ctrl_c_while_hashing_for_skip_identical_stops_at_once() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let big = src.path().join("huge.bin");
    fs::File::create(&big)
        .and_then(|f| f.set_len(64 << 30))
        .expect("a sparse file");
    let state = tempfile::tempdir().expect("state dir");
    let log = src.path().join("stderr.txt");
    let mut child = ferry_command(state.path())
        .args([
            "send",
            "--to",
            &server.addr(),
            "--on-clash",
            "skip-identical",
        ])
        .arg(&big)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn ferry");
    let until = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&log).is_ok_and(|l| l.contains("reading 1 file")) {
        assert!(Instant::now() < until, "never started reading");
        thread::sleep(Duration::from_millis(20));
    }
    send_signal(child.id(), "INT");
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if stopped.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("still reading 5 s after Ctrl-C");
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    let said = fs::read_to_string(&log).expect("log");
    assert!(said.contains("interrupted"), "{said}");
    assert!(!said.contains("cannot ask the server"), "{said}");
}

/// Two files headed for one name: with --on-clash overwrite the second is
/// left out (it would silently replace the first); with the default
/// policy both are kept.
#[test]
fn two_files_for_one_name_never_replace_each_other() {
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    for side in ["x1", "x2"] {
        write_file(&src.path().join(side).join("zz/a.txt"), side.as_bytes());
    }
    let roots = [src.path().join("x1/zz"), src.path().join("x2/zz")];
    let roots: Vec<&str> = roots.iter().map(|p| p.to_str().expect("utf8")).collect();
    let mut args = vec!["--on-clash", "overwrite"];
    args.extend(&roots);
    let out = ferry_send(&server.addr(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("would be stored as zz/a.txt"),
        "{}",
        all_output(&out)
    );
    assert_eq!(server.read("zz/a.txt"), b"x1");

    let server = Server::start();
    // The plan says so before: the server, asked about each file alone,
    // calls both new, but the second will get a number.
    let mut dry = vec!["--dry-run"];
    dry.extend(&roots);
    let plan = ferry_send(&server.addr(), &dry);
    assert!(plan.status.success(), "{}", all_output(&plan));
    let shown = text(&plan.stdout);
    assert!(shown.contains("new        zz/a.txt"), "{shown}");
    assert!(
        shown.contains("rename     zz/a.txt (another file of this send has this name"),
        "{shown}"
    );
    assert!(
        shown.contains("1 new, 0 identical, 1 name clash"),
        "{shown}"
    );
    let out = ferry_send(&server.addr(), &roots);
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(server.read("zz/a.txt"), b"x1");
    assert_eq!(server.read("zz/a (1).txt"), b"x2");
}
