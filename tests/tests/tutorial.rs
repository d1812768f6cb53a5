//! Clients written exactly like the socket tutorial's keep working: a 4-byte
//! `struct.pack('i', n)` length, a `json.dumps` header, the raw bytes,
//! several files on one connection, then a close without reading anything.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use ferry_e2e::{Server, connect, data, tutorial_upload};

#[test]
fn several_files_on_one_connection_then_close_without_reading() {
    let server = Server::start();
    let files = [
        ("movie.mp4", data(3 * 1024 * 1024 + 17, 1)),
        ("notes.txt", b"line one\nline two\n".to_vec()),
        ("empty.bin", Vec::new()),
    ];
    let mut stream = connect(&server.addr());
    for (name, bytes) in &files {
        stream
            .write_all(&tutorial_upload(name, bytes))
            .expect("send");
    }
    // The tutorial client just closes; it never reads.
    stream.shutdown(Shutdown::Write).expect("shutdown");
    // The server must not have written a single byte back.
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read to close");
    assert!(
        reply.is_empty(),
        "server wrote {} bytes to a legacy client",
        reply.len()
    );

    server.expect_log("name=\"empty.bin\"");
    for (name, bytes) in &files {
        assert_eq!(&server.read(name), bytes, "{name}");
    }
    assert!(server.staging_is_empty());
}

#[test]
fn sticky_and_split_packets_do_not_confuse_the_server() {
    let server = Server::start();
    let mut stream = connect(&server.addr());
    stream.set_nodelay(true).expect("nodelay");
    // Two small uploads in one write: the second header sticks to the end
    // of the first body.
    let mut both = tutorial_upload("a.txt", b"first");
    both.extend(tutorial_upload("b.txt", b"second"));
    stream.write_all(&both).expect("send");
    // A third, dribbled out a byte at a time.
    for byte in tutorial_upload("c.txt", b"third, slowly") {
        stream.write_all(&[byte]).expect("send byte");
        thread::sleep(Duration::from_millis(1));
    }
    drop(stream);
    server.expect_log("name=\"c.txt\"");
    assert_eq!(server.read("a.txt"), b"first");
    assert_eq!(server.read("b.txt"), b"second");
    assert_eq!(server.read("c.txt"), b"third, slowly");
}

#[test]
fn a_repeated_name_is_kept_beside_the_first() {
    let server = Server::start();
    let mut stream = connect(&server.addr());
    stream
        .write_all(&tutorial_upload("report.pdf", b"v1"))
        .expect("send");
    stream
        .write_all(&tutorial_upload("report.pdf", b"v2"))
        .expect("send");
    drop(stream);
    server.expect_log("name=\"report (1).pdf\"");
    assert_eq!(server.read("report.pdf"), b"v1");
    assert_eq!(server.read("report (1).pdf"), b"v2");
}

#[test]
fn the_real_python_tutorial_client_works_if_python_is_here() {
    let Ok(status) = std::process::Command::new("python3")
        .arg("--version")
        .output()
    else {
        eprintln!("python3 not installed; the byte-level tests above cover the same stream");
        return;
    };
    assert!(status.status.success());
    let server = Server::start();
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("clip.mp4"), data(200_000, 9)).expect("write");
    // The tutorial's client loop, minus input(): pick the file, send the
    // header and the bytes line by line with send(), as it does.
    let script = r#"
import os, socket, json, struct, sys
port, data_path = int(sys.argv[1]), sys.argv[2]
client = socket.socket()
client.connect(('127.0.0.1', port))
movie_name = os.listdir(data_path)[0]
movie_path = os.path.join(data_path, movie_name)
data_dict = {'size': os.path.getsize(movie_path), 'filename': movie_name}
data_josn = json.dumps(data_dict)
data_head = struct.pack('i', len(data_josn))
client.send(data_head)
client.send(data_josn.encode('utf8'))
with open(movie_path, 'rb') as f:
    for line in f:
        client.sendall(line)
client.close()
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(server.port().to_string())
        .arg(src.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.expect_log("name=\"clip.mp4\"");
    assert_eq!(server.read("clip.mp4"), data(200_000, 9));
}

#[test]
fn files_finished_before_a_bad_upload_are_kept() {
    let server = Server::start();
    let mut stream = connect(&server.addr());
    // Five good files and a hostile one, all in one write: the connection
    // is dropped at the sixth, the five stay.
    let mut bytes = Vec::new();
    for i in 0..5 {
        bytes.extend(tutorial_upload(&format!("good{i}.txt"), b"fine"));
    }
    bytes.extend(tutorial_upload("../evil.txt", b"evil"));
    stream.write_all(&bytes).expect("send");
    let _ = stream.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    server.expect_log("refused `../evil.txt`");
    server.expect_log("name=\"good4.txt\"");
    for i in 0..5 {
        assert_eq!(server.read(&format!("good{i}.txt")), b"fine");
    }
}

/// A header of exactly 790 bytes starts with the length prefix 0x16 0x03
/// 0x00 0x00, the first two bytes of a TLS record: it is still a Ferry
/// frame, and the file is stored.
#[test]
fn a_header_whose_length_starts_like_tls_is_still_a_frame() {
    let server = Server::start();
    let part = |c: char| c.to_string().repeat(190);
    let name = [part('a'), part('b'), part('c'), part('d')].join("/");
    let upload = tutorial_upload(&name, b"790");
    assert_eq!(&upload[..4], &[0x16, 0x03, 0x00, 0x00]);
    let mut stream = connect(&server.addr());
    stream.write_all(&upload).expect("send");
    drop(stream);
    server.expect_log("stored");
    assert_eq!(server.read(&name), b"790");
}
