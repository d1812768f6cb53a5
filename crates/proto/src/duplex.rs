//! One TLS session that a reading thread and a writing thread share.
//!
//! Ferry reads and writes each connection from two threads (acks arrive
//! while bodies go out), but a TLS session is one state machine. Here it
//! sits behind a lock that is never held while waiting for the network to
//! deliver bytes: the reader takes ciphertext from the socket on its own,
//! then locks only to decrypt; the writer locks to encrypt and send. This
//! adds no policy; certificates and verification are the caller's.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

/// The shared session and its socket.
struct Session {
    tls: Mutex<rustls::Connection>,
    /// The socket as the session writes it (handshake replies, alerts).
    socket: TcpStream,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, rustls::Connection> {
        // A thread that panicked holding the lock left the session in a
        // state rustls itself keeps consistent; go on with it.
        self.tls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends whatever the session has queued.
    fn send_pending(&self, tls: &mut rustls::Connection) -> io::Result<()> {
        let mut socket = &self.socket;
        while tls.wants_write() {
            tls.write_tls(&mut socket)?;
        }
        Ok(())
    }
}

/// The reading half: plaintext out, ciphertext in from the socket.
pub struct TlsReader {
    session: Arc<Session>,
    socket: TcpStream,
    ciphertext: Box<[u8]>,
}

/// The writing half: plaintext in, ciphertext out to the socket.
pub struct TlsWriter {
    session: Arc<Session>,
}

/// Splits a TLS session over `socket` into its two halves. The handshake
/// happens as they are used.
pub fn split(
    tls: impl Into<rustls::Connection>,
    socket: &TcpStream,
) -> io::Result<(TlsReader, TlsWriter)> {
    let session = Arc::new(Session {
        tls: Mutex::new(tls.into()),
        socket: socket.try_clone()?,
    });
    Ok((
        TlsReader {
            session: Arc::clone(&session),
            socket: socket.try_clone()?,
            ciphertext: vec![0u8; 64 * 1024].into_boxed_slice(),
        },
        TlsWriter { session },
    ))
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut tls = self.session.lock();
                match tls.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            // Wait for the network without holding the lock, so the writer
            // is never stuck behind a read.
            let n = self.socket.read(&mut self.ciphertext)?;
            let mut tls = self.session.lock();
            let mut fresh = &self.ciphertext[..n];
            if n == 0 {
                // The peer closed without close_notify: rustls reports it
                // as an unexpected end, which is what it is.
                tls.read_tls(&mut fresh)?;
            }
            while !fresh.is_empty() {
                tls.read_tls(&mut fresh)?;
                tls.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            if n == 0 {
                tls.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            self.session.send_pending(&mut tls)?;
        }
    }
}

impl TlsReader {
    /// The socket underneath, for timeouts and shutdown.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut tls = self.session.lock();
        let n = tls.writer().write(buf)?;
        self.session.send_pending(&mut tls)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut tls = self.session.lock();
        tls.writer().flush()?;
        self.session.send_pending(&mut tls)
    }
}

impl TlsWriter {
    /// Ends the session cleanly (close_notify), then closes the sending
    /// side of the socket.
    pub fn close(&mut self) -> io::Result<()> {
        let mut tls = self.session.lock();
        tls.send_close_notify();
        self.session.send_pending(&mut tls)?;
        self.session.socket.shutdown(Shutdown::Write)
    }

    /// The socket underneath.
    pub fn socket(&self) -> &TcpStream {
        &self.session.socket
    }
}

/// A certificate's fingerprint as people compare and type it:
/// `sha256:` and the SHA-256 of its DER bytes in lowercase hex.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Reads a fingerprint the way people may write it: with or without the
/// `sha256:` prefix, in any case, with or without colons.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hex: String = t
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// Whether the first bytes of a connection are a TLS handshake record
/// rather than a Ferry frame. They cannot be both: a TLS record starts
/// 0x16 0x03, which as a Ferry length prefix announces more than the frame
/// limit.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_record_is_never_a_valid_frame() {
        // 0x16 0x03 0x01 .. as a little-endian length.
        let prefix = [0x16, 0x03, 0x01, 0x00];
        assert!(looks_like_tls(&prefix));
        assert!(u32::from_le_bytes(prefix) as usize > crate::MAX_FRAME_LEN);
        assert!(!looks_like_tls(&[0x2c, 0x00, 0x00, 0x00]));
    }

    #[test]
    fn fingerprints_read_back_however_written() {
        let fp = fingerprint(b"not really a certificate");
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64);
        let upper_colons: String = fp[7..]
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            normalize_fingerprint(&format!("SHA256:{upper_colons}")),
            Some(fp.clone())
        );
        assert_eq!(normalize_fingerprint(&fp[7..]), Some(fp));
        assert_eq!(normalize_fingerprint("sha256:abc"), None);
    }
}
