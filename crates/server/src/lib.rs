//! Ferry's upload server: a headless, threaded TCP server that stores what
//! clients send into one target folder.
//!
//! - [`accept`]: the listener side: one thread per connection, caps, eviction.
//! - [`session`]: one connection's dialogue (tutorial-style or v1), with a
//!   second thread that commits uploads and writes replies (`commit.rs`)
//!   and a writer thread for big bodies (`body.rs`).
//! - [`storage`]: turning received bytes into durable, safely named files.
//!
//! [`Server`] ties them together; the `ferry-server` binary adds flags,
//! logging and signals.

pub mod accept;
mod answer_pace;
pub mod auth;
mod body;
mod commit;
pub mod log;
mod new_folders;
pub mod session;
pub mod storage;
pub mod trailing_hash;
pub mod transport;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use tracing::{info, warn};

use crate::accept::Registry;
use crate::storage::Store;

/// How the server listens, where it stores, and what it tolerates.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub dir: PathBuf,
    pub max_file_size: Option<u64>,
    pub limits: Limits,
    /// How long running uploads may continue after a shutdown request.
    pub grace: Duration,
    /// Permission bits every stored file gets (the sender's never count).
    pub file_mode: u32,
    /// How long the partial of an interrupted upload waits for its sender.
    pub partial_ttl: Duration,
    /// A token v1 clients must give in their hello.
    pub token: Option<String>,
    /// Free space uploads must leave on the disk.
    pub min_free: u64,
    /// Refuse names Windows cannot store.
    pub portable_names: bool,
    /// Where the TLS certificate and key live (made on first start); no
    /// TLS when `None`.
    pub tls_dir: Option<PathBuf>,
    /// Most bytes the whole folder may hold.
    pub quota: Option<u64>,
    /// Take tutorial-style uploads even though a token is required.
    pub allow_legacy: bool,
}

/// Caps and deadlines that keep one client from starving the others.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Silence allowed before a frame starts (a person choosing a file in
    /// a tutorial-style client is silent too, so this is generous).
    pub idle_timeout: Duration,
    /// Time allowed for a started header frame to arrive whole.
    pub header_timeout: Duration,
    /// Silence allowed in the middle of a body, and for writing acks.
    pub body_timeout: Duration,
    /// Open files all sessions together may use for uploads in progress
    /// (the binary sets it to three quarters of the process's limit).
    /// Sessions size their queues by a share of it, and wait when uploads
    /// hold all of it.
    pub open_files: u64,
    /// Connections one address may hold at once (0: no limit).
    pub max_per_address: usize,
    /// Slowest average a body may arrive at, in bytes per second, over
    /// each stretch of `body_timeout` (0: no limit).
    pub min_rate: u64,
    /// Files one connection may send (0: no limit).
    pub max_files_per_connection: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 128,
            idle_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            open_files: 512,
            max_per_address: 0,
            min_rate: 512,
            max_files_per_connection: 0,
        }
    }
}

impl Config {
    pub fn new(listen: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: listen.into(),
            dir: dir.into(),
            max_file_size: None,
            limits: Limits::default(),
            grace: Duration::from_secs(10),
            file_mode: 0o644,
            partial_ttl: storage::PARTIAL_TTL_DEFAULT,
            token: None,
            allow_legacy: false,
            min_free: 0,
            portable_names: false,
            quota: None,
            tls_dir: None,
        }
    }
}

/// State every session shares.
#[derive(Debug)]
pub struct Shared {
    pub store: Store,
    pub limits: Limits,
    pub shutting_down: AtomicBool,
    /// The grace period is over: uploads still running are being dropped,
    /// and nothing should wait on them any longer.
    pub dropping: AtomicBool,
    /// Big uploads that may use a writer thread at once.
    pub writer_slots: body::WriterSlots,
    /// Sessions running now, to share the open-file budget between them.
    pub sessions: AtomicUsize,
    /// Permission bits for stored files.
    pub file_mode: u32,
    /// Who may upload.
    pub auth: auth::Auth,
    /// TLS, when the server was started with it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Shared {
    /// How many files one session may keep open while they wait to be
    /// committed as a group: an equal share of what the process may open.
    pub fn open_files_per_session(&self) -> usize {
        let sessions = self.sessions.load(Ordering::Relaxed).max(1);
        usize::try_from(self.limits.open_files / sessions as u64).unwrap_or(usize::MAX)
    }
}

/// Asks a running server to stop; cheap to clone and send to a signal thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    pub fn request(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        self.0.shutting_down.load(Ordering::SeqCst)
    }
}

/// A bound server, ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    grace: Duration,
    fingerprint: Option<String>,
}

impl Server {
    /// Opens the target folder (cleaning leftovers) and binds the address.
    pub fn bind(config: Config) -> io::Result<Server> {
        let (mut store, cleaned) =
            Store::open(&config.dir, config.max_file_size, config.partial_ttl)?;
        store.keep_free(config.min_free);
        if config.portable_names {
            store.keep_names_portable();
        }
        if let Some(quota) = config.quota {
            let used = store.set_quota(quota)?;
            info!("quota: {used} of {quota} bytes used");
        }
        if cleaned > 0 {
            info!("removed {cleaned} incomplete upload(s) left by an earlier run");
        }
        let (tls, fingerprint) = match &config.tls_dir {
            Some(dir) => {
                let (tls, fingerprint) = transport::load_or_create(dir)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                (Some(tls), Some(fingerprint))
            }
            None => (None, None),
        };
        // std sets SO_REUSEADDR on Unix, so a restart can bind at once.
        let listener = TcpListener::bind(&config.listen)?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                store,
                limits: config.limits,
                shutting_down: AtomicBool::new(false),
                dropping: AtomicBool::new(false),
                writer_slots: body::WriterSlots::for_this_machine(),
                sessions: AtomicUsize::new(0),
                file_mode: config.file_mode & 0o777,
                auth: auth::Auth::new(config.token.as_deref(), config.allow_legacy),
                tls,
            }),
            registry: Arc::default(),
            grace: config.grace,
            fingerprint,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The TLS certificate's fingerprint, for clients to pin.
    pub fn tls_fingerprint(&self) -> Option<&str> {
        self.fingerprint.as_deref()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(Arc::clone(&self.shared))
    }

    /// Serves until a shutdown is requested, then stops gracefully: no new
    /// connections, idle ones closed, running uploads given the grace
    /// period, and no incomplete upload left behind.
    pub fn run(self) -> io::Result<()> {
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        // Partials are looked at often enough that none outlives its TTL
        // by more than a quarter of it (or ten minutes).
        let expire_every = (self.shared.store.partial_ttl() / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(600));
        let mut expired_at = Instant::now();
        while !self.shared.shutting_down.load(Ordering::SeqCst) {
            if expired_at.elapsed() >= expire_every {
                expired_at = Instant::now();
                match self.shared.store.expire_partials() {
                    0 => {}
                    n => info!("removed {n} partial upload(s) kept longer than --partial-ttl"),
                }
            }
            let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&tick)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            loop {
                match self.listener.accept() {
                    Ok((stream, peer)) => accept::admit(stream, peer, &self.shared, &self.registry),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Out of file descriptors, most likely: back off
                        // instead of spinning.
                        warn!("accept failed: {e}");
                        thread::sleep(Duration::from_millis(50));
                        break;
                    }
                }
            }
        }
        // Stop listening first, so a restart can bind while we drain.
        let Server {
            listener,
            shared,
            registry,
            grace,
            ..
        } = self;
        drop(listener);
        stop(&shared, &registry, grace);
        Ok(())
    }
}

/// How long sessions cut at the end of the grace period have to tell their
/// clients why before they are closed outright. A session lingers up to
/// two seconds after its last word, so that what its client still sends
/// does not reset the connection before the word is read.
const SAY_WHY_TIME: Duration = Duration::from_secs(3);

fn wait_for_sessions(registry: &Registry, most: Duration) {
    let deadline = Instant::now() + most;
    while !registry.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

fn stop(shared: &Shared, registry: &Registry, grace: Duration) {
    let running = registry.len();
    info!("shutting down: {running} connection(s) open, up to {grace:?} for uploads in progress");
    let deadline = Instant::now() + grace;
    while !registry.is_empty() && Instant::now() < deadline {
        registry.close_idle();
        thread::sleep(Duration::from_millis(20));
    }
    if !registry.is_empty() {
        warn!(
            "grace period over: dropping {} unfinished upload(s)",
            registry.len()
        );
        shared.dropping.store(true, Ordering::SeqCst);
        // Reads first, so that each session can still write its client
        // why; then, for any that did not leave, everything.
        registry.close_reads();
        wait_for_sessions(registry, SAY_WHY_TIME);
        if !registry.is_empty() {
            registry.close_all();
            wait_for_sessions(registry, Duration::from_secs(2));
        }
    }
    match shared.store.clean_staging() {
        Ok(0) => {}
        Ok(n) => info!("removed {n} incomplete upload(s)"),
        Err(e) => warn!("cannot clean the staging folder: {e}"),
    }
    info!("stopped");
}
