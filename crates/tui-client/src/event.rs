//! Everything the terminal UI reacts to, as one type on one channel.
//!
//! Keys, clock ticks, folder listings, folder sizes, server probes and the
//! transfer's progress all arrive as [`Message`]s on a single mpsc channel,
//! each from its own thread. The event loop only ever waits on that
//! channel, so no source can stall another and the screen is redrawn after
//! every batch of messages.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use ratatui::crossterm::event::KeyEvent;

use ferry_proto::Verdict;

use crate::browse::{Entry, SizeReport};
use crate::transfer::Dispatch;
use crate::transfer::{self, Plan, Report, Reporter};

#[derive(Debug)]
pub enum Message {
    Key(KeyEvent),
    /// The terminal changed size; only a redraw is needed.
    Resize,
    /// Time passed: rates, ETAs and the spinner move on.
    Tick,
    /// The terminal stopped giving input; nothing more can be done.
    InputClosed(String),
    /// A signal asked Ferry to stop (the terminal was closed, or `kill`):
    /// it quits as after Ctrl-C, cancelling a running transfer cleanly.
    Stop(i32),
    /// A folder was read (or could not be).
    Listed {
        dir: PathBuf,
        /// The entry to put the cursor on, when going back up.
        select: Option<String>,
        result: Result<Vec<Entry>, String>,
    },
    Sizing(SizeReport),
    /// Whether the server answers: its name, or why not.
    Probe(Result<String, String>),
    /// From the send numbered `job`; those of an abandoned send are stale.
    Transfer {
        job: u64,
        msg: TransferMsg,
    },
}

/// What a send reports, in this order: the plan and the server's verdicts
/// on it (from the planning thread), then, once the user confirmed, the
/// sender's events and the end (from the transfer thread).
#[derive(Debug)]
pub enum TransferMsg {
    Planned(Plan),
    /// The server's verdict on each item, or why it could not be asked.
    Checked(Result<Vec<Option<Verdict>>, String>),
    Progress(transfer::Event),
    /// The list of failed files could not be written for a later retry.
    NotRemembered(String),
    /// One result per item of the whole plan.
    Done(Report),
}

/// A [`Reporter`] for [`transfer::send`] of `dispatch`'s outgoing items
/// that forwards to the channel, numbered as in the whole plan. A closed
/// channel means the UI is gone; the transfer is being cancelled then
/// anyway, so the event is dropped.
pub fn reporter(tx: Sender<Message>, job: u64, dispatch: Arc<Dispatch>) -> Reporter {
    Arc::new(move |event| {
        let msg = TransferMsg::Progress(dispatch.event(event));
        let _ = tx.send(Message::Transfer { job, msg });
    })
}
