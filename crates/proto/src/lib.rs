//! Ferry's wire format, with no I/O policy.
//!
//! - [`frame`]: how bytes become messages (length prefix, size cap).
//! - [`message`]: the messages themselves, as serde types.
//! - [`path`]: which names may travel in them.
//! - `duplex` (feature `tls`): a TLS session two threads can share.
//!
//! Deadlines, buffering and what to do with a file all belong to the server
//! and client crates; this crate only says what is on the wire and whether
//! it is well formed. `docs/PROTOCOL.md` is the prose version.

#[cfg(feature = "tls")]
pub mod duplex;
pub mod frame;
pub mod message;
pub mod path;

pub use frame::{FrameError, MAX_FRAME_LEN, decode, read_frame, write_frame};
pub use message::{
    Ack, Clash, ClientMsg, ErrorCode, FileHeader, LegacyHeader, Mtime, OnClash, Opening, Outcome,
    PROTOCOL_VERSION, PlanEntry, PlanVerdict, ServerMsg, Verdict, to_body,
};
pub use path::NameError;

use thiserror::Error;

/// Why a frame body is not a valid message.
#[derive(Debug, Error)]
pub enum ProtoError {
    /// Not JSON, or JSON of the wrong shape (a negative size, a missing
    /// field, an unknown `type`).
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// Well-formed, but not allowed here.
    #[error("unexpected message: {0}")]
    Unexpected(String),
}
