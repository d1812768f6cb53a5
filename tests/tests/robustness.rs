//! Peers that die, dawdle, crowd in or outlast the server: the server keeps
//! serving everyone else, keeps nothing partial, and stops cleanly.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use ferry_e2e::{
    Server, V1, all_output, connect, data, ferry_send, raw_frame, read_to_close, tutorial_upload,
    upload_bytes, write_file,
};
use ferry_proto::{ClientMsg, ErrorCode, OnClash, ServerMsg, to_body};

#[test]
fn a_client_that_dies_mid_upload_leaves_nothing() {
    let server = Server::start();
    let body = data(4 << 20, 5);
    let mut c = V1::connect(&server.addr());
    c.start_file(1, "dying.bin", body.len() as u64);
    c.stream
        .write_all(&body[..1 << 20])
        .expect("part of the body");
    drop(c); // what the kernel does when the process is killed
    server.expect_log("client left after 1048576 of 4194304 bytes");
    assert!(server.files().is_empty());
    assert!(server.staging_is_empty());
    // Others are served as before.
    let mut c = V1::connect(&server.addr());
    c.upload(1, "alive.bin", &body, OnClash::Rename);
    assert_eq!(c.expect_stored(), "alive.bin");
    assert_eq!(server.read("alive.bin"), body);
}

/// A connection reset in the middle of a body (a client killed with data
/// unread, a middlebox) is logged with the file it cut, like a clean close.
#[test]
fn a_reset_mid_upload_is_logged_with_the_file_it_cut() {
    let server = Server::start();
    let body = data(1 << 20, 6);
    let mut c = V1::connect(&server.addr());
    c.start_file(1, "reset.bin", body.len() as u64);
    c.stream.write_all(&body[..4096]).expect("part of the body");
    server.expect_log("path=\"reset.bin\"");
    // Closing with SO_LINGER 0 sends a reset instead of a clean end.
    rustix::net::sockopt::set_socket_linger(&c.stream, Some(Duration::ZERO)).expect("linger");
    drop(c);
    server.expect_log("after 4096 of 1048576 bytes of `reset.bin`");
    assert!(
        server
            .log()
            .contains("reset by peer (os error 104) after 4096"),
        "{}",
        server.log()
    );
    assert!(server.files().is_empty());
    assert!(server.staging_is_empty());
}

#[test]
fn fifty_clients_at_once_all_land_intact() {
    let server = Server::start();
    let addr = server.addr();
    let workers: Vec<_> = (0..50u8)
        .map(|n| {
            let addr = addr.clone();
            thread::spawn(move || {
                let files: Vec<(String, Vec<u8>)> = (0..3u8)
                    .map(|k| {
                        (
                            format!("c{n}/f{k}.bin"),
                            data(50_000 + n as usize * 997 + k as usize, n ^ k),
                        )
                    })
                    .collect();
                if n % 2 == 0 {
                    let mut c = V1::connect(&addr);
                    for (id, (path, bytes)) in files.iter().enumerate() {
                        c.upload(id as u64, path, bytes, OnClash::Rename);
                    }
                    for _ in &files {
                        c.expect_stored();
                    }
                } else {
                    let mut s = connect(&addr);
                    for (path, bytes) in &files {
                        s.write_all(&tutorial_upload(path, bytes)).expect("send");
                    }
                    s.shutdown(Shutdown::Write).expect("close");
                    assert!(read_to_close(&mut s).is_empty());
                }
                files
            })
        })
        .collect();
    let mut expected = Vec::new();
    for w in workers {
        expected.extend(w.join().expect("client thread"));
    }
    // Tutorial clients get no ack; wait for the server to log each file.
    let until = Instant::now() + Duration::from_secs(20);
    while server.log().matches(" stored ").count() < expected.len() && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    for (path, bytes) in &expected {
        assert_eq!(&server.read(path), bytes, "{path}");
    }
    assert!(server.staging_is_empty());
}

#[test]
fn an_idle_crowd_cannot_lock_out_an_honest_client() {
    let server = Server::start_with(&["--max-connections", "8"]);
    let idle: Vec<TcpStream> = (0..8).map(|_| connect(&server.addr())).collect();
    // Let them all be idle long enough to be evicted (2 s), with margin.
    thread::sleep(Duration::from_millis(3000));
    let mut c = V1::connect(&server.addr());
    c.upload(1, "honest.txt", b"made it", OnClash::Rename);
    assert_eq!(c.expect_stored(), "honest.txt");
    server.expect_log("connection limit (8) reached: closed idle connection");
    drop(idle);
}

/// A crowd that sends a byte of a frame and never the rest is as
/// evictable as a silent one: it cannot hold every connection for the
/// header timeout.
#[test]
fn a_crowd_of_unfinished_frames_cannot_lock_out_an_honest_client() {
    let server = Server::start_with(&["--max-connections", "8", "--header-timeout", "30"]);
    let crowd: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut s = connect(&server.addr());
            // The first byte of a frame (or of a TLS record), then nothing.
            s.write_all(&[if i % 2 == 0 { b'A' } else { 0x16 }])
                .expect("a byte");
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(3000));
    let mut c = V1::connect(&server.addr());
    c.upload(1, "honest.txt", b"made it", OnClash::Rename);
    assert_eq!(c.expect_stored(), "honest.txt");
    server.expect_log("connection limit (8) reached: closed idle connection");
    drop(crowd);
}

#[test]
fn when_everyone_is_busy_newcomers_are_refused_with_a_log_line() {
    let server = Server::start_with(&["--max-connections", "2"]);
    let mut busy: Vec<V1> = (0..2)
        .map(|i| {
            let mut c = V1::connect(&server.addr());
            c.start_file(1, &format!("slow{i}.bin"), 1000);
            c.stream.write_all(&[0u8; 10]).expect("start body");
            c
        })
        .collect();
    server.expect_log("receiving peer");
    server.expect_log("path=\"slow1.bin\"");
    server.expect_log("path=\"slow0.bin\"");
    // Long enough that idle sessions could be evicted: busy ones must not.
    thread::sleep(Duration::from_millis(2500));
    let mut s = connect(&server.addr());
    assert!(read_to_close(&mut s).is_empty());
    server.expect_log("every session is busy: refusing connection");
    // The busy ones finish normally.
    for (i, c) in busy.iter_mut().enumerate() {
        c.stream.write_all(&[0u8; 990]).expect("rest");
        c.finish(1, &[0u8; 1000]);
        assert_eq!(c.expect_stored(), format!("slow{i}.bin"));
    }
}

#[test]
fn slow_and_silent_peers_time_out() {
    let server = Server::start_with(&[
        "--header-timeout",
        "1",
        "--idle-timeout",
        "1",
        "--body-timeout",
        "1",
    ]);
    // Silent after connecting.
    let mut silent = connect(&server.addr());
    // Trickling a header one byte at a time.
    let frame = raw_frame(br#"{"size": 1, "filename": "loris.txt"}"#);
    let mut loris = connect(&server.addr());
    // Stalling inside a body.
    let mut stall = V1::connect(&server.addr());
    stall.start_file(1, "stall.bin", 100);
    stall.stream.write_all(&[1u8; 10]).expect("some body");

    let started = Instant::now();
    for byte in frame.iter().take(20) {
        if loris.write_all(&[*byte]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(150));
    }
    assert!(read_to_close(&mut silent).is_empty());
    let _ = read_to_close(&mut loris);
    let _ = read_to_close(&mut stall.stream);
    assert!(started.elapsed() < Duration::from_secs(10));
    server.expect_log("timed out idle");
    server.expect_log("timed out inside a header frame");
    server.expect_log("timed out waiting for body bytes");
    assert!(server.files().is_empty());
    assert!(server.staging_is_empty());
}

/// A client that reads its acks a little at a time, just inside the write
/// timeout, is dropped once it falls below the minimum rate: it cannot keep
/// its slot busy (and so never evicted) for ever.
#[test]
fn a_client_taking_its_acks_below_the_minimum_rate_is_dropped() {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    use std::io::Read;

    let server = Server::start_with(&[
        "--body-timeout",
        "2",
        "--min-rate",
        "10000",
        "--max-connections",
        "1",
    ]);
    // A small receive buffer, set before connecting so the window stays
    // small: the server's acks back up after a few.
    let socket =
        rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    sockopt::set_socket_recv_buffer_size(&socket, 4096).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = server.addr().parse().expect("address");
    rustix::net::connect(&socket, &addr).expect("connect");
    let mut slow = V1 {
        stream: TcpStream::from(socket),
    };
    slow.send(&ClientMsg::Hello {
        version: 1,
        client: "slow reader".into(),
        token: None,
    });
    assert!(matches!(slow.recv(), Some(ServerMsg::Welcome { .. })));
    let mut writer = slow.stream.try_clone().expect("clone");
    // Aborted files, each answered with an ack of a few hundred bytes.
    thread::spawn(move || {
        for id in 0..20_000u64 {
            let mut bytes = to_framed(&ClientMsg::File(ferry_proto::FileHeader {
                id,
                path: "a.bin".into(),
                size: 1,
                on_clash: OnClash::Rename,
                ..Default::default()
            }));
            bytes.push(b'x');
            bytes.extend(to_framed(&ClientMsg::Abort {
                id,
                reason: "r".repeat(400),
            }));
            if writer.write_all(&bytes).is_err() {
                return;
            }
        }
    });
    // About 8 KB/s, below the 10,000 B/s minimum, yet often enough that no
    // single write waits out the 2 s write timeout. Once the acks fill the
    // socket buffers, the server waits on this client to make room.
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    while !server
        .log()
        .contains("takes its answers slower than the minimum rate")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still served after 60 s:\n{}",
            server
                .log()
                .lines()
                .filter(|l| !l.contains("aborted"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(500));
        let _ = slow.stream.read(&mut buf);
    }
    // The one slot is free again.
    let mut next = V1::connect(&server.addr());
    next.upload(1, "next.bin", b"next", OnClash::Rename);
    next.expect_stored();
}

fn to_framed(msg: &ClientMsg) -> Vec<u8> {
    raw_frame(&to_body(msg))
}

#[test]
fn sigterm_lets_a_running_upload_finish_then_exits_and_the_port_is_reusable() {
    let mut server = Server::start_with(&["--grace", "10"]);
    let addr = server.addr();
    let body = data(3 << 20, 7);
    let mut running = V1::connect(&addr);
    running.start_file(1, "finishing.bin", body.len() as u64);
    running
        .stream
        .write_all(&body[..1 << 20])
        .expect("first part");
    let mut idle = V1::connect(&addr);
    server.expect_log("path=\"finishing.bin\"");

    server.signal("TERM");
    // The idle client is told and let go at once.
    assert!(matches!(
        idle.recv(),
        Some(ServerMsg::Error {
            code: ErrorCode::ShuttingDown,
            ..
        })
    ));
    // The running upload completes and is acked.
    running.stream.write_all(&body[1 << 20..]).expect("rest");
    running.finish(1, &body);
    assert_eq!(running.expect_stored(), "finishing.bin");
    drop(running);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(server.read("finishing.bin"), body);

    // Restart on the very same port at once.
    let (root, dir) = server.into_root();
    let again = Server::start_at(&addr, root, dir, &[]);
    assert_eq!(again.addr(), addr);
    let mut c = V1::connect(&addr);
    c.upload(1, "after-restart.txt", b"yes", OnClash::Rename);
    assert_eq!(c.expect_stored(), "after-restart.txt");
}

/// A tutorial client never hears of a shutdown, so a file it has begun to
/// send when its previous one ends is an upload in progress, not one to
/// drop: it gets the grace period too.
#[test]
fn a_tutorial_file_already_arriving_at_shutdown_is_stored() {
    let mut server = Server::start_with(&["--grace", "10"]);
    let first = data(2 << 20, 3);
    let second = b"second".to_vec();
    let mut s = connect(&server.addr());
    let mut wire = tutorial_upload("first.bin", &first);
    wire.extend_from_slice(&tutorial_upload("second.txt", &second));
    let cut = wire.len() - second.len() - 100;
    s.write_all(&wire[..1 << 20]).expect("first part");
    server.expect_log("path=\"first.bin\"");
    server.signal("TERM");
    server.expect_log("shutting down");
    // The rest of the first file and all of the second, in one write: the
    // second's header is read along with the first's end.
    s.write_all(&wire[1 << 20..cut])
        .expect("up to the second's header");
    s.write_all(&wire[cut..]).expect("the rest");
    drop(s);
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(server.read("first.bin"), first);
    assert_eq!(server.read("second.txt"), second, "{}", server.log());
}

/// The wait between a body and its `done` is a body's silence, not a
/// header's: a client may hash what it sent only once it is sent. Past
/// `--body-timeout` the client is told, and the log names the file.
#[test]
fn a_done_may_come_as_late_as_a_body_byte_but_no_later() {
    let server = Server::start_with(&["--header-timeout", "1", "--body-timeout", "3"]);
    let body = data(1000, 5);
    let mut c = V1::connect(&server.addr());
    c.start_file(1, "hashed-after.bin", body.len() as u64);
    c.stream.write_all(&body).expect("body");
    thread::sleep(Duration::from_millis(1800));
    c.finish(1, &body);
    assert_eq!(c.expect_stored(), "hashed-after.bin");

    let mut c = V1::connect(&server.addr());
    c.start_file(1, "never-done.bin", body.len() as u64);
    c.stream.write_all(&body).expect("body");
    match c.recv() {
        Some(ServerMsg::Error {
            code: ErrorCode::Timeout,
            message,
        }) => assert_eq!(
            message,
            "timed out waiting for the `done` that follows the body of `never-done.bin`"
        ),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    server.expect_log(
        "connection dropped: timed out waiting for the `done` that follows the body of `never-done.bin`",
    );
    assert_eq!(server.files(), vec!["hashed-after.bin".to_string()]);
}

#[test]
fn an_upload_outlasting_the_grace_period_is_dropped_and_cleaned() {
    let mut server = Server::start_with(&["--grace", "1"]);
    let mut c = V1::connect(&server.addr());
    c.start_file(1, "too-slow.bin", 1 << 20);
    c.stream.write_all(&[0u8; 1000]).expect("a little");
    server.expect_log("path=\"too-slow.bin\"");
    server.signal("INT");
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    assert!(
        server
            .log()
            .contains("grace period over: dropping 1 unfinished upload")
    );
    // The server cut it, and says so: not "client left".
    assert!(
        server.log().contains(
            "the server shut down (its --grace period was over) after 1000 of 1048576 bytes of `too-slow.bin`"
        ),
        "{}",
        server.log()
    );
    assert!(server.files().is_empty());
    assert!(server.staging_is_empty());
    // And the client was told so, rather than finding the connection gone.
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    match c.recv() {
        Some(ServerMsg::Error { code, message }) => {
            assert_eq!(code, ErrorCode::ShuttingDown);
            assert_eq!(
                message,
                "its grace period for uploads in progress is over, and `too-slow.bin` was not stored \
                 (1000 of 1048576 bytes had come)"
            );
        }
        other => panic!("expected a shutting_down error, got {other:?}"),
    }
}

/// A small tmpfs, or a bind mount (mounting needs root), unmounted and
/// its mount point removed on drop.
///
/// A disk from [`TestMount::new`] lives in a folder of its own: declare the
/// server after it, so that the server stops first. One mounted inside a
/// server's folder with [`TestMount::mount_at`] may still be in use when it
/// is dropped; it is then detached lazily, so no mount outlives the test.
struct TestMount {
    at: std::path::PathBuf,
    /// The folder a disk from `new` is mounted in, removed after unmounting.
    _home: Option<tempfile::TempDir>,
}

impl TestMount {
    /// A 24 MiB disk in a temporary folder of its own.
    fn new() -> Option<TestMount> {
        let home = tempfile::tempdir().ok()?;
        let mut disk = TestMount::mount_at(&home.path().join("disk"), "24m")?;
        disk._home = Some(home);
        Some(disk)
    }

    /// A disk of `size` (as `mount -o size=` takes it) mounted at `at`.
    fn mount_at(at: &std::path::Path, size: &str) -> Option<TestMount> {
        TestMount::mount(at, &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
    }

    /// Folder `source` mounted again at `at`: the same file system, another
    /// mount.
    fn bind(source: &std::path::Path, at: &std::path::Path) -> Option<TestMount> {
        TestMount::mount(at, &["--bind", source.to_str()?])
    }

    fn mount(at: &std::path::Path, args: &[&str]) -> Option<TestMount> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(args)
            .arg(at)
            .output()
            .ok()?
            .status
            .success();
        ok.then(|| TestMount {
            at: at.to_path_buf(),
            _home: None,
        })
    }

    /// Fills the file system but for about `room` bytes, with a file whose
    /// path is returned.
    fn fill_but(&self, room: usize) -> std::path::PathBuf {
        let gap = self.at.join("gap");
        if room > 0 {
            std::fs::write(&gap, vec![0u8; room]).expect("gap");
        }
        let filler = self.at.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        while f.write_all(&[0u8; 64 * 1024]).is_ok() {}
        while f.write_all(&[0u8; 512]).is_ok() {}
        drop(f);
        if room > 0 {
            std::fs::remove_file(&gap).expect("rm gap");
        }
        filler
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
        let _ = std::fs::remove_dir(&self.at);
    }
}

/// A folder for a server whose uploads go to a [`TestMount`].
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The log is the one thing a server cannot report a failure to. With its
/// stderr on a full disk, logging used to panic the thread that logged: the
/// server could not start, or, once the disk filled up while it ran, the
/// signal thread died at the first Ctrl-C or SIGTERM and the server could
/// then only be stopped by SIGKILL.
#[test]
fn a_log_on_a_full_disk_neither_stops_the_server_nor_its_ctrl_c() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let Some(disk) = TestMount::new() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let root = scratch();
    let log = std::fs::File::create(disk.at.join("server.log")).expect("log file");
    disk.fill_but(0);
    let mut child = Command::new(ferry_e2e::bin_path("ferry-server"))
        .args(["--listen", "127.0.0.1:0", "--dir"])
        .arg(root.path().join("uploads"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn ferry-server");
    // Read aside, so that a server that hangs fails the test, not hangs it.
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let Ok(first) = rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = child.kill();
        panic!("the server neither listened nor exited");
    };
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the server must start with its log on a full disk: {first:?}"))
        .to_string();
    for round in 0..3 {
        let mut c = V1::connect(&addr);
        c.upload(
            round,
            &format!("kept-{round}.txt"),
            b"logged nowhere",
            OnClash::Rename,
        );
        c.expect_stored();
    }
    ferry_e2e::send_signal(child.id(), "TERM");
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > until {
            let _ = child.kill();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "the server must stop on SIGTERM: {status:?}"
    );
    let kept = std::fs::read(root.path().join("uploads/kept-2.txt")).expect("stored");
    assert_eq!(kept, b"logged nowhere");
}

/// Fills the disk while a `size`-byte upload is under way.
fn full_disk_mid_upload(size: usize) {
    let Some(disk) = TestMount::new() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let server = Server::start_in(scratch(), disk.at.join("uploads"), &[]);
    let body = data(size, 4);
    let mut c = V1::connect(&server.addr());
    c.start_file(1, "wont-fit.bin", body.len() as u64);
    c.stream.write_all(&body[..1 << 20]).expect("first part");
    thread::sleep(Duration::from_millis(200));
    // Someone else fills the disk meanwhile.
    let filler = disk.fill_but(0);
    let _ = c.stream.write_all(&body[1 << 20..]);
    c.expect_failed(ErrorCode::NoSpace);
    server.expect_log("not enough space");
    assert!(server.files().is_empty());
    assert!(server.staging_is_empty());
    // Space back, service back.
    std::fs::remove_file(&filler).expect("rm filler");
    let mut c = V1::connect(&server.addr());
    c.upload(1, "fits.bin", b"small", OnClash::Rename);
    assert_eq!(c.expect_stored(), "fits.bin");
    drop(server);
}

#[test]
fn a_full_disk_mid_upload_is_reported_and_leaves_nothing() {
    full_disk_mid_upload(3 << 20);
}

#[test]
fn a_full_disk_mid_big_upload_is_reported_and_leaves_nothing() {
    // Big enough for the writer thread.
    full_disk_mid_upload(20 << 20);
}

/// Small files are held in memory and written out after their trailer:
/// a disk that is full by then fails the first of them, and ends the
/// session like a refusal, with nothing of any of them left behind.
#[test]
fn small_files_that_no_longer_fit_are_refused_and_leave_nothing() {
    let Some(disk) = TestMount::new() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let server = Server::start_in(scratch(), disk.at.join("uploads"), &[]);
    let filler = disk.fill_but(0);
    let mut c = V1::connect(&server.addr());
    // Sent back to back, as a client streaming a folder does.
    for id in 1..=3 {
        c.upload(
            id,
            &format!("small-{id}.bin"),
            &data(8 * 1024, id as u8),
            OnClash::Rename,
        );
    }
    let ack = c.expect_failed(ErrorCode::NoSpace);
    assert_eq!(ack.id, 1);
    // The session ends there: the other two are for the client to resend.
    assert_eq!(c.recv(), None);
    server.expect_log("not enough space");
    assert!(server.files().is_empty(), "{:?}", server.files());
    assert!(server.staging_is_empty());
    std::fs::remove_file(&filler).expect("rm filler");
    let mut c = V1::connect(&server.addr());
    c.upload(1, "fits.bin", b"small", OnClash::Rename);
    assert_eq!(c.expect_stored(), "fits.bin");
}

/// As above, with room for the first file: it is stored and acked before
/// the refusal of the next, as it would be if that one were refused at its
/// header.
#[test]
fn files_before_a_small_file_that_no_longer_fits_are_stored_and_acked_first() {
    let Some(disk) = TestMount::new() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let server = Server::start_in(scratch(), disk.at.join("uploads"), &[]);
    disk.fill_but(16 * 1024);
    let mut c = V1::connect(&server.addr());
    // In one write, so that they reach the committer together.
    let mut stream = upload_bytes(1, "fits.bin", &data(4 * 1024, 1), OnClash::Rename);
    for id in 2..=4 {
        let name = format!("too-much-{id}.bin");
        let body = data(60 * 1024, id as u8);
        stream.extend(upload_bytes(id, &name, &body, OnClash::Rename));
    }
    c.stream.write_all(&stream).expect("send");
    assert_eq!(c.expect_stored(), "fits.bin");
    assert_eq!(c.expect_failed(ErrorCode::NoSpace).id, 2);
    assert_eq!(c.recv(), None);
    server.expect_log("not enough space");
    assert_eq!(server.files(), ["fits.bin"]);
    assert_eq!(server.read("fits.bin"), data(4 * 1024, 1));
    assert!(server.staging_is_empty());
}

/// A file can fail after its body, when it is put in place: the client
/// hears so at once, and the connection ends, even if the client sends
/// nothing more and only waits for answers.
#[test]
fn a_file_that_cannot_be_put_in_place_is_answered_at_once_and_ends_the_session() {
    for size in [4, 200 * 1024] {
        let server = Server::start();
        std::fs::create_dir(server.dir().join("taken")).expect("a folder in the way");
        let mut c = V1::connect(&server.addr());
        c.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let started = Instant::now();
        // A folder sent right behind it gets no answer: it came after the
        // failure, and the client sends it again.
        let mut stream = upload_bytes(1, "taken", &data(size, 7), OnClash::Overwrite);
        let mkdir = ClientMsg::Mkdir {
            id: 2,
            path: "later".into(),
        };
        stream.extend(raw_frame(&to_body(&mkdir)));
        c.stream.write_all(&stream).expect("send");
        let ack = c.expect_failed(ErrorCode::Exists);
        assert_eq!(ack.id, 1);
        // The end of the stream, not the read timeout (nor the server's
        // idle timeout of minutes).
        assert_eq!(c.recv(), None);
        assert!(started.elapsed() < Duration::from_secs(10), "{size} bytes");
        server.expect_log("exists and is not a regular file");
        // The folder may have been made before the session ended.
        let files = server.files();
        assert!(files.contains(&"taken/".to_string()), "{files:?}");
        assert!(
            files.iter().all(|f| f == "taken/" || f == "later/"),
            "{files:?}"
        );
    }
}

#[test]
fn big_uploads_arrive_intact_and_a_big_one_cut_short_leaves_nothing() {
    let server = Server::start();
    let body = data(24 << 20, 11);
    let mut c = V1::connect(&server.addr());
    c.upload(1, "big.bin", &body, OnClash::Rename);
    assert_eq!(c.expect_stored(), "big.bin");
    assert_eq!(server.read("big.bin"), body);

    let mut c = V1::connect(&server.addr());
    c.start_file(2, "cut.bin", body.len() as u64);
    c.stream.write_all(&body[..10 << 20]).expect("part");
    drop(c);
    server.expect_log("client left after 10485760 of 25165824 bytes");
    assert_eq!(server.files(), ["big.bin"]);
}

#[test]
fn leftovers_of_a_crashed_run_are_removed_at_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("uploads");
    let staging = dir.join(ferry_e2e::STAGING);
    std::fs::create_dir_all(&staging).expect("mkdir");
    std::fs::write(staging.join("4242-7.part"), b"half an upload").expect("write");
    let server = Server::start_in(root, dir, &[]);
    server.expect_log("removed 1 incomplete upload(s) left by an earlier run");
    assert!(server.staging_is_empty());
    assert!(server.files().is_empty());
}

#[test]
fn a_burst_of_newcomers_never_overshoots_the_connection_cap() {
    let server = Server::start_with(&["--max-connections", "4"]);
    let idle: Vec<TcpStream> = (0..4).map(|_| connect(&server.addr())).collect();
    thread::sleep(Duration::from_millis(3000));
    // Each of the four idle ones can make room once; the newcomers are not
    // idle long enough to be evicted in turn.
    let welcomed: Vec<V1> = (0..12)
        .filter_map(|_| V1::try_connect(&server.addr()))
        .collect();
    assert_eq!(welcomed.len(), 4, "{}", server.log());
    drop(idle);
}

#[test]
fn earlier_files_are_acked_before_a_long_body_arrives() {
    let server = Server::start();
    let mut c = V1::connect(&server.addr());
    for id in 0..3 {
        c.upload(id, &format!("small{id}.txt"), b"tiny", OnClash::Rename);
    }
    c.start_file(3, "big.bin", 5 << 20);
    c.stream
        .write_all(&[7u8; 1000])
        .expect("start of the big body");
    // The big body is far from complete, yet the three are confirmed.
    for id in 0..3 {
        assert_eq!(c.expect_stored(), format!("small{id}.txt"));
    }
}

#[test]
fn a_body_trickling_below_the_minimum_rate_is_dropped() {
    let server = Server::start_with(&["--body-timeout", "1", "--min-rate", "50K"]);
    let mut c = V1::connect(&server.addr());
    c.start_file(1, "trickle.bin", 1 << 20);
    // 10 KiB/s: never silent for a second, but far below 50 KiB/s.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if c.stream.write_all(&[0u8; 1024]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    server.expect_log("sending slower than the minimum rate");
    assert!(server.files().is_empty());
    // A v1 client is told why, before the connection closes.
    match c.recv() {
        Some(ServerMsg::Error {
            code: ErrorCode::Timeout,
            message,
        }) => assert!(message.contains("minimum rate"), "{message}"),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    // A client at a normal pace is untouched by the rule.
    let mut ok = V1::connect(&server.addr());
    ok.upload(1, "brisk.bin", &data(2 << 20, 1), OnClash::Rename);
    assert_eq!(ok.expect_stored(), "brisk.bin");
}

#[test]
fn uploads_side_by_side_cannot_together_eat_into_the_free_space_floor() {
    let Some(disk) = TestMount::new() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    // 24 MiB disk, 8 MiB to stay free: room for one 10 MiB upload, not two.
    let server = Server::start_in(scratch(), disk.at.join("uploads"), &["--min-free", "8M"]);
    let body = data(10 << 20, 6);
    let mut a = V1::connect(&server.addr());
    a.start_file(1, "first.bin", body.len() as u64);
    a.stream.write_all(&body[..1 << 20]).expect("first starts");
    server.expect_log("path=\"first.bin\"");
    let mut b = V1::connect(&server.addr());
    b.start_file(1, "second.bin", body.len() as u64);
    b.expect_failed(ErrorCode::NoSpace);
    a.stream.write_all(&body[1 << 20..]).expect("first ends");
    a.finish(1, &body);
    assert_eq!(a.expect_stored(), "first.bin");
    assert_eq!(server.files(), ["first.bin"]);
    drop(server);
}

/// Someone mounted another file system inside the upload folder. Files sent
/// there, small ones committed in groups and a big resumable one alike,
/// still arrive whole: the server cannot link across file systems, nor
/// count on one sync of its own for both.
#[test]
fn uploads_into_a_file_system_mounted_inside_the_folder_arrive() {
    let server = Server::start();
    let Some(_disk) = TestMount::mount_at(&server.dir().join("mnt"), "24m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("mnt");
    for i in 0..40 {
        write_file(&tree.join(format!("small/{i:02}.txt")), &data(3000, i));
    }
    let big = data(3 << 20, 7);
    write_file(&tree.join("big.bin"), &big);
    let out = ferry_send(&server.addr(), &[tree.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(server.read("mnt/big.bin"), big);
    for i in 0..40 {
        assert_eq!(server.read(&format!("mnt/small/{i:02}.txt")), data(3000, i));
    }
    assert!(server.staging_is_empty());
}

/// A folder inside the upload folder that is a bind mount of another
/// folder on the same disk: nothing can be linked or renamed into it from
/// the staging folder. Overwrites and big (normally resumable) files sent
/// there still arrive.
#[test]
fn overwrites_and_big_files_arrive_in_a_bind_mount_inside_the_folder() {
    let server = Server::start();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let Some(_bound) = TestMount::bind(elsewhere.path(), &server.dir().join("bound")) else {
        eprintln!("skipped: cannot bind-mount here (needs root)");
        return;
    };
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("bound");
    write_file(&tree.join("notes.txt"), b"first");
    let big = data(3 << 20, 4);
    write_file(&tree.join("big.bin"), &big);
    let send = |clash: &str| {
        let out = ferry_send(
            &server.addr(),
            &["--on-clash", clash, tree.to_str().expect("utf8")],
        );
        assert!(out.status.success(), "{}", all_output(&out));
    };
    send("rename");
    write_file(&tree.join("notes.txt"), b"second");
    send("overwrite");
    assert_eq!(server.read("bound/notes.txt"), b"second");
    assert_eq!(server.read("bound/big.bin"), big);
    assert_eq!(
        server.files(),
        ["bound/", "bound/big.bin", "bound/notes.txt"]
    );
    assert!(server.staging_is_empty());
}

/// Free space is looked up where a file will land. A file too big for a
/// small file system mounted inside the upload folder is refused before its
/// body, as on the folder's own disk, rather than once that one is full.
#[test]
fn a_file_too_big_for_a_mount_inside_the_folder_is_refused_before_its_body() {
    let server = Server::start();
    let Some(_disk) = TestMount::mount_at(&server.dir().join("mnt"), "24m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut c = V1::connect(&server.addr());
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // Nothing of the body is sent: the refusal must come from the header.
    c.start_file(1, "mnt/deeper/huge.bin", 40 << 20);
    c.expect_failed(ErrorCode::NoSpace);
    server.expect_log("not enough space");
    // Not even the folder on its way was made.
    assert_eq!(server.files(), ["mnt/"]);
    // The folder's own disk still takes a file of that size.
    let body = data(40 << 20, 2);
    let mut c = V1::connect(&server.addr());
    c.upload(1, "huge.bin", &body, OnClash::Rename);
    assert_eq!(c.expect_stored(), "huge.bin");
}

/// The other way round: a nearly full upload folder does not turn away a
/// file headed for a roomier file system mounted inside it.
#[test]
fn a_full_folder_does_not_refuse_files_for_a_roomier_mount_inside_it() {
    let Some(outer) = TestMount::new() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let uploads = outer.at.join("uploads");
    let Some(_inner) = TestMount::mount_at(&uploads.join("roomy"), "64m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let server = Server::start_in(scratch(), uploads, &[]);
    let body = data(30 << 20, 5);
    let mut c = V1::connect(&server.addr());
    c.start_file(1, "too-big-here.bin", body.len() as u64);
    c.expect_failed(ErrorCode::NoSpace);
    // `ferry send` asks the server first (the plan), then sends: neither
    // may count the folder's own disk against the mount.
    let src = tempfile::tempdir().expect("tempdir");
    write_file(&src.path().join("roomy/fits.bin"), &body);
    let out = ferry_send(
        &server.addr(),
        &[src.path().join("roomy").to_str().expect("utf8")],
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(server.read("roomy/fits.bin"), body);
}

/// Small files sent before a body that is slow to come are committed and
/// acked while it trickles in: they do not hold open files (and the
/// client's confirmation) until the next file arrives.
#[test]
fn files_before_a_slow_body_are_acked_without_waiting_for_it() {
    let server = Server::start();
    let mut c = V1::connect(&server.addr());
    for id in 0..5 {
        c.upload(
            id,
            &format!("early-{id}.txt"),
            &data(2000, id as u8),
            OnClash::Rename,
        );
    }
    // Under the size that asks for acks before its body; only its first
    // bytes come now.
    let slow = data(256 * 1024, 9);
    c.start_file(5, "slow.bin", slow.len() as u64);
    c.stream.write_all(&slow[..1024]).expect("first bytes");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    for id in 0..5 {
        assert_eq!(c.expect_stored(), format!("early-{id}.txt"));
    }
    c.stream.set_read_timeout(None).expect("no timeout");
    c.stream.write_all(&slow[1024..]).expect("the rest");
    c.finish(5, &slow);
    assert_eq!(c.expect_stored(), "slow.bin");
}
