//! Length-prefixed frames: a 4-byte little-endian length, then that many bytes.
//!
//! This is the whole answer to TCP's "sticky packets": a reader always knows
//! where one message ends and the next begins, however the bytes were split or
//! merged in transit. The little-endian `u32` is bit-for-bit what Python's
//! `struct.pack('i', n)` writes on the machines people run, so clients written
//! that way speak Ferry's framing without knowing it.
//!
//! Two ways in, one set of rules:
//! - [`decode`] looks at a byte buffer and says "not yet", "here is a frame",
//!   or "this can never be a frame" (the `check`/`parse` split, useful for
//!   tests and for non-blocking readers);
//! - [`read_frame`] pulls one frame from a blocking reader, returning
//!   `Ok(None)` on a clean end of stream and an error on a truncated one.

use std::io::{self, Read, Write};

use thiserror::Error;

/// Size of the length prefix in bytes.
pub const PREFIX_LEN: usize = 4;

/// Largest frame body accepted. Headers are small JSON objects; anything
/// bigger is a broken or hostile peer, refused before a byte is allocated.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Why a frame could not be read.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The prefix announced more than [`MAX_FRAME_LEN`] bytes. A negative
    /// length from a signed `struct.pack('i', ..)` lands here too.
    #[error("frame announces {0} bytes, over the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(u32),
    /// The prefix announced zero bytes: no message is empty.
    #[error("frame announces an empty message")]
    Empty,
    /// The stream ended after part of a frame.
    #[error("stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    /// The underlying reader or writer failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Checks the prefix and returns the announced body length.
fn body_len(prefix: [u8; PREFIX_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix);
    match len as usize {
        0 => Err(FrameError::Empty),
        n if n > MAX_FRAME_LEN => Err(FrameError::TooLarge(len)),
        n => Ok(n),
    }
}

/// Looks for one whole frame at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((consumed, body)))`
/// when a frame is complete, and an error when the prefix can never be valid
/// (so a caller need not wait for bytes that will not help).
pub fn decode(buf: &[u8]) -> Result<Option<(usize, &[u8])>, FrameError> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = body_len(*prefix)?;
    let end = PREFIX_LEN + len;
    Ok(buf.get(PREFIX_LEN..end).map(|body| (end, body)))
}

/// Reads one frame body from `reader`.
///
/// `Ok(None)` means the peer closed the stream cleanly between frames, which
/// is how a session normally ends. A stream that ends inside a frame is
/// [`FrameError::Truncated`].
pub fn read_frame<R: Read + ?Sized>(reader: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; PREFIX_LEN];
    let got = read_full(reader, &mut prefix)?;
    if got == 0 {
        return Ok(None);
    }
    if got < PREFIX_LEN {
        return Err(FrameError::Truncated {
            got,
            expected: PREFIX_LEN,
        });
    }
    let len = body_len(prefix)?;
    let mut body = vec![0u8; len];
    let got = read_full(reader, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated {
            got: PREFIX_LEN + got,
            expected: PREFIX_LEN + len,
        });
    }
    Ok(Some(body))
}

/// Writes `body` as one frame. The caller flushes when it wants the bytes
/// on the wire, which lets several small frames share one packet.
pub fn write_frame<W: Write + ?Sized>(writer: &mut W, body: &[u8]) -> Result<(), FrameError> {
    let len = match body.len() {
        0 => return Err(FrameError::Empty),
        n if n > MAX_FRAME_LEN => {
            return Err(FrameError::TooLarge(n.try_into().unwrap_or(u32::MAX)));
        }
        n => n as u32,
    };
    writer.write_all(&len.to_le_bytes())?;
    writer.write_all(body)?;
    Ok(())
}

/// Fills as much of `buf` as the stream has, retrying on `Interrupted`, and
/// returns how many bytes were read (less than `buf.len()` only at the end).
fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, body).expect("frame fits");
        out
    }

    #[test]
    fn prefix_matches_python_struct_pack_i() {
        // struct.pack('i', 300) on x86-64 and ARM is b'\x2c\x01\x00\x00'.
        let bytes = framed(&[b'x'; 300]);
        assert_eq!(&bytes[..4], &[0x2c, 0x01, 0x00, 0x00]);
        assert_eq!(bytes.len(), 304);
    }

    #[test]
    fn decode_waits_for_whole_frame() {
        let bytes = framed(b"{\"a\":1}");
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut]).expect("valid prefix").is_none(),
                "cut at {cut}"
            );
        }
        let (used, body) = decode(&bytes).expect("valid").expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(body, b"{\"a\":1}");
    }

    #[test]
    fn several_frames_in_one_buffer_come_out_one_by_one() {
        let mut bytes = framed(b"one");
        bytes.extend(framed(b"two"));
        bytes.extend(framed(b"three"));
        let mut rest = &bytes[..];
        let mut seen = Vec::new();
        while let Some((used, body)) = decode(rest).expect("valid") {
            seen.push(body.to_vec());
            rest = &rest[used..];
        }
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        assert!(rest.is_empty());
    }

    #[test]
    fn read_frame_survives_one_byte_reads() {
        /// A reader that hands out one byte per call, like a very slow network.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match (self.0.split_first(), buf.first_mut()) {
                    (Some((b, rest)), Some(slot)) => {
                        *slot = *b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let mut bytes = framed(b"first");
        bytes.extend(framed(b"second"));
        let mut r = Trickle(&bytes);
        assert_eq!(read_frame(&mut r).expect("ok"), Some(b"first".to_vec()));
        assert_eq!(read_frame(&mut r).expect("ok"), Some(b"second".to_vec()));
        assert_eq!(read_frame(&mut r).expect("ok"), None);
    }

    #[test]
    fn clean_end_is_none_truncation_is_error() {
        assert!(read_frame(&mut &b""[..]).expect("clean").is_none());
        let bytes = framed(b"hello");
        for cut in 1..bytes.len() {
            let err = read_frame(&mut &bytes[..cut]).expect_err("truncated");
            assert!(
                matches!(err, FrameError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused_before_allocating() {
        let huge = (MAX_FRAME_LEN as u32 + 1).to_le_bytes();
        assert!(matches!(decode(&huge), Err(FrameError::TooLarge(_))));
        // struct.pack('i', -1)
        let negative = (-1i32).to_le_bytes();
        assert!(matches!(
            read_frame(&mut &negative[..]),
            Err(FrameError::TooLarge(u32::MAX))
        ));
        assert!(matches!(decode(&[0, 0, 0, 0]), Err(FrameError::Empty)));
    }

    #[test]
    fn writer_refuses_what_a_reader_would_refuse() {
        assert!(matches!(
            write_frame(&mut Vec::new(), b""),
            Err(FrameError::Empty)
        ));
        let big = vec![b'x'; MAX_FRAME_LEN + 1];
        assert!(matches!(
            write_frame(&mut Vec::new(), &big),
            Err(FrameError::TooLarge(_))
        ));
    }
}
