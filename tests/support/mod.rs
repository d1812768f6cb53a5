//! Helpers for Ferry's end-to-end tests: find the real binaries, run a real
//! `ferry-server` on 127.0.0.1 port 0 with its own temporary folder, and
//! speak raw bytes to it the way other clients do.
//!
//! The binaries are the ones `cargo test --workspace` builds into the
//! target folder (the server and client crates have integration tests of
//! their own, which makes cargo build them before any test runs).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ferry_proto::{
    Ack, ClientMsg, ErrorCode, FileHeader, OnClash, Outcome, ServerMsg, read_frame, to_body,
    write_frame,
};

/// The staging folder the server keeps inside its target folder.
pub const STAGING: &str = ".ferry-staging";

/// Path of a binary built from this workspace (`ferry` or `ferry-server`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// A running `ferry-server`, stopped (and its folder removed) on drop.
pub struct Server {
    child: Option<Child>,
    addr: String,
    root: tempfile::TempDir,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts a server with default settings on a fresh temporary folder.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra command-line flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("uploads");
        Server::start_in(root, dir, extra)
    }

    /// Starts a server storing into `dir`, which lives under `root`.
    pub fn start_in(root: tempfile::TempDir, dir: PathBuf, extra: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0", root, dir, extra)
    }

    /// Starts a server on a given address (to test restarts on one port).
    pub fn start_at(listen: &str, root: tempfile::TempDir, dir: PathBuf, extra: &[&str]) -> Server {
        let mut cmd = Command::new(bin_path("ferry-server"));
        cmd.arg("--listen")
            .arg(listen)
            .arg("--dir")
            .arg(&dir)
            .args(extra);
        Server::launch(cmd, root, dir)
    }

    /// Starts a server whose process may open at most `files` files (its
    /// soft and hard limit), to see it live within them.
    pub fn start_with_open_file_limit(files: u32, extra: &[&str]) -> Server {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("uploads");
        // The shell lowers the limit, then becomes the server.
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
            .arg(bin_path("ferry-server"))
            .args(["--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .args(extra);
        Server::launch(cmd, root, dir)
    }

    /// Runs `cmd` (a ferry-server), waits for its `listening on` line and
    /// collects its log.
    fn launch(mut cmd: Command, root: tempfile::TempDir, dir: PathBuf) -> Server {
        let mut child = cmd
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferry-server");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read the listening line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "server did not print `listening on`: {first:?}\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                )
            })
            .to_string();
        Server {
            child: Some(child),
            addr,
            root,
            dir,
            log,
        }
    }

    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// The folder uploads land in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The temporary folder holding the upload folder (room for things
    /// "outside" it).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log if not.
    pub fn expect_log(&self, needle: &str) {
        let until = Instant::now() + Duration::from_secs(15);
        while Instant::now() < until {
            if self.log().contains(needle) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("server log never said {needle:?}:\n{}", self.log());
    }

    /// Visible files under the upload folder, as sorted `/`-paths.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect(&self.dir, "", &mut out);
        out.sort();
        out
    }

    /// Reads a stored file.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Whether no temporary upload is left in the staging folder.
    pub fn staging_is_empty(&self) -> bool {
        std::fs::read_dir(self.dir.join(STAGING))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }

    /// Makes `rel` inside the upload folder a symlink to an empty folder
    /// outside it, so that anything sent under `rel` is refused; returns
    /// that outside folder, which must stay empty.
    pub fn block_with_symlink(&self, rel: &str) -> PathBuf {
        let link = self.dir.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let outside = self.root().join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, &link).expect("symlink");
        outside
    }

    /// Sends a signal to the server.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the server to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "server did not exit:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes the temporary folder back, for a restart in the same place.
    pub fn into_root(mut self) -> (tempfile::TempDir, PathBuf) {
        self.stop();
        let dir = self.dir.clone();
        let root = std::mem::replace(&mut self.root, tempfile::tempdir().expect("tempdir"));
        (root, dir)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.map_while(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if prefix.is_empty() && name == STAGING {
            continue;
        }
        let rel = format!("{prefix}{name}");
        match entry.file_type() {
            Ok(t) if t.is_dir() => {
                out.push(format!("{rel}/"));
                collect(&entry.path(), &format!("{rel}/"), out);
            }
            _ => out.push(rel),
        }
    }
}

/// A `ferry` client command whose state (the retry list, known servers)
/// lives in `state`, never in the home folder of whoever runs the tests.
pub fn ferry_command(state: &Path) -> Command {
    with_state(Command::new(bin_path("ferry")), state)
}

/// A `ferry` client command, as [`ferry_command`], that file permissions
/// hold for even when the tests run as root: it is then started without
/// the capabilities that let root read any file (with `setpriv`, from
/// util-linux).
pub fn ferry_command_held_to_permissions(state: &Path) -> Command {
    let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return ferry_command(state);
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set=-dac_override,-dac_read_search", "--"])
        .arg(bin_path("ferry"));
    with_state(cmd, state)
}

fn with_state(mut cmd: Command, state: &Path) -> Command {
    cmd.env_remove("FERRY_SERVER")
        .env("XDG_STATE_HOME", state)
        .stdin(Stdio::null());
    cmd
}

/// Sends `signal` (`INT`, `TERM`, ...) to process `pid`, as `kill` does.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Runs `ferry send --to addr` followed by `args`, with a state folder of
/// its own, and waits for it.
pub fn ferry_send(addr: &str, args: &[&str]) -> Output {
    let state = tempfile::tempdir().expect("state dir");
    ferry_send_in(state.path(), addr, args)
}

/// Runs `ferry send --to addr` followed by `args`, with its state (the
/// retry list) in `state`, and waits for it.
pub fn ferry_send_in(state: &Path, addr: &str, args: &[&str]) -> Output {
    ferry_command(state)
        .args(["send", "--to", addr])
        .args(args)
        .output()
        .expect("run ferry")
}

/// Connects to the server over loopback. Reads give up after a minute, so
/// a server that never answers fails the test instead of hanging it; the
/// slowest answer waited for (a resume check reading 6 GiB) can take 20 s
/// on two busy cores.
pub fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    stream
}

/// The bytes the tutorial's Python client writes for one file:
/// `struct.pack('i', len(header))`, then `json.dumps({...})`, then the data.
pub fn tutorial_upload(name: &str, data: &[u8]) -> Vec<u8> {
    let header = format!(
        "{{\"size\": {}, \"filename\": {}}}",
        data.len(),
        serde_json::to_string(name).expect("json string")
    );
    let mut out = (header.len() as i32).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Uploads one file the tutorial's way on a fresh connection, then closes
/// it without reading, as the tutorial's client does.
pub fn tutorial_send(addr: &str, name: &str, data: &[u8]) {
    let mut s = connect(addr);
    s.write_all(&tutorial_upload(name, data)).expect("send");
}

/// A raw length-prefixed frame around `body`.
/// One whole v1 file as it goes on the wire: header, body, and a trailer
/// with the right digest. Several in one write arrive together.
pub fn upload_bytes(id: u64, path: &str, data: &[u8], on_clash: OnClash) -> Vec<u8> {
    let header = ClientMsg::File(FileHeader {
        id,
        path: path.into(),
        size: data.len() as u64,
        on_clash,
        ..Default::default()
    });
    let trailer = ClientMsg::Done {
        id,
        blake3: blake3::hash(data).to_hex().to_string(),
    };
    let mut out = raw_frame(&to_body(&header));
    out.extend_from_slice(data);
    out.extend_from_slice(&raw_frame(&to_body(&trailer)));
    out
}

pub fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Waits until the server closes `stream`; returns what it sent before.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

/// A minimal v1 client, for tests that need to misbehave on purpose.
pub struct V1 {
    pub stream: TcpStream,
}

impl V1 {
    /// Connects and tries the handshake; `None` if the server closed
    /// instead of welcoming.
    pub fn try_connect(addr: &str) -> Option<V1> {
        let mut v1 = V1 {
            stream: connect(addr),
        };
        let hello = ClientMsg::Hello {
            version: 1,
            client: "e2e".into(),
            token: None,
        };
        write_frame(&mut v1.stream, &to_body(&hello)).ok()?;
        match v1.recv() {
            Some(ServerMsg::Welcome { .. }) => Some(v1),
            _ => None,
        }
    }

    /// Connects and completes the handshake.
    pub fn connect(addr: &str) -> V1 {
        let mut v1 = V1 {
            stream: connect(addr),
        };
        v1.send(&ClientMsg::Hello {
            version: 1,
            client: "e2e".into(),
            token: None,
        });
        match v1.recv() {
            Some(ServerMsg::Welcome { .. }) => v1,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub fn send(&mut self, msg: &ClientMsg) {
        write_frame(&mut self.stream, &to_body(msg)).expect("send frame");
    }

    pub fn recv(&mut self) -> Option<ServerMsg> {
        let body = read_frame(&mut self.stream).ok()??;
        Some(ServerMsg::parse(&body).expect("server message parses"))
    }

    /// Sends one whole file: header, body, trailer with the right digest.
    pub fn upload(&mut self, id: u64, path: &str, data: &[u8], on_clash: OnClash) {
        let bytes = upload_bytes(id, path, data, on_clash);
        self.stream.write_all(&bytes).expect("upload");
    }

    /// Announces a file of `size` bytes (renamed on a clash) and sends no
    /// body: the test writes it, or part of it, to `stream` itself.
    pub fn start_file(&mut self, id: u64, path: &str, size: u64) {
        self.send(&ClientMsg::File(FileHeader {
            id,
            path: path.into(),
            size,
            on_clash: OnClash::Rename,
            ..Default::default()
        }));
    }

    /// Sends the trailer of file `id` with the right digest of `data`.
    pub fn finish(&mut self, id: u64, data: &[u8]) {
        self.send(&ClientMsg::Done {
            id,
            blake3: blake3::hash(data).to_hex().to_string(),
        });
    }

    /// Waits for the next ack, which must say the file was stored;
    /// returns the name it was stored as.
    pub fn expect_stored(&mut self) -> String {
        match self.recv() {
            Some(ServerMsg::Ack(ack)) => match ack.outcome {
                Outcome::Stored { stored_as, .. } => stored_as,
                other => panic!("expected stored, got {other:?}"),
            },
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Waits for the next ack, which must refuse the file with `code`;
    /// returns it for any further checks.
    pub fn expect_failed(&mut self, code: ErrorCode) -> Ack {
        match self.recv() {
            Some(ServerMsg::Ack(ack)) => {
                assert!(
                    matches!(&ack.outcome, Outcome::Failed { code: got, .. } if *got == code),
                    "expected {code:?}, got {ack:?}"
                );
                ack
            }
            other => panic!("expected a {code:?} ack, got {other:?}"),
        }
    }
}

/// Bytes a program printed, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Everything a program printed, stdout then stderr.
pub fn all_output(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// Writes a file, making its folders first.
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, bytes).expect("write");
}

/// A file to send, alone in a temporary folder that lasts as long as the
/// returned handle.
pub fn source_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let src = tempfile::tempdir().expect("tempdir");
    let file = src.path().join(name);
    write_file(&file, bytes);
    (src, file)
}

/// Deterministic test data of `len` bytes.
pub fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}
