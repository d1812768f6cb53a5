//! The connection to a server: a plain socket, or TLS over it, with the
//! server's certificate checked the way SSH checks host keys.
//!
//! Trust comes from one of three places: a fingerprint given on the command
//! line, a CA certificate, or the first connection (the fingerprint seen
//! then is kept in `known_servers` in the state folder, and a different one
//! later is refused loudly: either the server made a new certificate or
//! someone is in the middle).

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::duplex::{self, TlsReader, TlsWriter};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the server's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Pin what the first connection shows (kept in `known_servers`).
    FirstUse,
    /// Exactly this fingerprint (`sha256:...`).
    Fingerprint(String),
    /// Certificates signed by this CA (a PEM file).
    Ca(PathBuf),
}

/// A server this process began to trust on first use. Pinning is worth
/// something only if a person compares the fingerprint with the one the
/// server printed when it started, so each is shown to the user once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstTrusted {
    pub addr: String,
    pub fingerprint: String,
}

impl FirstTrusted {
    /// What the user is told.
    pub fn describe(&self) -> String {
        format!(
            "trusted {} on first use: its certificate is {}; check that ferry-server \
             printed the same when it started",
            self.addr, self.fingerprint
        )
    }
}

/// Servers trusted on first use and not yet shown (see [`take_first_trusted`]).
static FIRST_TRUSTED: Mutex<Vec<FirstTrusted>> = Mutex::new(Vec::new());

/// The servers trusted on first use since the last call. Connections are
/// made on several threads (the picker's probe, a plan, a send), so they
/// are collected here for whoever talks to the user to show.
pub fn take_first_trusted() -> Vec<FirstTrusted> {
    std::mem::take(&mut *FIRST_TRUSTED.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The reading side.
pub enum LinkReader {
    Plain(TcpStream),
    Tls(TlsReader),
}

/// The writing side.
pub enum LinkWriter {
    Plain(TcpStream),
    Tls(TlsWriter),
}

/// An open connection.
pub struct Link {
    pub socket: TcpStream,
    pub reader: LinkReader,
    pub writer: LinkWriter,
    /// Set for a TLS connection trusted on first use: the fingerprint to
    /// remember once the handshake has gone through.
    first_use: Option<(String, Arc<Pin>)>,
}

impl Read for LinkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LinkReader::Plain(s) => s.read(buf),
            LinkReader::Tls(t) => t.read(buf),
        }
    }
}

impl Write for LinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LinkWriter::Plain(s) => s.write(buf),
            LinkWriter::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LinkWriter::Plain(s) => s.flush(),
            LinkWriter::Tls(t) => t.flush(),
        }
    }
}

impl LinkWriter {
    /// Says "that is all" (close_notify over TLS), then closes the sending
    /// side; answers still arrive on the reading side.
    pub fn close(&mut self) {
        match self {
            LinkWriter::Plain(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            LinkWriter::Tls(t) => {
                let _ = t.close();
            }
        }
    }
}

impl Link {
    /// Connects to `addr`, over TLS when `tls` says how to trust it.
    pub fn open(addr: &str, timeout: Duration, tls: Option<&Trust>) -> Result<Link, String> {
        let socket = connect(addr, timeout)?;
        let Some(trust) = tls else {
            let clone = |s: &TcpStream| s.try_clone().map_err(|e| e.to_string());
            return Ok(Link {
                reader: LinkReader::Plain(clone(&socket)?),
                writer: LinkWriter::Plain(clone(&socket)?),
                socket,
                first_use: None,
            });
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut first_use = None;
        let verifier: Arc<dyn ServerCertVerifier> = match trust {
            Trust::Ca(path) => ca_verifier(path, &provider)?,
            Trust::Fingerprint(fp) => Arc::new(Pin::new(Some(fp.clone()), true, &provider)),
            Trust::FirstUse => {
                // Trust on first use is only worth something if the first
                // use is remembered.
                if known_servers_path().is_none() {
                    return Err(
                        "no HOME or XDG_STATE_HOME to remember servers in: give --fingerprint"
                            .into(),
                    );
                }
                let known = known_fingerprint(addr);
                let pin = Arc::new(Pin::new(known.clone(), false, &provider));
                if known.is_none() {
                    first_use = Some((addr.to_string(), Arc::clone(&pin)));
                }
                pin
            }
        };
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let name =
            ServerName::try_from(host_of(addr).to_string()).map_err(|e| format!("{addr}: {e}"))?;
        let session = rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| format!("cannot start TLS: {e}"))?;
        let (reader, writer) = duplex::split(session, &socket).map_err(|e| describe_tls(&e))?;
        Ok(Link {
            socket,
            reader: LinkReader::Tls(reader),
            writer: LinkWriter::Tls(writer),
            first_use,
        })
    }

    /// After a successful handshake: remembers a server trusted on first
    /// use, so a changed certificate is noticed next time.
    pub fn remember_server(&mut self) {
        let Some((addr, pin)) = self.first_use.take() else {
            return;
        };
        let Some(fp) = pin.seen() else {
            return;
        };
        match remember_fingerprint(&addr, &fp) {
            Ok(()) => FIRST_TRUSTED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(FirstTrusted {
                    addr,
                    fingerprint: fp,
                }),
            // Not `eprintln!`, which panics when stderr is gone: a
            // warning that cannot be shown must not stop a send.
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "ferry: cannot remember {addr}'s certificate: {e}"
                );
            }
        }
    }
}

/// Opens a TCP connection, trying each address the name resolves to.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?;
    let mut last = format!("{addr} resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(stream) => {
                // Headers and acks are small and latency-bound; large bodies
                // go out in full buffers anyway.
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(super::acks::ACK_POLL));
                let _ = stream.set_write_timeout(Some(super::sender::IO_TIMEOUT));
                keep_alive(&stream);
                return Ok(stream);
            }
            Err(e) => last = format!("cannot reach {addr}: {}", super::handshake::describe_io(&e)),
        }
    }
    Err(last)
}

/// Has the kernel probe a connection that has been silent for a minute.
/// While the server checks a resumed file the client waits, for as long as
/// that takes, for an ack: a busy server's kernel still answers the probes,
/// but a crashed host or a cut network ends the wait in about two minutes.
fn keep_alive(stream: &TcpStream) {
    use rustix::net::sockopt;
    let _ = sockopt::set_socket_keepalive(stream, true);
    let _ = sockopt::set_tcp_keepidle(stream, Duration::from_secs(60));
    let _ = sockopt::set_tcp_keepintvl(stream, Duration::from_secs(10));
    let _ = sockopt::set_tcp_keepcnt(stream, 6);
}

/// The port a server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8090;

/// `addr` with [`DEFAULT_PORT`] added when it names only a host:
/// `example.org`, `10.0.0.5`, `::1` and `[::1]` all get one.
pub fn with_default_port(addr: &str) -> String {
    let addr = addr.trim();
    match addr.matches(':').count() {
        0 => format!("{addr}:{DEFAULT_PORT}"),
        1 => addr.to_string(),
        // IPv6: a port only ever follows the bracketed address.
        _ if addr.starts_with('[') && !addr.contains("]:") => format!("{addr}:{DEFAULT_PORT}"),
        _ if addr.starts_with('[') => addr.to_string(),
        _ => format!("[{addr}]:{DEFAULT_PORT}"),
    }
}

/// `addr` completed as by [`with_default_port`], or why it cannot be a
/// server's address: a host, and a port from 1 to 65535. Checked when the
/// flags are read, so that a typo is not found file by file (and put on
/// the retry list); names are looked up only when connecting.
pub fn server_addr(addr: &str) -> Result<String, String> {
    if addr.contains("://") {
        return Err(format!("{:?} is a URL: give HOST:PORT", addr.trim()));
    }
    let full = with_default_port(addr);
    let (host, port) = full.rsplit_once(':').unwrap_or((full.as_str(), ""));
    // More than one colon makes an IPv6 address (bracketed by
    // `with_default_port`), which must then be one: `127.0.0.1:80:90` is
    // not.
    if let Some(inside) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let address = inside.split_once('%').map_or(inside, |(a, _zone)| a);
        if !inside.is_empty() && address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "{:?} is not HOST:PORT (an IPv6 address goes in brackets: [::1]:8090)",
                addr.trim()
            ));
        }
    }
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .is_empty()
    {
        return Err(format!("{:?} names no host", addr.trim()));
    }
    match port.parse::<u16>() {
        Ok(1..) => Ok(full),
        _ => Err(format!("{port:?} is not a port (a number from 1 to 65535)")),
    }
}

/// An I/O error that may be a failed TLS handshake, in words. The
/// certificate checks here say what went wrong themselves, which rustls
/// would put after "unexpected error".
pub(crate) fn describe_tls(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::General(why)) => why.clone(),
        _ => e.to_string(),
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Checks the server's certificate against a fingerprint, or (with none
/// known yet) accepts it and notes what it was.
#[derive(Debug)]
struct Pin {
    want: Option<String>,
    /// `want` came from `--fingerprint` rather than from known_servers:
    /// what to do about a mismatch differs.
    given: bool,
    seen: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl Pin {
    fn new(want: Option<String>, given: bool, provider: &Arc<CryptoProvider>) -> Self {
        Pin {
            want,
            given,
            seen: Mutex::new(None),
            provider: Arc::clone(provider),
        }
    }

    fn seen(&self) -> Option<String> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }

    /// The way out of a mismatch, once the user has checked `got` against
    /// the fingerprint the server printed when it started.
    fn what_to_do(&self, got: &str) -> String {
        if self.given {
            return format!("If the server printed {got} at start, pass that to --fingerprint");
        }
        let known = known_servers_path()
            .map_or_else(|| "known_servers".into(), |p| p.display().to_string());
        format!(
            "If you know the server changed it, remove its line from {known} \
             (or pass --fingerprint {got})"
        )
    }
}

impl ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = duplex::fingerprint(end_entity);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(got.clone());
        }
        match &self.want {
            Some(want) if *want != got => Err(rustls::Error::General(format!(
                "THE SERVER'S CERTIFICATE IS NOT THE ONE EXPECTED: expected {want}, got {got}. \
                 Either {} or someone is in the middle. {}",
                if self.given {
                    "the fingerprint given is not this server's"
                } else {
                    "the server made a new certificate"
                },
                self.what_to_do(&got)
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Standard certificate checks against the CA in `path`.
fn ca_verifier(
    path: &std::path::Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(provider),
    )
    .build()
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(verifier)
}

/// `$XDG_STATE_HOME/ferry/known_servers`, else `~/.local/state/ferry/...`.
pub fn known_servers_path() -> Option<PathBuf> {
    super::retry::record_path().map(|p| p.with_file_name("known_servers"))
}

/// The fingerprint remembered for `addr`, if any.
fn known_fingerprint(addr: &str) -> Option<String> {
    let text = fs::read_to_string(known_servers_path()?).ok()?;
    text.lines().find_map(|line| {
        let (who, fp) = line.split_once(' ')?;
        (who == addr).then(|| fp.trim().to_string())
    })
}

fn remember_fingerprint(addr: &str, fp: &str) -> Result<(), String> {
    let path = known_servers_path().ok_or("no HOME or XDG_STATE_HOME")?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    writeln!(file, "{addr} {fp}").map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_without_a_port_gets_the_default_one() {
        assert_eq!(with_default_port("localhost"), "localhost:8090");
        assert_eq!(with_default_port("10.0.0.5"), "10.0.0.5:8090");
        assert_eq!(with_default_port("example.org:9000"), "example.org:9000");
        assert_eq!(with_default_port("::1"), "[::1]:8090");
        assert_eq!(with_default_port("[::1]"), "[::1]:8090");
        assert_eq!(with_default_port("[::1]:9000"), "[::1]:9000");
        assert_eq!(with_default_port(" host:1 "), "host:1");
    }

    #[test]
    fn a_server_address_needs_a_host_and_a_real_port() {
        assert_eq!(server_addr("localhost").as_deref(), Ok("localhost:8090"));
        assert_eq!(server_addr("[::1]:9000").as_deref(), Ok("[::1]:9000"));
        assert_eq!(
            server_addr("10.0.0.5:65535").as_deref(),
            Ok("10.0.0.5:65535")
        );
        for bad in [
            "127.0.0.1:99999",
            "host:0",
            "host:",
            "host:80x",
            ":8090",
            "[]:8090",
            "http://127.0.0.1:8090",
            "127.0.0.1:80:90",
            "[host]:8090",
        ] {
            assert!(server_addr(bad).is_err(), "{bad} was taken");
        }
        assert_eq!(
            server_addr("fe80::1%eth0").as_deref(),
            Ok("[fe80::1%eth0]:8090")
        );
        let why = server_addr("127.0.0.1:99999").expect_err("refused");
        assert!(why.contains("\"99999\" is not a port"), "{why}");
    }

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("example.org:8090"), "example.org");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8090"), "::1");
    }
}
