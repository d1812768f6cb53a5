//! Reading the server's acks on a second thread while the sender writes.
//!
//! Each ack is checked against the digest of what was sent and turned into
//! an [`ItemResult`]; the writer can wait for a given number of acks
//! ([`AckCount`]), which it does after a resumed file.

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::{ErrorCode, Outcome, ServerMsg};

use super::handshake::read_server_msg;
use super::link::LinkReader;
use super::sender::{Event, ItemResult, Reporter};
use super::watch::{Watch, lock};

/// What the writer announced on a connection, by item index, for the ack
/// reader to check each answer against.
pub(super) type Announced = Arc<Mutex<HashMap<usize, Sent>>>;

/// One thing announced on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sent {
    Folder,
    /// A file of `size` bytes; its digest once the whole body went out.
    File {
        size: u64,
        blake3: Option<String>,
    },
}

/// The ack reader wakes up this often to ask whether to keep waiting.
pub(crate) const ACK_POLL: Duration = Duration::from_secs(30);

/// Silence allowed once everything is sent: the server may still be
/// syncing a very large file to a slow disk before it can ack it.
pub(super) const QUIET_AFTER_SENDING: Duration = Duration::from_secs(600);

/// How many acks the reader has read on a connection, and whether it has
/// stopped reading: the writer waits on it after a resumed file.
#[derive(Debug, Default)]
pub(super) struct AckCount(Watch<AckState>);

#[derive(Debug, Default)]
struct AckState {
    read: usize,
    stopped: bool,
}

impl AckCount {
    pub(super) fn add(&self) {
        self.0.update(|state| state.read += 1);
    }

    pub(super) fn end(&self) {
        self.0.update(|state| state.stopped = true);
    }

    /// Waits until `n` acks are in, the reader has stopped, or `give_up`;
    /// `false` if the reader has stopped.
    pub(super) fn wait_for(&self, n: usize, give_up: impl Fn() -> bool) -> bool {
        self.0.wait(Duration::from_millis(100), |state| {
            (state.read >= n || state.stopped || give_up()).then_some(!state.stopped)
        })
    }
}

/// The ack reader's side of the socket: read timeouts are retried while
/// the sender is still sending, and for a while after it has finished.
/// Retrying at the byte level keeps a frame cut by a timeout intact.
pub(super) struct Patient {
    pub(super) stream: LinkReader,
    pub(super) sending: Arc<AtomicBool>,
    /// Silence so far since the sender finished.
    pub(super) quiet: Duration,
    /// The socket's read timeout, and the silence allowed after sending.
    pub(super) poll: Duration,
    pub(super) quiet_limit: Duration,
}

impl Read for Patient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.sending.load(Ordering::SeqCst) {
                        continue;
                    }
                    self.quiet += self.poll;
                    if self.quiet >= self.quiet_limit {
                        return Err(e);
                    }
                }
                Ok(n) => {
                    self.quiet = Duration::ZERO;
                    return Ok(n);
                }
                other => return other,
            }
        }
    }
}

/// Files refused for one of the server's limits, each with its reason.
pub(super) type LimitRefusals = Vec<(usize, String)>;

/// What the ack reader learned from one connection.
pub(super) struct AckStream {
    pub(super) results: Vec<(usize, ItemResult)>,
    /// Why the connection ended, when it did not end cleanly.
    pub(super) closing: Option<String>,
    /// The server refused a file at header time (and so closed).
    pub(super) refused: bool,
    /// Files whose resume did not add up: to send again from the start.
    pub(super) restart: Vec<usize>,
    /// Files the server refused for one of its limits, with its reason:
    /// to send on another connection, if the limit was this one's.
    pub(super) again: LimitRefusals,
}

/// Reads acks until the server closes, turning each into a result.
pub(super) fn read_acks(
    stream: Patient,
    announced: &Announced,
    refused: &AtomicBool,
    report: &Reporter,
    seen: &AckCount,
) -> AckStream {
    let mut reader = BufReader::new(stream);
    let mut acks = AckStream {
        results: Vec::new(),
        closing: None,
        refused: false,
        restart: Vec::new(),
        again: Vec::new(),
    };
    loop {
        let msg = match read_server_msg(&mut reader) {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(why) => {
                acks.closing = Some(why);
                break;
            }
        };
        let ack = match msg {
            ServerMsg::Ack(ack) => {
                seen.add();
                ack
            }
            ServerMsg::Error { code, message } => {
                acks.closing = Some(match code {
                    ErrorCode::ShuttingDown => format!("the server is shutting down: {message}"),
                    _ => format!("the server ended the connection: {message}"),
                });
                break;
            }
            ServerMsg::Welcome { .. } | ServerMsg::Plan { .. } => {
                acks.closing = Some("the server answered out of turn".into());
                break;
            }
        };
        let sent = usize::try_from(ack.id)
            .ok()
            .and_then(|index| Some((index, lock(announced).get(&index)?.clone())));
        let Some((index, sent)) = sent else {
            acks.closing = Some(format!(
                "the server answered for unknown file id {}",
                ack.id
            ));
            break;
        };
        let result = match ack.outcome {
            Outcome::Stored {
                stored_as,
                bytes,
                blake3,
                clash,
            } => {
                let matches = match &sent {
                    Sent::File {
                        size,
                        blake3: Some(ours),
                    } => *ours == blake3 && *size == bytes,
                    Sent::File { blake3: None, .. } | Sent::Folder => false,
                };
                if !matches {
                    ItemResult::Failed {
                        reason: "the server's digest does not match what was sent".into(),
                    }
                } else {
                    ItemResult::Stored {
                        stored_as,
                        clash,
                        bytes,
                    }
                }
            }
            Outcome::Folder { path } => ItemResult::Folder { path },
            Outcome::Failed {
                code: ErrorCode::ResumeMismatch,
                ..
            } => {
                // Not a result yet: the file goes again, whole.
                acks.restart.push(index);
                acks.refused = true;
                refused.store(true, Ordering::Relaxed);
                continue;
            }
            Outcome::Failed {
                code: ErrorCode::LimitReached,
                message,
            } => {
                // The server takes only so many files per connection, say:
                // this one goes first on the next (the sender tells that
                // from a limit no connection gets past, a quota).
                acks.again.push((index, message));
                acks.refused = true;
                refused.store(true, Ordering::Relaxed);
                continue;
            }
            Outcome::Failed { code, message } => {
                if !matches!(code, ErrorCode::DigestMismatch | ErrorCode::Aborted) {
                    acks.refused = true;
                    refused.store(true, Ordering::Relaxed);
                }
                ItemResult::Failed { reason: message }
            }
        };
        report(Event::Finished {
            index,
            result: result.clone(),
        });
        acks.results.push((index, result));
    }
    acks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::thread;
    use std::time::Instant;

    #[test]
    fn a_writer_waiting_for_acks_sees_them_arrive_and_the_reader_stop() {
        let count = Arc::new(AckCount::default());
        let reader = {
            let count = Arc::clone(&count);
            thread::spawn(move || {
                for _ in 0..3 {
                    thread::sleep(Duration::from_millis(5));
                    count.add();
                }
                thread::sleep(Duration::from_millis(5));
                count.end();
            })
        };
        assert!(count.wait_for(3, || false), "three acks, reader still on");
        assert!(!count.wait_for(4, || false), "the fourth never comes");
        reader.join().expect("reader");
        // Acks counted while nobody waited are still seen.
        let count = AckCount::default();
        count.add();
        assert!(count.wait_for(1, || false));
    }

    #[test]
    fn the_ack_reader_waits_while_sending_then_gives_up_after_a_while() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let poll = Duration::from_millis(20);
        client.set_read_timeout(Some(poll)).expect("timeout");
        let sending = Arc::new(AtomicBool::new(true));
        let mut reader = Patient {
            stream: LinkReader::Plain(client),
            sending: Arc::clone(&sending),
            quiet: Duration::ZERO,
            poll,
            quiet_limit: Duration::from_millis(100),
        };
        let late = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            server.write_all(b"x").expect("write");
            server
        });
        let mut byte = [0u8; 1];
        // Ten timeouts pass while the sender is busy; the byte still comes.
        assert_eq!(reader.read(&mut byte).expect("waited"), 1);
        let _keep_open = late.join().expect("writer");
        sending.store(false, Ordering::SeqCst);
        let started = Instant::now();
        let err = reader.read(&mut byte).expect_err("gives up");
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        assert!(started.elapsed() >= Duration::from_millis(80));
    }
}
