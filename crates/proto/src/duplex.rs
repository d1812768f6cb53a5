//! One TLS session that a reading thread and a writing thread share.
//!
//! Ferry reads and writes each connection from two threads (acks arrive
//! while bodies go out), but a TLS session is one state machine. Here it
//! sits behind a lock that is never held while waiting on the network:
//! the reader takes ciphertext from the socket on its own and locks only to
//! decrypt; the writer locks to encrypt into a buffer and sends it after
//! letting go. A second lock, taken before the first is released, keeps
//! ciphertext going out in the order it was made. This adds no policy;
//! certificates and verification are the caller's.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The shared session and its socket.
struct Session {
    tls: Mutex<rustls::Connection>,
    /// The socket as ciphertext goes out; held while sending, so that what
    /// was encrypted first is sent first.
    out: Mutex<TcpStream>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked holding a lock left rustls' state consistent
    // (it never panics halfway through a record); go on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Sends what the session has queued: encrypted under the TLS lock,
    /// written after releasing it.
    fn send_pending(&self, mut tls: MutexGuard<'_, rustls::Connection>) -> io::Result<()> {
        if !tls.wants_write() {
            return Ok(());
        }
        let mut ciphertext = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut ciphertext)?;
        }
        let mut out = lock(&self.out);
        drop(tls);
        out.write_all(&ciphertext)
    }
}

/// The reading half: plaintext out, ciphertext in from the socket.
pub struct TlsReader {
    session: Arc<Session>,
    socket: TcpStream,
    ciphertext: Box<[u8]>,
    /// Ciphertext read from the socket but not yet given to the session.
    start: usize,
    end: usize,
    eof: bool,
}

/// The writing half: plaintext in, ciphertext out to the socket.
pub struct TlsWriter {
    session: Arc<Session>,
    socket: TcpStream,
    /// A send that failed after the session had taken the plaintext: the
    /// bytes cannot be taken back, so the failure is reported next time.
    broken: Option<io::ErrorKind>,
}

/// Splits a TLS session over `socket` into its two halves. The handshake
/// happens as they are used.
pub fn split(
    tls: impl Into<rustls::Connection>,
    socket: &TcpStream,
) -> io::Result<(TlsReader, TlsWriter)> {
    let session = Arc::new(Session {
        tls: Mutex::new(tls.into()),
        out: Mutex::new(socket.try_clone()?),
    });
    Ok((
        TlsReader {
            session: Arc::clone(&session),
            socket: socket.try_clone()?,
            ciphertext: vec![0u8; 32 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
        },
        TlsWriter {
            session,
            socket: socket.try_clone()?,
            broken: None,
        },
    ))
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Read for TlsReader {
    /// Never waits longer in all than the socket's read timeout at the time
    /// of the call, however many socket reads a record takes, so deadlines
    /// set by the caller hold against a peer trickling ciphertext.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let budget = self.socket.read_timeout()?;
        let called = Instant::now();
        loop {
            let mut tls = lock(&self.session.tls);
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext: give the session the ciphertext already here,
            // one helping at a time (it holds only so much decrypted data,
            // which the caller drains before the next helping).
            if self.start < self.end || self.eof {
                let mut pending = &self.ciphertext[self.start..self.end];
                let taken = tls.read_tls(&mut pending)?;
                self.start += taken;
                if self.start == self.end && self.eof && taken == 0 {
                    // Tell the session the peer has gone quiet for good.
                    tls.read_tls(&mut &[][..])?;
                }
                tls.process_new_packets().map_err(tls_error)?;
                // Handshake replies and alerts go out from here.
                self.session.send_pending(tls)?;
                if self.eof && self.start == self.end {
                    // Anything decrypted is returned on the next turn; then
                    // the session reports the end (clean or cut short).
                    let mut tls = lock(&self.session.tls);
                    return match tls.reader().read(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                        other => other,
                    };
                }
                continue;
            }
            drop(tls);
            // Wait for the network without holding the lock.
            if let Some(total) = budget {
                let left = total.saturating_sub(called.elapsed());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.socket.set_read_timeout(Some(left))?;
            }
            let n = self.socket.read(&mut self.ciphertext);
            if let Some(total) = budget {
                // Leave the timeout as the caller set it.
                let _ = self.socket.set_read_timeout(Some(total));
            }
            let n = n?;
            self.start = 0;
            self.end = n;
            self.eof = n == 0;
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
        if let Some(kind) = self.broken {
            return Err(kind.into());
        }
        let mut tls = lock(&self.session.tls);
        let n = tls.writer().write(buf)?;
        if let Err(e) = self.session.send_pending(tls) {
            self.broken = Some(e.kind());
            if n == 0 {
                return Err(e);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(kind) = self.broken {
            return Err(kind.into());
        }
        let mut tls = lock(&self.session.tls);
        tls.writer().flush()?;
        self.session.send_pending(tls)
    }
}

impl TlsWriter {
    /// Ends the session cleanly (close_notify), then closes the sending
    /// side of the socket.
    pub fn close(&mut self) -> io::Result<()> {
        let tls = lock(&self.session.tls);
        let mut tls = tls;
        tls.send_close_notify();
        self.session.send_pending(tls)?;
        self.socket.shutdown(Shutdown::Write)
    }

    /// The socket underneath, for shutdown and timeouts.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
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

/// How many first bytes [`looks_like_tls`] needs to tell.
pub const TLS_SNIFF_LEN: usize = 3;

/// Whether the first bytes of a connection are a TLS handshake record
/// rather than a Ferry frame. A TLS 1.0-1.3 client's first record starts
/// 0x16 0x03 and a minor version of 1 to 4; read as a Ferry length prefix
/// (little-endian) that is at least 0x010316, over the frame limit, so the
/// two cannot be confused. Two bytes are not enough: 0x16 0x03 0x00 0x00 is
/// a 790-byte frame, and SSL 3.0 (minor 0) is not taken.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, 0x01..=0x04, ..])
}

/// Whether `first` could still turn out to be a TLS record once more bytes
/// arrive.
pub fn could_be_tls(first: &[u8]) -> bool {
    first.len() < TLS_SNIFF_LEN && [0x16, 0x03].starts_with(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_record_is_never_a_valid_frame() {
        for minor in 1..=4u8 {
            // The smallest length such a record could announce as a frame.
            let prefix = [0x16, 0x03, minor, 0x00];
            assert!(looks_like_tls(&prefix));
            assert!(u32::from_le_bytes(prefix) as usize > crate::MAX_FRAME_LEN);
        }
        assert!(!looks_like_tls(&[0x2c, 0x00, 0x00, 0x00]));
    }

    #[test]
    fn a_790_byte_frame_is_not_taken_for_tls() {
        let prefix = 790u32.to_le_bytes();
        assert_eq!(prefix, [0x16, 0x03, 0x00, 0x00]);
        assert!(!looks_like_tls(&prefix));
        assert!(could_be_tls(&prefix[..2]));
        assert!(!could_be_tls(&prefix[..3]));
        assert!(!could_be_tls(&[0x17]));
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
