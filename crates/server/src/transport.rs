//! What a session reads from and writes to: the plain socket, or TLS over
//! it. Both arrive on the same port; the first bytes tell which (a TLS
//! record can never be a valid Ferry frame).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use ferry_proto::duplex::{self, TlsReader, TlsWriter};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The reading side of a connection.
pub(crate) enum Incoming {
    Plain(TcpStream),
    Tls(TlsReader),
}

/// The writing side of a connection.
pub(crate) enum Outgoing {
    Plain(TcpStream),
    Tls(TlsWriter),
}

impl Read for Incoming {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Incoming::Plain(s) => s.read(buf),
            Incoming::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Outgoing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Outgoing::Plain(s) => s.write(buf),
            Outgoing::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Outgoing::Plain(s) => s.flush(),
            Outgoing::Tls(t) => t.flush(),
        }
    }
}

impl Incoming {
    /// The socket underneath, for read timeouts.
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Incoming::Plain(s) => s,
            Incoming::Tls(t) => t.socket(),
        }
    }
}

impl Outgoing {
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Outgoing::Plain(s) => s,
            Outgoing::Tls(t) => t.socket(),
        }
    }

    /// At the end of a session: a TLS peer is told the session ends
    /// (close_notify), so it can tell a clean end from a cut. A plain
    /// socket is left for the caller to close.
    pub(crate) fn finish(&mut self) {
        if let Outgoing::Tls(t) = self {
            let _ = t.close();
        }
    }
}

/// Opens a connection's two sides. The first bytes are looked at without
/// being consumed; when they start a TLS handshake, `tls` (if the server
/// has it) takes over. Returns whether the connection is encrypted.
pub(crate) fn open(
    stream: &TcpStream,
    tls: Option<&Arc<ServerConfig>>,
) -> io::Result<(Incoming, Outgoing, bool)> {
    let first = sniff(stream)?;
    if duplex::looks_like_tls(&first) {
        let Some(config) = tls else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a TLS client, but this server was started without --tls",
            ));
        };
        let session = rustls::ServerConnection::new(Arc::clone(config))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let (r, w) = duplex::split(session, stream)?;
        return Ok((Incoming::Tls(r), Outgoing::Tls(w), true));
    }
    Ok((
        Incoming::Plain(stream.try_clone()?),
        Outgoing::Plain(stream.try_clone()?),
        false,
    ))
}

/// The connection's first bytes, as many as it takes to tell TLS from a
/// Ferry frame. Both usually come in one segment; a client that sends its
/// first bytes one at a time is waited for, briefly, and then taken for
/// what the bytes so far say.
fn sniff(stream: &TcpStream) -> io::Result<Vec<u8>> {
    let mut first = [0u8; duplex::TLS_SNIFF_LEN];
    let mut seen = stream.peek(&mut first)?;
    for _ in 0..100 {
        if seen == 0 || !duplex::could_be_tls(&first[..seen]) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        seen = stream.peek(&mut first)?;
    }
    Ok(first[..seen].to_vec())
}

/// The server's certificate and key: read from `dir` (cert.pem, key.pem),
/// or made there, self-signed, on first start. Returns the TLS setup and
/// the certificate's fingerprint for clients to pin.
pub fn load_or_create(dir: &Path) -> Result<(Arc<ServerConfig>, String), String> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !cert_path.exists() || !key_path.exists() {
        create(dir, &cert_path, &key_path)?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
    let first = certs
        .first()
        .ok_or_else(|| format!("{} holds no certificate", cert_path.display()))?;
    let fingerprint = duplex::fingerprint(first);
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not fit: {e}"))?;
    Ok((Arc::new(config), fingerprint))
}

/// Makes a self-signed certificate; the key is readable by its owner only.
fn create(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let made = rcgen::generate_simple_self_signed(vec!["ferry-server".to_string()])
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    // Each file is written aside and renamed into place, key first: a
    // crash leaves either a usable pair or a half that the next start
    // replaces (a lone key is overwritten when its certificate is missing).
    let put = |path: &Path, text: String, mode: u32| -> Result<(), String> {
        let aside = path.with_extension("new");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&aside)
            .map_err(|e| format!("cannot write {}: {e}", aside.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&aside, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    put(key_path, made.signing_key.serialize_pem(), 0o600)?;
    put(cert_path, made.cert.pem(), 0o644)?;
    Ok(())
}
