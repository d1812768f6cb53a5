//! Moving files to a server: what to send ([`plan`]), what the server
//! would do with it ([`preflight`]) and so what goes out ([`dispatch`]),
//! sending it ([`sender`], over a
//! [`link`] opened with a `handshake`, with `acks` read beside it and big
//! files picked up where they broke off by `resume`), how fast ([`pace`]),
//! how far along it is ([`progress`]), and what to send again ([`retry`]).
//!
//! Both front ends, `ferry send` and the terminal UI, drive the same
//! [`sender::send`] and read the same [`sender::Event`]s.

mod acks;
pub mod dispatch;
pub mod handshake;
pub mod link;
pub mod pace;
pub mod plan;
pub mod preflight;
pub mod progress;
mod resume;
pub mod retry;
pub mod sender;

pub use dispatch::Dispatch;
pub use handshake::probe;
pub use link::Trust;
pub use plan::{Item, ItemKind, Plan, Skipped};
pub use sender::{Event, ItemResult, Options, Report, Reporter, send};
