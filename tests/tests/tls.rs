//! Encryption: the server makes a certificate on first start and prints
//! its fingerprint; the client pins it on first use, refuses a changed one
//! loudly, or takes a fingerprint explicitly. Plain TCP stays for this
//! machine and for tutorial clients.

use std::path::Path;
use std::process::{Command, Output};

use ferry_e2e::{
    Server, all_output, bin_path, ferry_command, source_file, tutorial_send, tutorial_upload,
};

/// `ferry send` with its state (known servers) kept in `state`.
fn send(state: &Path, addr: &str, extra: &[&str], file: &Path) -> Output {
    ferry_command(state)
        .args(["send", "--to", addr])
        .args(extra)
        .arg(file)
        .output()
        .expect("run ferry")
}

fn tls_server(tls_dir: &Path) -> Server {
    Server::start_with(&["--tls", "--tls-dir", tls_dir.to_str().expect("utf8")])
}

/// The fingerprint the server logged at start.
fn fingerprint(server: &Server) -> String {
    server.expect_log("TLS certificate fingerprint: ");
    let log = server.log();
    let at = log
        .find("fingerprint: sha256:")
        .expect("fingerprint in log")
        + "fingerprint: ".len();
    log[at..at + 7 + 64].to_string()
}

#[test]
fn first_use_pins_the_certificate_and_a_changed_one_is_refused() {
    let keys = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let (_src, file) = source_file("over-tls.txt", b"private");

    let server = tls_server(&keys.path().join("tls"));
    let fp = fingerprint(&server);
    let out = send(state.path(), &server.addr(), &["--tls"], &file);
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(server.read("over-tls.txt"), b"private");
    let known = std::fs::read_to_string(state.path().join("ferry/known_servers")).expect("pinned");
    assert!(
        known.contains(&format!("{} {fp}", server.addr())),
        "{known}"
    );
    // The user is shown what was trusted, to compare with the server's.
    let first = format!(
        "ferry: trusted {} on first use: its certificate is {fp}; check that ferry-server \
         printed the same when it started",
        server.addr()
    );
    assert_eq!(
        all_output(&out).matches(&first).count(),
        1,
        "{}",
        all_output(&out)
    );
    // Once, the first time only.
    let out = send(state.path(), &server.addr(), &["--tls"], &file);
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        !all_output(&out).contains("on first use"),
        "{}",
        all_output(&out)
    );

    // Same address, new certificate: refused, nothing sent.
    let addr = server.addr();
    let (root, dir) = server.into_root();
    let new_keys = tempfile::tempdir().expect("tempdir");
    let tls_dir = new_keys.path().join("tls");
    let server = Server::start_at(
        &addr,
        root,
        dir,
        &["--tls", "--tls-dir", tls_dir.to_str().expect("utf8")],
    );
    let out = send(state.path(), &addr, &["--tls"], &file);
    assert!(!out.status.success());
    let said = all_output(&out);
    assert!(
        said.contains("THE SERVER'S CERTIFICATE IS NOT THE ONE EXPECTED")
            && !said.contains("unexpected error")
            && said.contains("the server made a new certificate")
            && said.contains("remove its line from")
            && said.contains("ferry/known_servers"),
        "{said}"
    );
    assert_eq!(
        server.files(),
        ["over-tls (1).txt", "over-tls.txt"],
        "nothing new arrived"
    );
}

#[test]
fn an_explicit_fingerprint_must_match() {
    let keys = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let (_src, file) = source_file("pinned.txt", b"pinned");
    let server = tls_server(&keys.path().join("tls"));
    let fp = fingerprint(&server);

    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = send(
        state.path(),
        &server.addr(),
        &["--fingerprint", &wrong],
        &file,
    );
    assert!(!out.status.success());
    assert!(server.files().is_empty());
    // Nothing was remembered, so there is no line to remove: the way out
    // is the fingerprint itself.
    let said = all_output(&out);
    assert!(
        said.contains("the fingerprint given is not this server's")
            && said.contains(&format!("If the server printed {fp} at start")),
        "{said}"
    );
    assert!(!said.contains("known_servers"), "{said}");

    // As people copy it: upper case, with colons.
    let typed: String = fp[7..]
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let out = send(
        state.path(),
        &server.addr(),
        &["--fingerprint", &typed],
        &file,
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(server.read("pinned.txt"), b"pinned");
    // The certificate and key were kept for the next start; the key private.
    let key = keys.path().join("tls/key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(key).expect("key").permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn plain_tcp_stays_for_this_machine_and_tutorial_clients() {
    let keys = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let server = tls_server(&keys.path().join("tls"));
    let (_src, file) = source_file("plain.txt", b"plain");
    let out = send(state.path(), &server.addr(), &[], &file);
    assert!(out.status.success(), "{}", all_output(&out));
    tutorial_send(&server.addr(), "legacy.txt", b"old");
    server.expect_log("name=\"legacy.txt\"");
    assert_eq!(server.read("plain.txt"), b"plain");
}

/// A tutorial client over TLS that hangs up after its last file without
/// a close_notify (as Python's ssl often does) ended cleanly: its file is
/// stored, and nothing is logged as dropped.
#[test]
fn a_tutorial_client_over_tls_may_hang_up_without_close_notify() {
    use std::io::Write;
    use std::net::Shutdown;
    use std::time::Duration;

    use ferry_client::transfer::link::{Link, Trust};

    let keys = tempfile::tempdir().expect("tempdir");
    let server = tls_server(&keys.path().join("tls"));
    let trust = Trust::Fingerprint(fingerprint(&server));
    let link = Link::open(&server.addr(), Duration::from_secs(5), Some(&trust)).expect("tls");
    let Link {
        socket,
        mut reader,
        mut writer,
        ..
    } = link;
    // The handshake's answers come in on the reading side; a tutorial
    // client reads nothing else.
    let reading = std::thread::spawn(move || {
        let _ = std::io::Read::read(&mut reader, &mut [0u8; 64]);
    });
    writer
        .write_all(&tutorial_upload("over-tls.txt", b"sealed"))
        .expect("upload");
    writer.flush().expect("flush");
    server.expect_log("name=\"over-tls.txt\"");
    socket.shutdown(Shutdown::Both).expect("hang up");
    drop(writer);
    reading.join().expect("reader");
    server.expect_log("TLS peer closed without close_notify, between frames");
    assert_eq!(server.read("over-tls.txt"), b"sealed");
    assert!(
        !server.log().contains("connection dropped"),
        "{}",
        server.log()
    );
}

#[test]
fn a_tls_client_at_a_plain_server_is_told_why() {
    let server = Server::start();
    let state = tempfile::tempdir().expect("tempdir");
    let (_src, file) = source_file("x.txt", b"x");
    let out = send(state.path(), &server.addr(), &["--tls"], &file);
    assert!(!out.status.success());
    server.expect_log("a TLS client, but this server was started without --tls");
    assert!(server.files().is_empty());
}

#[test]
fn a_ca_signed_certificate_is_trusted_through_the_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    // A CA, and a server certificate for 127.0.0.1 signed by it, placed
    // where the server looks for its certificate.
    let keys = tempfile::tempdir().expect("tempdir");
    let tls_dir = keys.path().join("tls");
    std::fs::create_dir_all(&tls_dir).expect("mkdir");
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    std::fs::write(tls_dir.join("cert.pem"), server_cert.pem()).expect("write cert");
    std::fs::write(tls_dir.join("key.pem"), server_key.serialize_pem()).expect("write key");
    let ca_file = keys.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("write ca");

    let server = tls_server(&tls_dir);
    let state = tempfile::tempdir().expect("tempdir");
    let (_src, file) = source_file("ca.txt", b"via ca");
    let out = send(
        state.path(),
        &server.addr(),
        &["--ca", ca_file.to_str().expect("utf8")],
        &file,
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(server.read("ca.txt"), b"via ca");

    // A different CA does not vouch for it.
    let other_key = KeyPair::generate().expect("key");
    let mut other = CertificateParams::new(Vec::<String>::new()).expect("params");
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_ca = keys.path().join("other-ca.pem");
    std::fs::write(
        &other_ca,
        other.self_signed(&other_key).expect("cert").pem(),
    )
    .expect("write");
    let out = send(
        state.path(),
        &server.addr(),
        &["--ca", other_ca.to_str().expect("utf8")],
        &file,
    );
    assert!(!out.status.success());
    assert_eq!(server.files(), ["ca.txt"]);
}

#[test]
fn real_sized_transfers_over_tls_arrive_intact() {
    let keys = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let server = tls_server(&keys.path().join("tls"));
    let src = tempfile::tempdir().expect("tempdir");
    // A big file (writer thread on the server), and a folder of many small
    // files (acks flowing back while bodies go out, on one TLS session).
    let big = src.path().join("big.bin");
    std::fs::write(&big, ferry_e2e::data(24 << 20, 3)).expect("write");
    let tree = src.path().join("many");
    std::fs::create_dir(&tree).expect("mkdir");
    for i in 0..300 {
        std::fs::write(
            tree.join(format!("f{i}.txt")),
            ferry_e2e::data(3000 + i, i as u8),
        )
        .expect("write");
    }
    let out = send(state.path(), &server.addr(), &["--tls"], &big);
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(server.read("big.bin"), ferry_e2e::data(24 << 20, 3));
    let out = send(state.path(), &server.addr(), &["--tls"], &tree);
    assert!(out.status.success(), "{}", all_output(&out));
    for i in 0..300 {
        assert_eq!(
            server.read(&format!("many/f{i}.txt")),
            ferry_e2e::data(3000 + i, i as u8)
        );
    }
}

#[test]
fn a_token_over_plain_tcp_to_another_machine_is_refused_before_it_leaves() {
    // The server side: refuses to start that way (never binds).
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin_path("ferry-server"))
        .args(["--listen", "0.0.0.0:0", "--token", "t", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --tls"));
}

/// A server at its connection limit closes a newcomer unanswered; over TLS
/// that reads as an unexpected end rather than a reset, and the client
/// still tries again a moment later (as over plain TCP, see limits.rs).
#[test]
fn sends_in_a_row_fit_a_one_connection_limit_over_tls() {
    let keys = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let tls_dir = keys.path().join("tls");
    let server = Server::start_with(&[
        "--tls",
        "--tls-dir",
        tls_dir.to_str().expect("utf8"),
        "--max-per-address",
        "1",
    ]);
    let src = tempfile::tempdir().expect("tempdir");
    let tree = src.path().join("tree");
    for i in 0..20 {
        ferry_e2e::write_file(&tree.join(format!("a-{i:02}.txt")), &[i; 2000]);
    }
    ferry_e2e::write_file(&tree.join("big.bin"), &ferry_e2e::data(2 << 20, 7));
    for round in 0..6 {
        let out = send(
            state.path(),
            &server.addr(),
            &["--tls", "--on-clash", "overwrite"],
            &tree,
        );
        assert!(out.status.success(), "round {round}: {}", all_output(&out));
    }
    assert_eq!(server.read("tree/big.bin"), ferry_e2e::data(2 << 20, 7));
}
