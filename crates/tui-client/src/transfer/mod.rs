//! Moving files to a server: what to send ([`plan`], handed on as it is
//! found through a [`feed`]), what the server would do with it
//! ([`preflight`]) and so what goes out ([`dispatch`]), sending it
//! ([`sender`], over a [`link`] opened with a `handshake`, with `acks` read
//! beside it and big files picked up where they broke off by `resume`), how
//! fast ([`pace`]), how far along it is ([`progress`]), and what to send
//! again ([`retry`]).
//!
//! Both front ends, `ferry send` and the terminal UI, drive the same
//! sender and read the same [`sender::Event`]s: the picker sends a plan it
//! showed first ([`sender::send`]), `ferry send` sends while it walks
//! ([`sender::send_feed`]).

mod acks;
pub mod dispatch;
pub mod feed;
pub mod handshake;
pub mod link;
pub mod pace;
pub mod plan;
pub mod preflight;
pub mod progress;
mod resume;
pub mod retry;
pub mod sender;
mod watch;

pub use dispatch::Dispatch;
pub use feed::{Feed, FeedWriter};
pub use handshake::probe;
pub use link::Trust;
pub use plan::{Item, ItemKind, Plan, Skipped};
pub use sender::{Event, ItemResult, Options, Report, Reporter, send, send_feed};
