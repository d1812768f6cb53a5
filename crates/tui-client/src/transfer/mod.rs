//! Moving files to a server: what to send ([`plan`]), what the server
//! would do with it ([`preflight`]), sending it
//! ([`sender`]), how fast ([`pace`]) and how far along it is ([`progress`]).
//!
//! Both front ends, `ferry send` and the terminal UI, drive the same
//! [`sender::send`] and read the same [`sender::Event`]s.

pub mod link;
pub mod pace;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod retry;
pub mod sender;

pub use link::Trust;
pub use plan::{Item, ItemKind, Plan, Skipped};
pub use sender::{Event, ItemResult, Options, Report, Reporter, probe, send};
