//! The folder browser's model: what is in a folder ([`listing`]), what the
//! user picked across folders ([`marks`]) and how big folders are
//! ([`sizing`], measured on a background thread).
//!
//! Reading a folder and walking a tree are the only file system work here;
//! both are called from background threads by the event loop so the list
//! never waits on a slow disk.

pub mod listing;
pub mod marks;
pub mod sizing;

pub use listing::{Entry, EntryKind, Listing, read_entries};
pub use marks::{Marks, Totals};
pub use sizing::{FolderSize, FolderSizes, SizeReport, Sizer, Sizing};

use std::io;

/// An I/O error in the words a person expects in a status line.
pub fn describe_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::NotFound => "it no longer exists".into(),
        io::ErrorKind::NotADirectory => "it is not a folder".into(),
        _ => e.to_string(),
    }
}
