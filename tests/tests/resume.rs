//! Transfers that survive the real world: resuming after a killed client
//! or server, the pre-flight plan, file times and modes, and retrying what
//! failed. Everything against the real binaries.

use std::fs;
use std::io::{Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::thread;
use std::time::{Duration, SystemTime};

use ferry_e2e::{
    STAGING, Server, V1, all_output, data, ferry_command, ferry_send, ferry_send_in, send_signal,
    source_file, text, write_file,
};
use ferry_proto::{ClientMsg, ErrorCode, FileHeader, OnClash};

/// Starts a slow `ferry send` of `file` (state folder `state`) and returns
/// once the server holds part of big.bin, for the test to kill one side.
fn partly_sent(server: &Server, file: &Path, state: &Path) -> Child {
    partly_sent_as(server, file, state, "big.bin")
}

/// [`partly_sent`], for a big file the server stores as `remote`.
fn partly_sent_as(server: &Server, file: &Path, state: &Path, remote: &str) -> Child {
    let child = ferry_command(state)
        .args(["send", "--to", &server.addr(), "--limit-rate", "4M"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ferry");
    server.expect_log(&format!("path=\"{remote}\""));
    wait_for_partial(server.dir());
    child
}

/// The partials the server keeps for resuming: (name, bytes).
fn partials(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = fs::read_dir(dir.join(STAGING)) else {
        return Vec::new();
    };
    entries
        .map_while(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("partial-"))
        .map(|e| {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect()
}

/// Waits until the server holds at least 2 MiB of the upload under way
/// (at 4 MiB/s that is early; the whole file takes six seconds).
fn wait_for_partial(dir: &Path) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < until {
        if partials(dir).iter().any(|(_, len)| *len >= 2 << 20) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("no partial of 2 MiB appeared");
}

/// Interrupts an upload of a 24 MiB file by killing the client once the
/// server has some of it; returns how much the server kept.
fn interrupted_upload(server: &Server, file: &Path) -> u64 {
    let kept = interrupted_upload_of(server, file, "big.bin");
    assert!(
        server.files().is_empty(),
        "nothing visible: {:?}",
        server.files()
    );
    kept
}

/// [`interrupted_upload`] of `path` (a file or a folder), killed once the
/// server has some of the big file it stores as `remote`.
fn interrupted_upload_of(server: &Server, path: &Path, remote: &str) -> u64 {
    let state = tempfile::tempdir().expect("state dir");
    let mut child = partly_sent_as(server, path, state.path(), remote);
    child.kill().expect("SIGKILL the client");
    let _ = child.wait();
    server.expect_log("client left after");
    let kept = partials(server.dir());
    assert_eq!(kept.len(), 1, "one partial kept: {kept:?}");
    assert!(kept[0].1 > 0, "the partial holds what arrived");
    kept[0].1
}

/// Sends `file` (big.bin) again after an interruption and checks that the
/// server took it up at `offset`, stored all of `want` and kept no partial.
fn resend_resumes_at(server: &Server, file: &Path, offset: u64, want: &[u8]) -> Output {
    let out = resend_expecting_resume(server, file, offset);
    assert_eq!(server.read("big.bin"), want);
    assert!(partials(server.dir()).is_empty());
    out
}

/// Sends `file` (big.bin) again and checks that it went well and resumed
/// at `offset`.
fn resend_expecting_resume(server: &Server, file: &Path, offset: u64) -> Output {
    resend_expecting_resume_of(server, file, "big.bin", offset)
}

/// [`resend_expecting_resume`] of `path` (a file or a folder), for the big
/// file the server stores as `remote`.
fn resend_expecting_resume_of(server: &Server, path: &Path, remote: &str, offset: u64) -> Output {
    let out = ferry_send(&server.addr(), &[path.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("{remote}: resumed at")),
        "{}",
        text(&out.stderr)
    );
    server.expect_log(&format!("offset={offset}"));
    out
}

/// Writes a file of `len` bytes: `head`, holes, and `tail` at its end.
/// Big, but nothing on disk, and seconds to read.
fn sparse_file(path: &Path, head: &[u8], len: u64, tail: &[u8]) {
    let mut f = fs::File::create(path).expect("create");
    f.write_all(head).expect("head");
    let tail_at = len - tail.len() as u64;
    f.set_len(tail_at).expect("holes");
    f.seek(std::io::SeekFrom::Start(tail_at)).expect("seek");
    f.write_all(tail).expect("tail");
}

/// Grows the one partial the server keeps to `len` bytes with holes: a
/// kept part that takes long to read, with nothing on disk.
fn grow_partial(server: &Server, len: u64) {
    let (name, _) = partials(server.dir()).remove(0);
    fs::OpenOptions::new()
        .write(true)
        .open(server.dir().join(STAGING).join(name))
        .and_then(|f| f.set_len(len))
        .expect("grow the partial");
}

#[test]
fn a_killed_client_resumes_where_the_server_stopped_and_sends_less() {
    let server = Server::start();
    let (_src, file) = source_file("big.bin", &data(24 << 20, 1));
    let kept = interrupted_upload(&server, &file);

    let plan = ferry_send(&server.addr(), &["--dry-run", file.to_str().expect("utf8")]);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    assert!(
        text(&plan.stdout).contains("resume     big.bin at"),
        "{}",
        text(&plan.stdout)
    );

    // The server takes the body from where its partial ended: those bytes
    // do not cross the wire again.
    let out = resend_resumes_at(&server, &file, kept, &data(24 << 20, 1));
    assert!(
        text(&out.stdout).contains("(resumed), not sent again"),
        "{}",
        text(&out.stdout)
    );
}

/// A file whose name was taken while it was cut off still resumes, and
/// the plan says where it will land, as it does for a file sent whole.
#[test]
fn the_plan_of_a_resume_into_a_taken_name_says_where_it_lands() {
    let server = Server::start();
    let body = data(24 << 20, 4);
    let (_src, file) = source_file("big.bin", &body);
    let kept = interrupted_upload(&server, &file);
    write_file(&server.dir().join("big.bin"), b"someone else's");

    let path = file.to_str().expect("utf8");
    let plan = ferry_send(&server.addr(), &["--dry-run", path]);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let shown = text(&plan.stdout);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("resume     big.bin at ") && l.ends_with(" -> big (1).bin")),
        "{shown}"
    );
    let plan = ferry_send(
        &server.addr(),
        &["--dry-run", "--on-clash", "overwrite", path],
    );
    assert!(
        text(&plan.stdout).contains("(overwrite)"),
        "{}",
        text(&plan.stdout)
    );

    let out = ferry_send(&server.addr(), &[path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    server.expect_log(&format!("offset={kept}"));
    assert_eq!(server.read("big (1).bin"), body);
    assert_eq!(server.read("big.bin"), b"someone else's");
}

#[test]
fn a_big_file_after_small_ones_in_a_tree_still_resumes() {
    // The send starts with the small files while the tree is still being
    // walked, before the server was asked about resumes: it must ask once
    // it comes to the big file, and take it up where it broke off.
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("tree");
    for i in 0..40 {
        write_file(&tree.join(format!("a-{i:03}.txt")), &data(3000, i));
    }
    write_file(&tree.join("big.bin"), &data(24 << 20, 9));
    let kept = interrupted_upload_of(&server, &tree, "tree/big.bin");
    resend_expecting_resume_of(&server, &tree, "tree/big.bin", kept);
    assert_eq!(server.read("tree/big.bin"), data(24 << 20, 9));
    assert!(partials(server.dir()).is_empty());
    // The small files were stored by both sends, the second time under
    // numbered names.
    assert_eq!(server.read("tree/a-007.txt"), data(3000, 7));
    let texts = server
        .files()
        .iter()
        .filter(|f| f.ends_with(".txt"))
        .count();
    assert_eq!(texts, 80, "{:?}", server.files());
}

#[test]
fn a_killed_server_keeps_the_partial_and_the_upload_resumes_after_restart() {
    let server = Server::start();
    let (_src, file) = source_file("big.bin", &data(24 << 20, 2));
    let state = tempfile::tempdir().expect("state dir");
    let mut child = partly_sent(&server, &file, state.path());
    // SIGKILL the server mid-upload, then start it again on the same folder.
    let (root, dir) = server.into_root();
    let status = child.wait().expect("client ends");
    assert!(!status.success(), "the client saw the server go");
    let kept = partials(&dir);
    assert_eq!(kept.len(), 1, "{kept:?}");

    let server = Server::start_in(root, dir, &[]);
    resend_resumes_at(&server, &file, kept[0].1, &data(24 << 20, 2));
}

#[test]
fn a_tampered_partial_is_never_trusted() {
    let server = Server::start();
    let (_src, file) = source_file("big.bin", &data(24 << 20, 3));
    interrupted_upload(&server, &file);
    // Someone changes the kept bytes.
    let (name, _) = partials(server.dir()).remove(0);
    let path = server.dir().join(STAGING).join(name);
    let mut bytes = fs::read(&path).expect("read partial");
    bytes[100] ^= 0xff;
    fs::write(&path, bytes).expect("tamper");

    let out = ferry_send(&server.addr(), &[file.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    server.expect_log("digest mismatch");
    assert_eq!(
        server.read("big.bin"),
        data(24 << 20, 3),
        "the whole file, sent again"
    );
    assert!(partials(server.dir()).is_empty());
    // The sender says so, and does not count the kept part as saved.
    assert!(
        text(&out.stderr).contains("big.bin: the server could not use what it kept"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("(resumed)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn partials_expire_after_the_configured_time() {
    let server = Server::start();
    let (_src, file) = source_file("big.bin", &data(24 << 20, 4));
    interrupted_upload(&server, &file);
    let (root, dir) = server.into_root();
    let server = Server::start_in(root, dir, &["--partial-ttl", "0"]);
    server.expect_log("removed 1 incomplete upload(s) left by an earlier run");
    assert!(partials(server.dir()).is_empty());
    let plan = ferry_send(&server.addr(), &["--dry-run", file.to_str().expect("utf8")]);
    assert!(
        text(&plan.stdout).contains("new        big.bin"),
        "{}",
        text(&plan.stdout)
    );
}

#[test]
fn the_plan_gives_a_verdict_for_every_file_and_sends_nothing() {
    let server = Server::start_with(&["--max-file-size", "10M"]);
    write_file(&server.dir().join("same.txt"), b"same bytes");
    write_file(&server.dir().join("taken.txt"), b"old");
    server.block_with_symlink("blocked");

    let src = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| src.path().join(name).to_string_lossy().into_owned();
    write_file(&src.path().join("new.txt"), b"new");
    write_file(&src.path().join("same.txt"), b"same bytes");
    write_file(&src.path().join("taken.txt"), b"different");
    write_file(&src.path().join("blocked/x.txt"), b"never");
    write_file(&src.path().join("big.bin"), &data(11 << 20, 5));
    let before = server.files();

    let out = ferry_send(
        &server.addr(),
        &[
            "--dry-run",
            "--on-clash",
            "skip-identical",
            &p("new.txt"),
            &p("same.txt"),
            &p("taken.txt"),
            &p("blocked"),
            &p("big.bin"),
        ],
    );
    let shown = text(&out.stdout);
    assert!(!out.status.success(), "refusals make a dry run fail");
    for want in [
        "new        new.txt",
        "identical  same.txt",
        "rename     taken.txt -> taken (1).txt",
        "REFUSED    blocked/x.txt: `blocked` exists and is not a folder (or is a symlink)",
        "REFUSED    big.bin: declared size 11534336 is over the limit of 10485760 bytes",
        "plan: 1 new, 1 identical, 1 name clash, 0 to resume, 2 refused; nothing was sent",
    ] {
        assert!(shown.contains(want), "missing {want:?} in:\n{shown}");
    }
    let out = ferry_send(
        &server.addr(),
        &["--dry-run", "--on-clash", "overwrite", &p("taken.txt")],
    );
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("overwrite  taken.txt"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(server.files(), before, "a plan changes nothing");

    // More than the disk holds: a sparse file of 8 TiB costs nothing here.
    let unlimited = Server::start();
    let huge = src.path().join("huge.bin");
    fs::File::create(&huge)
        .expect("create")
        .set_len(8 << 40)
        .expect("sparse");
    let out = ferry_send(&unlimited.addr(), &["--dry-run", &p("huge.bin")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("REFUSED    huge.bin: not enough space"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn modification_times_are_kept_and_modes_come_from_the_server() {
    let server = Server::start_with(&["--file-mode", "640"]);
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join("old-script.sh");
    write_file(&file, b"#!/bin/sh\necho hi\n");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o4755)).expect("chmod");
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(&file)
        .expect("open")
        .set_modified(when)
        .expect("set mtime");

    let out = ferry_send(&server.addr(), &[file.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta = fs::metadata(server.dir().join("old-script.sh")).expect("stored");
    assert_eq!(meta.modified().expect("mtime"), when);
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o640,
        "the server's mode, not the sender's"
    );

    let out = ferry_send(
        &server.addr(),
        &[
            "--no-mtime",
            "--on-clash",
            "overwrite",
            file.to_str().expect("utf8"),
        ],
    );
    assert!(out.status.success());
    let meta = fs::metadata(server.dir().join("old-script.sh")).expect("stored");
    assert!(meta.modified().expect("mtime") > when + Duration::from_secs(3600));
}

#[test]
fn retry_failed_sends_again_only_what_failed() {
    let state = tempfile::tempdir().expect("tempdir");
    let server = Server::start();
    server.block_with_symlink("batch/blocked");
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("batch");
    for i in 0..3 {
        write_file(&tree.join(format!("a{i}.txt")), b"fine");
    }
    write_file(&tree.join("blocked/x.txt"), b"later");

    let out = ferry_send_in(
        state.path(),
        &server.addr(),
        &[tree.to_str().expect("utf8")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("--retry-failed"),
        "{}",
        text(&out.stdout)
    );
    let record = fs::read_to_string(state.path().join("ferry/failed.json")).expect("record");
    assert!(
        record.contains("batch/blocked/x.txt") && !record.contains("a0.txt"),
        "{record}"
    );

    // The obstacle goes; only the failed file is sent again, to its place.
    fs::remove_file(server.dir().join("batch/blocked")).expect("unblock");
    let out = ferry_send_in(state.path(), &server.addr(), &["--retry-failed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("stored 1 file"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(server.read("batch/blocked/x.txt"), b"later");
    assert!(
        !server.files().iter().any(|f| f.contains("(1)")),
        "{:?}",
        server.files()
    );
    assert!(!state.path().join("ferry/failed.json").exists());

    let out = ferry_send_in(state.path(), &server.addr(), &["--retry-failed"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("nothing to retry"));
}

/// A file the server already had, sent again and cancelled, leaves a
/// partial behind. The retry must find the bytes already there and leave
/// the file out, not resume the partial into a second copy.
#[test]
fn a_retry_of_a_file_already_there_does_not_resume_it_into_a_copy() {
    let server = Server::start();
    let body = data(8 << 20, 9);
    let (_src, file) = source_file("big.bin", &body);
    write_file(&server.dir().join("big.bin"), &body);
    let state = tempfile::tempdir().expect("state dir");
    let child = partly_sent_as(&server, &file, state.path(), "big.bin");
    send_signal(child.id(), "INT");
    let mut child = child;
    child.wait().expect("ferry ends");
    assert_eq!(partials(server.dir()).len(), 1, "a partial is kept");

    let out = ferry_send_in(state.path(), &server.addr(), &["--retry-failed"]);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("1 file already on the server, identical"),
        "{}",
        all_output(&out)
    );
    assert_eq!(server.files(), ["big.bin"]);
    assert_eq!(server.read("big.bin"), body);
}

#[test]
fn two_uploads_under_one_resume_key_at_once_do_not_share_a_partial() {
    use ferry_e2e::V1;
    use ferry_proto::{ClientMsg, FileHeader};
    use std::io::Write;

    let server = Server::start();
    let (one, two) = (data(3 << 20, 8), data(3 << 20, 9));
    let header = |body: &[u8]| {
        ClientMsg::File(FileHeader {
            id: 1,
            path: "same.bin".into(),
            size: body.len() as u64,
            resume_key: Some("one key".into()),
            ..Default::default()
        })
    };
    let mut a = V1::connect(&server.addr());
    let mut b = V1::connect(&server.addr());
    a.send(&header(&one));
    a.stream.write_all(&one[..1 << 20]).expect("a, first part");
    server.expect_log("path=\"same.bin\"");
    b.send(&header(&two));
    b.stream.write_all(&two[..1 << 20]).expect("b, first part");
    a.stream.write_all(&one[1 << 20..]).expect("a, rest");
    b.stream.write_all(&two[1 << 20..]).expect("b, rest");
    a.finish(1, &one);
    b.finish(1, &two);
    let mut stored = vec![a.expect_stored(), b.expect_stored()];
    stored.sort();
    assert_eq!(stored, ["same (1).bin", "same.bin"]);
    let mut contents = [server.read("same.bin"), server.read("same (1).bin")];
    contents.sort();
    let mut want = [one, two];
    want.sort();
    assert_eq!(contents, want);
}

#[test]
fn a_good_send_to_one_server_keeps_the_failures_at_another() {
    let state = tempfile::tempdir().expect("tempdir");
    let strict = Server::start_with(&["--max-file-size", "1K"]);
    let other = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    let big = src.path().join("too-big.bin");
    write_file(&big, &data(4096, 1));
    let small = src.path().join("fine.txt");
    write_file(&small, b"fine");

    let out = ferry_send_in(state.path(), &strict.addr(), &[big.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let out = ferry_send_in(
        state.path(),
        &other.addr(),
        &[small.to_str().expect("utf8")],
    );
    assert!(out.status.success());
    // The failure at the strict server is still there to retry.
    let out = ferry_send_in(state.path(), &other.addr(), &["--retry-failed"]);
    assert!(
        text(&out.stdout).contains("nothing to retry"),
        "{}",
        text(&out.stdout)
    );
    let out = ferry_send_in(
        state.path(),
        &strict.addr(),
        &["--retry-failed", "--dry-run"],
    );
    assert!(
        text(&out.stdout).contains("REFUSED    too-big.bin"),
        "{}",
        text(&out.stdout)
    );
}

/// Cuts an upload of `body` as `path` (resumable under `key`) after `sent`
/// bytes, the way a dropped connection would; returns what the server kept.
fn cut_upload(server: &Server, path: &str, key: &str, body: &[u8], sent: usize) -> u64 {
    let before = partials(server.dir());
    let mut c = V1::connect(&server.addr());
    c.send(&ClientMsg::File(FileHeader {
        id: 0,
        path: path.into(),
        size: body.len() as u64,
        resume_key: Some(key.into()),
        ..Default::default()
    }));
    c.stream.write_all(&body[..sent]).expect("part of the body");
    drop(c);
    server.expect_log(&format!(
        "client left after {sent} of {} bytes of `{path}`",
        body.len()
    ));
    let new: Vec<_> = partials(server.dir())
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "one more partial kept: {new:?}");
    new[0].1
}

/// Resumes `path` at `offset`: the header and the rest of `body`.
fn resume(c: &mut V1, id: u64, path: &str, key: &str, body: &[u8], offset: u64) {
    let from = usize::try_from(offset).expect("offset fits");
    resume_with(c, id, path, key, offset, &body[from..]);
}

/// Resumes `path` at `offset` with `rest`, the bytes after it.
fn resume_with(c: &mut V1, id: u64, path: &str, key: &str, offset: u64, rest: &[u8]) {
    c.send(&ClientMsg::File(FileHeader {
        id,
        path: path.into(),
        size: offset + rest.len() as u64,
        resume_key: Some(key.into()),
        offset,
        ..Default::default()
    }));
    c.stream.write_all(rest).expect("the rest");
}

/// The kept part of a resumed file is hashed again while the connection
/// goes on: files after it are received and acked, in order, and a resumed
/// file that does not match is refused without ending the connection.
#[test]
fn files_after_a_resumed_one_go_on_and_are_acked_in_order() {
    let server = Server::start();
    let body = data(24 << 20, 5);
    let kept = cut_upload(&server, "big.bin", "key-1", &body, 8 << 20);
    assert_eq!(kept, 8 << 20);

    let mut c = V1::connect(&server.addr());
    resume(&mut c, 1, "big.bin", "key-1", &body, kept);
    c.finish(1, &body);
    c.upload(2, "after-1.txt", b"one", OnClash::Rename);
    c.upload(3, "after-2.txt", b"two", OnClash::Rename);
    assert_eq!(c.expect_stored(), "big.bin");
    assert_eq!(c.expect_stored(), "after-1.txt");
    assert_eq!(c.expect_stored(), "after-2.txt");
    assert_eq!(server.read("big.bin"), body);
    assert!(partials(server.dir()).is_empty());

    // The sender's whole file is not what the kept part began: refused.
    let other = data(24 << 20, 6);
    let kept = cut_upload(&server, "other.bin", "key-2", &other, 8 << 20);
    let mut c = V1::connect(&server.addr());
    resume(&mut c, 4, "other.bin", "key-2", &body, kept);
    c.finish(4, &body);
    c.upload(5, "after-3.txt", b"three", OnClash::Rename);
    c.expect_failed(ErrorCode::ResumeMismatch);
    assert_eq!(c.expect_stored(), "after-3.txt");
    server.expect_log("digest mismatch");
    assert!(!server.dir().join("other.bin").exists());
    assert!(partials(server.dir()).is_empty(), "the bad partial is gone");
}

/// The session reads on while the kept part is hashed again: a sender that
/// does not wait for the resumed file's ack, and whose writes give up after
/// half a second, still gets the files after it out (as many as the
/// server's queue holds), although hashing the kept part takes seconds.
#[test]
fn the_server_reads_on_while_a_big_kept_part_is_hashed_again() {
    let server = Server::start();
    cut_upload(&server, "huge.bin", "key-3", &data(3 << 20, 8), 2 << 20);
    // Seconds of reading and hashing for the server.
    let kept: u64 = 2 << 30;
    grow_partial(&server, kept);

    let mut c = V1::connect(&server.addr());
    c.stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .expect("write timeout");
    let tail = data(1 << 20, 9);
    resume_with(&mut c, 1, "huge.bin", "key-3", kept, &tail);
    // Not the digest of the whole: only the reading matters here.
    c.finish(1, &tail);
    // Far more than the socket buffers hold, written while the server hashes.
    let after = data(8 << 20, 10);
    for id in 2..10 {
        c.upload(id, &format!("after-{id}.bin"), &after, OnClash::Rename);
    }
    c.stream.set_read_timeout(None).expect("no read timeout");
    c.expect_failed(ErrorCode::ResumeMismatch);
    for id in 2..10 {
        assert_eq!(c.expect_stored(), format!("after-{id}.bin"));
    }
}

/// The sender hashes the part the server already has before it connects:
/// reading it takes seconds here (2 GiB), and a server that drops a
/// connection silent for a second still gets the rest.
#[test]
fn a_big_kept_part_is_hashed_by_the_sender_before_it_connects() {
    let server = Server::start_with(&["--idle-timeout", "1"]);
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join("big.bin");
    // 2 MiB of data, holes up to 2 GiB, then 1 MiB of data: the server's
    // partial, grown with holes after the interruption, matches it.
    let kept: u64 = 2 << 30;
    sparse_file(
        &file,
        &data(2 << 20, 11),
        kept + (1 << 20),
        &data(1 << 20, 12),
    );
    interrupted_upload(&server, &file);
    grow_partial(&server, kept);

    let out = resend_expecting_resume(&server, &file, kept);
    assert!(
        text(&out.stderr).contains("big.bin: reading the 2 GiB the server already has"),
        "{}",
        text(&out.stderr)
    );
    let stored = fs::metadata(server.dir().join("big.bin")).expect("stored");
    // Its digest was checked end to end; the size says it is all there.
    assert_eq!(stored.len(), kept + (1 << 20));
}

/// After a resumed file the sender waits for its ack (the server checks
/// the kept part first) before it sends the next file, instead of filling
/// the server's queue while the check runs; and the server does not take
/// that wait, longer than its idle timeout here, for an idle client.
#[test]
fn the_sender_waits_for_a_resumed_file_to_be_checked_before_the_next() {
    let server = Server::start_with(&["--idle-timeout", "1"]);
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join("big.bin");
    let kept: u64 = 2 << 30;
    sparse_file(&file, &data(2 << 20, 13), kept + (1 << 20), &[]);
    let next = src.path().join("next.txt");
    fs::write(&next, b"after the big one").expect("write");
    interrupted_upload(&server, &file);
    grow_partial(&server, kept);

    let out = ferry_send(
        &server.addr(),
        &[file.to_str().expect("utf8"), next.to_str().expect("utf8")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = server.log();
    let stored_big = log.find("name=\"big.bin\" bytes=").expect("big.bin stored");
    let next_starts = log.find("path=\"next.txt\"").expect("next.txt received");
    assert!(
        stored_big < next_starts,
        "next.txt went out before big.bin was checked:\n{log}"
    );
    assert!(!log.contains("idle, waiting for a frame"), "{log}");
}

/// While a connection's resumed file is checked (seconds for 6 GiB of
/// holes), its client waits: the connection is not idle, so a newcomer to
/// a full server does not evict it; and a second resume sent meanwhile is
/// taken up only once the first check is over, one at a time.
#[test]
fn a_connection_under_a_check_is_not_idle_and_its_next_resume_waits() {
    let server = Server::start_with(&["--max-connections", "1"]);
    let big: u64 = 6 << 30;
    cut_upload(&server, "first.bin", "key-a", &data(3 << 20, 20), 2 << 20);
    grow_partial(&server, big);
    let second = data(3 << 20, 21);
    let kept = cut_upload(&server, "second.bin", "key-b", &second, 2 << 20);

    let mut c = V1::connect(&server.addr());
    let tail = data(1 << 20, 22);
    resume_with(&mut c, 1, "first.bin", "key-a", big, &tail);
    c.finish(1, &tail); // not the whole file's digest: refused after the check

    // Silent, as a client waiting for that ack is, for longer than the 2 s
    // after which an idle connection may be closed to make room.
    thread::sleep(Duration::from_millis(2500));
    assert!(
        V1::try_connect(&server.addr()).is_none(),
        "a newcomer got in:\n{}",
        server.log()
    );
    resume(&mut c, 2, "second.bin", "key-b", &second, kept);
    c.finish(2, &second);
    c.expect_failed(ErrorCode::ResumeMismatch);
    assert_eq!(c.expect_stored(), "second.bin");
    let log = server.log();
    assert!(!log.contains("closed idle connection"), "{log}");
    let first_checked = log.find("digest mismatch").expect("first checked");
    let second_taken_up = log
        .find("path=\"second.bin\" offset=")
        .expect("second resumed");
    assert!(first_checked < second_taken_up, "{log}");
}

/// The size limit holds for the whole file, not just what a resume still
/// sends: a partial resumed under a bigger size each time cannot grow past
/// it.
#[test]
fn a_resume_cannot_grow_a_file_past_the_size_limit() {
    let server = Server::start_with(&["--max-file-size", "2M"]);
    let first = data(2 << 20, 30);
    let kept = cut_upload(&server, "grow.bin", "key-g", &first, (2 << 20) - 1);

    let mut c = V1::connect(&server.addr());
    resume_with(&mut c, 1, "grow.bin", "key-g", kept, &data(2 << 20, 31));
    let refused = c.expect_failed(ErrorCode::TooLarge);
    assert!(
        format!("{refused:?}").contains("over the limit"),
        "{refused:?}"
    );
    assert!(server.files().is_empty(), "{:?}", server.files());
    let kept_now: u64 = partials(server.dir()).iter().map(|(_, len)| len).sum();
    assert_eq!(kept_now, kept, "the partial did not grow");
}

/// An interrupted upload counts against the quota only what arrived, and
/// its resume only what is still to come: the quota sees the bytes on
/// disk, not the sizes announced.
#[test]
fn an_interrupted_upload_counts_against_the_quota_only_what_arrived() {
    let server = Server::start_with(&["--quota", "12M"]);
    let big = data(9 << 20, 32);
    let kept = cut_upload(&server, "big.bin", "key-q", &big, 1 << 20);
    assert_eq!(kept, 1 << 20);

    let mut c = V1::connect(&server.addr());
    c.upload(1, "other.bin", &data(3 << 20, 33), OnClash::Rename);
    assert_eq!(c.expect_stored(), "other.bin");
    resume(&mut c, 2, "big.bin", "key-q", &big, kept);
    c.finish(2, &big);
    assert_eq!(c.expect_stored(), "big.bin");
    assert_eq!(server.read("big.bin"), big);
}

/// Partials are removed once their time is up while the server runs, not
/// only at its next start, and the room they took is given back.
#[test]
fn partials_expire_while_the_server_runs_and_give_their_room_back() {
    let server = Server::start_with(&["--partial-ttl", "1s", "--quota", "4M"]);
    // Cut by hand: with a TTL this short, the partial may be gone before a
    // look at the staging folder could count it.
    let mut c = V1::connect(&server.addr());
    c.send(&ClientMsg::File(FileHeader {
        id: 0,
        path: "big.bin".into(),
        size: 3 << 20,
        resume_key: Some("key-e".into()),
        ..Default::default()
    }));
    c.stream
        .write_all(&data(2 << 20, 34))
        .expect("part of the body");
    drop(c);
    server.expect_log("client left after 2097152 of 3145728 bytes");
    server.expect_log("removed 1 partial upload(s) kept longer than --partial-ttl");
    assert!(partials(server.dir()).is_empty());

    let mut c = V1::connect(&server.addr());
    let fills = data(4 << 20, 35);
    c.upload(1, "fills.bin", &fills, OnClash::Rename);
    assert_eq!(c.expect_stored(), "fills.bin");
}

/// A resume the server cannot take up is refused without leaving an empty
/// partial behind for each attempt.
#[test]
fn a_refused_resume_leaves_no_empty_partial() {
    let server = Server::start();
    for n in 0..3 {
        let mut c = V1::connect(&server.addr());
        let path = format!("never-sent-{n}.bin");
        resume_with(&mut c, 1, &path, "no such key", 1 << 20, &data(1 << 20, 36));
        c.expect_failed(ErrorCode::ResumeMismatch);
    }
    assert_eq!(partials(server.dir()), Vec::new());
}
