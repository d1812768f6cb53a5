//! Sending a plan over one Ferry v1 connection (or a few, see below).
//!
//! The sender writes file after file without waiting for answers: header,
//! body, trailer, next header. A second thread reads the server's acks as
//! they come and checks each digest against what was sent, so a thousand
//! small files cost one stream, not a thousand round trips.
//!
//! When the server refuses a file at header time it closes the connection
//! (the announced body cannot be told apart from the next frame), so the
//! sender reconnects and carries on after the refused file. It also ends a
//! connection itself, once everything on it is answered, in two cases: the
//! first big file comes up and the server must be asked first whether it
//! keeps part of it (when the plan was still growing at the start, see
//! [`send_feed`]), or the walk feeding the plan falls behind for long.
//! Every item ends with exactly one [`ItemResult`].

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ferry_proto::{Clash, ClientMsg, FileHeader, Mtime, OnClash};

use super::acks::{
    ACK_POLL, AckCount, AckStream, Announced, LimitRefusals, Patient, QUIET_AFTER_SENDING, Sent,
    read_acks,
};
use super::feed::{Feed, Next};
use super::handshake::{connect, describe_io, send_frame};
use super::link::{Link, LinkWriter, Trust};
use super::pace::Pacer;
use super::plan::{Item, ItemKind};
use super::resume::{RESUMABLE_MIN, hash_kept_parts, resume_key, resume_offsets};
use super::watch::lock;
use crate::browse::describe_error;

/// How many bytes are read from a file and written to the socket at a time.
pub(super) const CHUNK: usize = 1 << 20;
/// The socket write buffer: big enough to pack many small files per write.
const WRITE_BUFFER: usize = 256 * 1024;
/// How often progress is reported while a file is moving.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);
/// How long a write may block, and how long the handshake may take.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the server and what to ask of it.
#[derive(Debug, Clone)]
pub struct Options {
    /// `HOST:PORT`.
    pub addr: String,
    pub on_clash: OnClash,
    /// Bytes per second, if capped.
    pub limit_rate: Option<u64>,
    pub connect_timeout: Duration,
    /// Resume big files the server kept part of from an earlier attempt.
    pub resume: bool,
    /// Ask the server to keep each file's modification time.
    pub keep_mtime: bool,
    /// The token the server requires, if any.
    pub token: Option<String>,
    /// Use TLS, trusting the server's certificate this way.
    pub tls: Option<Trust>,
}

impl Options {
    pub fn new(addr: impl Into<String>) -> Self {
        Options {
            addr: addr.into(),
            on_clash: OnClash::Rename,
            limit_rate: None,
            connect_timeout: Duration::from_secs(10),
            resume: true,
            keep_mtime: true,
            token: None,
            tls: None,
        }
    }
}

/// What happened to one item of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    /// The server confirmed the file durably stored, with a matching digest.
    Stored {
        stored_as: String,
        clash: Clash,
        bytes: u64,
    },
    /// The folder exists on the server.
    Folder { path: String },
    /// The server refused it, or it could not be read here.
    Failed { reason: String },
    /// It never reached the server (cancelled, or the connection was lost).
    NotSent { reason: String },
}

impl ItemResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, ItemResult::Stored { .. } | ItemResult::Folder { .. })
    }
}

/// What the sender reports while it works. Indices point into the items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection was made and the server accepted the handshake.
    Connected { server: String },
    /// Before connecting: item `index` is being read up to `offset`, the
    /// part the server kept from an interrupted upload, to check it.
    Checking { index: usize, offset: u64 },
    /// Item `index` started going out.
    Started { index: usize },
    /// Item `index` continues an interrupted upload: the server already had
    /// its first `offset` bytes, which are not sent again.
    Resumed { index: usize, offset: u64 },
    /// Item `index`, announced as resumed at `offset`, could not be: the
    /// server refused its kept part, and the whole file goes again.
    NotResumed { index: usize, offset: u64 },
    /// Bytes written so far: of item `index`, and of the whole transfer.
    Progress {
        index: usize,
        item_sent: u64,
        total_sent: u64,
    },
    /// Item `index` has its final result.
    Finished { index: usize, result: ItemResult },
}

/// Receives [`Event`]s; called from the sending thread and the ack reader.
pub type Reporter = Arc<dyn Fn(Event) + Send + Sync>;

/// The end of a transfer (by default, of one that sent nothing).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One result per item, in plan order.
    pub results: Vec<ItemResult>,
    /// Body bytes written to the network (across reconnects).
    pub bytes_sent: u64,
    /// Bytes not sent because the server kept them from an interrupted
    /// transfer.
    pub bytes_resumed: u64,
    pub elapsed: Duration,
    pub cancelled: bool,
}

impl Report {
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(ItemResult::is_ok)
    }
}

/// Sends `items` and returns once every item has a result. Setting `cancel`
/// stops at the next chunk: the file in flight is abandoned (the server keeps
/// nothing of it) and what was not confirmed is reported as not sent.
pub fn send(items: &[Item], options: &Options, cancel: &AtomicBool, report: Reporter) -> Report {
    send_feed(&Feed::of(items.to_vec()), options, cancel, report)
}

/// [`send`], for items that may still be arriving: sending starts with the
/// first one. The report has a result for every item the feed ends with.
pub fn send_feed(feed: &Feed, options: &Options, cancel: &AtomicBool, report: Reporter) -> Report {
    let started = Instant::now();
    let mut results: Vec<Option<ItemResult>> = Vec::new();
    let mut bytes_sent = 0;
    let mut skipped = 0;
    let mut next = 0;
    let mut stop_reason = None;
    let mut resume = Resume::new(options.resume);
    if options.resume && feed.is_complete() {
        // All known already: ask before the first connection, rather than
        // end one when the first big file comes up.
        resume.ask(feed, options, cancel, &report);
    }
    // Files whose resume failed are sent again from the start, once.
    let mut restarted = HashSet::new();
    // Nothing is connected until there is something to send.
    while let Some(item) = feed.get_unless(next, cancel) {
        if resume.must_ask(&item) {
            resume.ask(feed, options, cancel, &report);
        }
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let stored_before = results.iter().filter(|r| r.is_some()).count();
        let mut conn = Connection {
            feed,
            options,
            cancel,
            report: &report,
            bytes_sent: &mut bytes_sent,
            skipped: &mut skipped,
            resume: &resume,
        };
        let (end, restart, resend) = match conn.run(next, &mut results) {
            Ok(ended) => ended,
            Err(why) => {
                stop_reason = Some(why);
                break;
            }
        };
        let mut again = false;
        for index in restart {
            if restarted.insert(index) {
                // What was counted as already there was not.
                let offset = resume.forget(index);
                if offset > 0 {
                    skipped = skipped.saturating_sub(offset);
                    report(Event::NotResumed { index, offset });
                }
                results[index] = None;
                again = true;
            }
        }
        // A limit that refuses a file even first on a fresh connection
        // (the folder's quota) is not the connection's: the file failed,
        // for the server's reason. Hence each try again must come with
        // something stored.
        let stored_now = results.iter().filter(|r| r.is_some()).count();
        for (index, why) in resend {
            if stored_now > stored_before {
                results[index] = None;
                again = true;
            } else {
                let result = ItemResult::Failed { reason: why };
                report(Event::Finished {
                    index,
                    result: result.clone(),
                });
                results[index] = Some(result);
            }
        }
        let first_open = results.iter().position(Option::is_none).or_else(|| {
            feed.get_unless(results.len(), cancel)
                .map(|_| results.len())
        });
        match (end, first_open) {
            (_, None) => break,
            // Either side ended the connection after some progress: this
            // side to ask about resumes or because the walk fell behind,
            // the server after a refusal. Carry on on a fresh one.
            (End::Closed | End::Paused, Some(i)) if i > next || again => next = i,
            (End::Closed | End::Paused, Some(_)) => {
                stop_reason = Some("the server closed the connection".into());
                break;
            }
            (End::Lost(why), _) => {
                stop_reason = Some(why);
                break;
            }
        }
    }
    if cancel.load(Ordering::Relaxed) {
        stop_reason = Some("cancelled".into());
    }
    let reason = stop_reason.unwrap_or_else(|| "not sent".into());
    // Items still arriving after a failure get their result too; after a
    // cancel, those known by now (the walk is stopping too).
    results.resize(feed.whole_unless(cancel).len(), None);
    let results = results
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            r.unwrap_or_else(|| {
                let result = ItemResult::NotSent {
                    reason: reason.clone(),
                };
                report(Event::Finished {
                    index,
                    result: result.clone(),
                });
                result
            })
        })
        .collect::<Vec<_>>();
    // `skipped` counted them as they went out (for the progress), but
    // only the resumed files that were then stored were spared sending.
    let bytes_resumed = resume
        .offsets
        .iter()
        .filter(|(index, _)| matches!(results.get(**index), Some(ItemResult::Stored { .. })))
        .map(|(_, offset)| offset)
        .sum();
    Report {
        results,
        bytes_sent,
        bytes_resumed,
        elapsed: started.elapsed(),
        cancelled: cancel.load(Ordering::Relaxed),
    }
}

/// Which big files the server holds part of, asked once, when the first
/// big file is about to go out (on a growing feed, once the walk is over).
struct Resume {
    on: bool,
    asked: bool,
    /// Where each resumed file's body starts, by index.
    offsets: HashMap<usize, u64>,
    /// For each file resumed, its bytes before the offset, hashed.
    kept: HashMap<usize, blake3::Hasher>,
}

impl Resume {
    fn new(on: bool) -> Resume {
        Resume {
            on,
            asked: false,
            offsets: HashMap::new(),
            kept: HashMap::new(),
        }
    }

    /// Whether `item` may only go out once the server has been asked.
    fn must_ask(&self, item: &Item) -> bool {
        self.on && !self.asked && item.size() >= RESUMABLE_MIN
    }

    fn ask(&mut self, feed: &Feed, options: &Options, cancel: &AtomicBool, report: &Reporter) {
        let items = feed.whole_unless(cancel);
        let mut offsets = resume_offsets(&items, options);
        self.kept = hash_kept_parts(&items, &mut offsets, cancel, report);
        self.offsets = offsets
            .into_iter()
            .enumerate()
            .filter(|(_, offset)| *offset > 0)
            .collect();
        self.asked = true;
    }

    fn offset(&self, index: usize) -> u64 {
        self.offsets.get(&index).copied().unwrap_or(0)
    }

    /// Takes back the offset of a file to send whole after all.
    fn forget(&mut self, index: usize) -> u64 {
        self.kept.remove(&index);
        self.offsets.remove(&index).unwrap_or(0)
    }
}

/// How a connection that got past the handshake ended.
enum End {
    /// The server closed in an orderly way: everything written was
    /// answered, or it refused a file and closed as the protocol says. A new
    /// connection may carry on with what is left.
    Closed,
    /// The connection broke; the reason in plain words.
    Lost(String),
    /// This side stopped sending and everything it sent was answered: the
    /// next file needs the server asked about resumes first, or the walk
    /// feeding the send fell behind.
    Paused,
}

/// How long a connection waits for the walk to hand on the next item
/// before it is ended (and a new one opened once the item is there): less
/// than a server at its connection limit lets a silent client keep its
/// place (2 s).
const FEED_PATIENCE: Duration = Duration::from_secs(1);

/// Why a big file cut short by a cancel was not stored, and what may come
/// of it. The server keeps what arrived of a resumable upload, unless none
/// did (the cancel drops what is still buffered here), the file goes to
/// another file system mounted inside its folder, or another upload holds
/// its partial: only the retry's plan can tell.
const CANCELLED_KEPT: &str =
    "cancelled; the server may keep what arrived, and sending it again resumes if so";

/// Why a file written out whole is counted as not sent after a cancel. It
/// may have reached the server and been stored, or still have been in this
/// side's buffer, which a cancel drops.
const UNCONFIRMED: &str =
    "cancelled before the server confirmed it (a retry first asks whether it is there)";

/// Tells the watcher of [`end_after_cancel`] that its connection ended.
struct EndWatcher<'a> {
    ended: &'a AtomicBool,
    watcher: thread::Thread,
}

impl Drop for EndWatcher<'_> {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::SeqCst);
        self.watcher.unpark();
    }
}

/// Shuts `socket` down [`CANCEL_GRACE`] after `cancel` is raised, unless
/// the connection has `ended` by then.
fn end_after_cancel(cancel: &AtomicBool, ended: &AtomicBool, socket: &TcpStream) {
    let mut cancelled_at: Option<Instant> = None;
    while !ended.load(Ordering::SeqCst) {
        if cancelled_at.is_none() && cancel.load(Ordering::Relaxed) {
            cancelled_at = Some(Instant::now());
        }
        if cancelled_at.is_some_and(|at| at.elapsed() >= CANCEL_GRACE) {
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
        // Woken when the connection ends, so it never waits for this.
        thread::park_timeout(Duration::from_millis(50));
    }
}

/// How long the acks of what went out are waited for after a cancel.
/// Less than the picker gives a transfer to end when quitting (3 s), so
/// that the retry record is written.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

struct Connection<'a> {
    feed: &'a Feed,
    options: &'a Options,
    cancel: &'a AtomicBool,
    report: &'a Reporter,
    bytes_sent: &'a mut u64,
    /// Bytes not sent because the server already had them (resumed).
    skipped: &'a mut u64,
    /// Where resumed files' bodies start, and their kept parts' hashes.
    resume: &'a Resume,
}

impl Connection<'_> {
    /// Sends items from `first` on, filling `results` as answers arrive.
    /// `Err` means nothing could be sent at all (no connection, no handshake).
    fn run(
        &mut self,
        first: usize,
        results: &mut Vec<Option<ItemResult>>,
    ) -> Result<(End, Vec<usize>, LimitRefusals), String> {
        let (link, server, max_file_size) = connect(self.options)?;
        (self.report)(Event::Connected { server });

        let announced: Announced = Arc::default();
        // Set by the ack reader when the server refuses a file: the server
        // is about to close, so writing more of the body is wasted.
        let refused = Arc::new(AtomicBool::new(false));
        // While bodies are still going out no ack may arrive for a long time
        // (one big file at a low rate): the reader must not give up then.
        let sending = Arc::new(AtomicBool::new(true));
        let acks_seen = Arc::new(AckCount::default());
        let Link {
            socket,
            reader: link_reader,
            writer: mut link_writer,
            ..
        } = link;
        let reader = {
            let stream = link_reader;
            let announced = Arc::clone(&announced);
            let refused = Arc::clone(&refused);
            let report = Arc::clone(self.report);
            let acks_seen = Arc::clone(&acks_seen);
            let patient = Patient {
                stream,
                sending: Arc::clone(&sending),
                quiet: Duration::ZERO,
                poll: ACK_POLL,
                quiet_limit: QUIET_AFTER_SENDING,
            };
            thread::spawn(move || {
                let acks = read_acks(patient, &announced, &refused, &report, &acks_seen);
                acks_seen.end();
                acks
            })
        };

        // After a cancel the acks of what went out are still worth reading
        // (they say what was stored), but not for long: a server syncing a
        // big file to a slow disk may take minutes to answer, and one that
        // stopped reading holds a write for as long. The watcher ends the
        // connection a moment after the cancel, wherever this side waits.
        let cancel = self.cancel;
        let ended = AtomicBool::new(false);
        let (write_error, paused, acks) = thread::scope(|scope| {
            let watcher = scope.spawn(|| end_after_cancel(cancel, &ended, &socket));
            // Ends the watcher however this closure ends, a panic included
            // (the scope waits for it before the panic goes on).
            let _end_watcher = EndWatcher {
                ended: &ended,
                watcher: watcher.thread().clone(),
            };
            let (write_error, paused) = self.write_items(
                &mut link_writer,
                &socket,
                &acks_seen,
                first,
                max_file_size,
                &announced,
                &refused,
                results,
            );
            sending.store(false, Ordering::SeqCst);
            let acks = reader.join().unwrap_or_else(|_| AckStream {
                results: Vec::new(),
                closing: Some("the answer reader crashed".into()),
                refused: false,
                restart: Vec::new(),
                again: Vec::new(),
            });
            (write_error, paused, acks)
        });
        let restart = acks.restart;
        let again = acks.again;
        for (index, result) in acks.results {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(result);
            }
        }
        if self.cancel.load(Ordering::Relaxed) {
            // Written out whole, then no answer in the grace: the server
            // may well have stored it (a retry asks before sending it
            // again). Files it answered to send again are not among them.
            // Cut short instead, a big file sent with a resume key may be
            // kept as a partial for the next send to resume.
            for (&index, sent) in lock(&announced).iter() {
                if restart.contains(&index) || again.iter().any(|(i, _)| *i == index) {
                    continue;
                }
                let reason = match sent {
                    Sent::File {
                        blake3: Some(_), ..
                    } => UNCONFIRMED,
                    Sent::File { size, blake3: None } if self.resumable(index, *size) => {
                        CANCELLED_KEPT
                    }
                    _ => continue,
                };
                if let Some(slot @ None) = results.get_mut(index) {
                    let result = ItemResult::NotSent {
                        reason: reason.into(),
                    };
                    (self.report)(Event::Finished {
                        index,
                        result: result.clone(),
                    });
                    *slot = Some(result);
                }
            }
        }
        if acks.refused && !self.cancel.load(Ordering::Relaxed) {
            return Ok((End::Closed, restart, again));
        }
        if let Some(why) = acks.closing.or(write_error) {
            return Ok((End::Lost(why), restart, again));
        }
        let end = if paused { End::Paused } else { End::Closed };
        Ok((end, restart, again))
    }

    /// Writes items until done, cancelled or the socket fails; returns the
    /// write error, if any, and whether it stopped early by choice (see
    /// [`End::Paused`]). Results found here (unreadable files, files over
    /// the server's limit) go straight into `results`.
    #[allow(clippy::too_many_arguments)]
    fn write_items(
        &mut self,
        link: &mut LinkWriter,
        socket: &TcpStream,
        acks_seen: &AckCount,
        first: usize,
        max_file_size: Option<u64>,
        announced: &Announced,
        refused: &AtomicBool,
        results: &mut Vec<Option<ItemResult>>,
    ) -> (Option<String>, bool) {
        // Under a rate cap the buffer holds about an eighth of a second of
        // sending, so what is paced out leaves when the pacer says, not when
        // 256 KiB of small files have piled up (at 10K/s, 25 s later, and
        // past the server's patience at slower rates).
        let capacity = self.options.limit_rate.map_or(WRITE_BUFFER, |rate| {
            usize::try_from(rate / 8).map_or(WRITE_BUFFER, |b| b.clamp(4096, WRITE_BUFFER))
        });
        let mut out = BufWriter::with_capacity(capacity, &mut *link);
        let mut pacer = Pacer::new(self.options.limit_rate);
        let mut buf = vec![0u8; CHUNK];
        let mut outcome = None;
        let mut paused = false;
        // Files and folders announced on this connection: each gets one ack.
        let mut frames = 0;
        for index in first.. {
            if self.cancel.load(Ordering::Relaxed) || refused.load(Ordering::Relaxed) {
                break;
            }
            let item = match self
                .feed
                .get_within(index, Some(Duration::ZERO), self.cancel)
            {
                Next::Item(item) => item,
                Next::End => break,
                Next::NotYet => {
                    // The walk is behind: what is buffered goes out while
                    // it catches up, rather than wait with it.
                    if let Err(e) = out.flush() {
                        outcome = Some(describe_io(&e));
                        break;
                    }
                    // Idle time is no credit to go over the rate later.
                    let waited = self
                        .feed
                        .get_within(index, Some(FEED_PATIENCE), self.cancel);
                    pacer.rebase();
                    match waited {
                        Next::Item(item) => item,
                        Next::End => break,
                        Next::NotYet => {
                            paused = true;
                            break;
                        }
                    }
                }
            };
            if results.len() <= index {
                results.resize(index + 1, None);
            }
            if results[index].is_some() {
                continue;
            }
            if self.resume.must_ask(&item) {
                paused = true;
                break;
            }
            let local_failure = match item.kind {
                ItemKind::File { size } if max_file_size.is_some_and(|max| size > max) => {
                    Some(format!(
                        "over the server's limit of {}",
                        humansize::format_size(max_file_size.unwrap_or(0), humansize::BINARY)
                    ))
                }
                _ => None,
            };
            if let Some(reason) = local_failure {
                self.finish_locally(index, reason, results);
                continue;
            }
            (self.report)(Event::Started { index });
            let sent = match item.kind {
                ItemKind::Folder => {
                    frames += 1;
                    lock(announced).insert(index, Sent::Folder);
                    send_frame(
                        &mut out,
                        &ClientMsg::Mkdir {
                            id: index as u64,
                            path: item.remote.clone(),
                        },
                    )
                    .map(|()| false)
                }
                ItemKind::File { size } => match File::open(&item.local) {
                    Ok(file) => {
                        frames += 1;
                        self.send_file(
                            &mut out, &mut pacer, &mut buf, index, &item, size, file, announced,
                            refused,
                        )
                    }
                    Err(e) => {
                        self.finish_locally(
                            index,
                            format!("cannot be read here: {}", describe_error(&e)),
                            results,
                        );
                        Ok(false)
                    }
                },
            };
            match sent.and_then(|resumed| {
                if resumed {
                    out.flush().map(|()| true)
                } else {
                    Ok(false)
                }
            }) {
                // The server checks the part it kept before it answers, which
                // for tens of GiB takes a while: send nothing more until it
                // has, rather than fill its queue and stall both sides.
                Ok(true) => {
                    let reading = acks_seen.wait_for(frames, || {
                        self.cancel.load(Ordering::Relaxed) || refused.load(Ordering::Relaxed)
                    });
                    if self.cancel.load(Ordering::Relaxed) {
                        // The answer may be minutes away: stop reading too.
                        let _ = socket.shutdown(Shutdown::Both);
                        break;
                    }
                    if !reading {
                        // The server closed: what is left goes on a new
                        // connection.
                        break;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    outcome = Some(describe_io(&e));
                    break;
                }
            }
        }
        if self.cancel.load(Ordering::Relaxed) || refused.load(Ordering::Relaxed) {
            // Drop what is buffered and cut the stream: the file in flight
            // must arrive short so that the server throws it away.
            let (_, _unsent) = out.into_parts();
            let _ = socket.shutdown(Shutdown::Write);
        } else {
            if let Err(e) = out.flush() {
                outcome.get_or_insert_with(|| describe_io(&e));
            }
            drop(out);
            // Closing our side tells the server we are done; its remaining
            // acks still arrive on the read side.
            link.close();
        }
        (outcome, paused)
    }

    /// Whether item `index`, of `size` bytes, goes with a resume key (see
    /// [`Self::send_file`]).
    fn resumable(&self, index: usize, size: u64) -> bool {
        self.options.resume
            && size >= RESUMABLE_MIN
            && self
                .feed
                .peek(index, |item| resume_key(&item.local).is_some())
                .unwrap_or(false)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_file(
        &mut self,
        out: &mut BufWriter<&mut LinkWriter>,
        pacer: &mut Pacer,
        buf: &mut [u8],
        index: usize,
        item: &Item,
        size: u64,
        mut file: File,
        announced: &Announced,
        refused: &AtomicBool,
    ) -> io::Result<bool> {
        let id = index as u64;
        // Big files go resumably; the offset is what the server said it
        // already has (from the plan asked before sending).
        let resume_key = (self.options.resume && size >= RESUMABLE_MIN)
            .then(|| resume_key(&item.local))
            .flatten();
        let offset = match resume_key {
            Some(_) => self.resume.offset(index).min(size),
            None => 0,
        };
        // Taken before the first byte is read: if it is not the same after
        // the last, the file was written to in between, and what was read
        // may be half the old and half the new.
        let before = file.metadata().ok();
        let mtime = before
            .as_ref()
            .filter(|_| self.options.keep_mtime)
            .and_then(|m| m.modified().ok())
            .and_then(to_mtime);
        lock(announced).insert(index, Sent::File { size, blake3: None });
        send_frame(
            out,
            &ClientMsg::File(FileHeader {
                id,
                path: item.remote.clone(),
                size,
                on_clash: self.options.on_clash,
                mtime,
                resume_key,
                offset,
            }),
        )?;
        // The digest covers the whole file: the part the server already has
        // was hashed from the local copy before connecting.
        let mut hasher = blake3::Hasher::new();
        let mut read_problem = None;
        let mut sent = 0;
        if offset > 0 {
            match (
                self.resume.kept.get(&index).cloned(),
                file.seek(SeekFrom::Start(offset)),
            ) {
                (Some(kept), Ok(_)) => {
                    hasher = kept;
                    (self.report)(Event::Resumed { index, offset });
                    *self.skipped += offset;
                }
                _ => read_problem = Some("the file could not be read where it resumes"),
            }
            sent = offset;
        }
        if let Some(problem) = read_problem {
            pad(out, size - offset)?;
            return send_frame(
                out,
                &ClientMsg::Abort {
                    id,
                    reason: problem.to_string(),
                },
            )
            .map(|()| false);
        }
        let mut last_report = Instant::now();
        let mut saw_end = false;
        while sent < size {
            if self.cancel.load(Ordering::Relaxed) || refused.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let left = usize::try_from(size - sent).unwrap_or(usize::MAX);
            // Asking for a byte more than is left shows the end of the file
            // in the same read (a regular file reads short only at its end),
            // which saves small files a second read.
            let want = pacer.chunk_len(buf.len()).min(left.saturating_add(1));
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => {
                    read_problem = Some("the file shrank while it was being sent");
                    0
                }
                Ok(n) if n > left => {
                    // Send what was announced, then abort (below).
                    read_problem = Some("the file grew while it was being sent");
                    left
                }
                Ok(n) => {
                    saw_end = n < want;
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    read_problem = Some("the file could not be read to the end");
                    0
                }
            };
            if read_problem.is_some() && n == 0 {
                // Keep the stream in step by padding out the announced size,
                // then abort the file so the server stores none of it.
                pad(out, size - sent)?;
                *self.bytes_sent += size - sent;
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            sent += n as u64;
            *self.bytes_sent += n as u64;
            pacer.account(n);
            if last_report.elapsed() >= PROGRESS_EVERY || sent == size {
                last_report = Instant::now();
                (self.report)(Event::Progress {
                    index,
                    item_sent: sent,
                    total_sent: *self.bytes_sent + *self.skipped,
                });
            }
        }
        if read_problem.is_none() && !saw_end && !at_end(&mut file) {
            // Only the planned size went out, and it hashed fine, but it is
            // not the file as it is now: storing it would be a silent cut.
            read_problem = Some("the file grew while it was being sent");
        }
        if read_problem.is_none() && changed_since(&file, before.as_ref()) {
            // Rewritten in place, same size: the digest covers what was
            // read, so only this tells a torn copy from the file.
            read_problem = Some("the file changed while it was being sent");
        }
        let trailer = match read_problem {
            Some(problem) => ClientMsg::Abort {
                id,
                reason: problem.to_string(),
            },
            None => ClientMsg::Done {
                id,
                blake3: hasher.finalize().to_hex().to_string(),
            },
        };
        if let ClientMsg::Done { blake3, .. } = &trailer {
            lock(announced).insert(
                index,
                Sent::File {
                    size,
                    blake3: Some(blake3.clone()),
                },
            );
        }
        send_frame(out, &trailer)?;
        Ok(offset > 0)
    }

    fn finish_locally(&self, index: usize, reason: String, results: &mut [Option<ItemResult>]) {
        let result = ItemResult::Failed { reason };
        (self.report)(Event::Finished {
            index,
            result: result.clone(),
        });
        results[index] = Some(result);
    }
}

/// A file time as the protocol carries it.
fn to_mtime(t: std::time::SystemTime) -> Option<Mtime> {
    let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(Mtime {
        secs: i64::try_from(since.as_secs()).ok()?,
        nanos: since.subsec_nanos(),
    })
}

/// Whether `file` was written to (or its status changed) since `before`
/// was taken; also when either status cannot be read, as nothing vouches
/// for the bytes then.
fn changed_since(file: &File, before: Option<&std::fs::Metadata>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Some(before), Ok(now)) = (before, file.metadata()) else {
        return true;
    };
    (
        before.mtime(),
        before.mtime_nsec(),
        before.ctime(),
        before.ctime_nsec(),
    ) != (now.mtime(), now.mtime_nsec(), now.ctime(), now.ctime_nsec())
}

/// Whether `file` has nothing left to read.
fn at_end(file: &mut File) -> bool {
    let mut probe = [0u8; 1];
    loop {
        match file.read(&mut probe) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Unreadable now: what was sent hashed fine; let it stand.
            Err(_) => return true,
        }
    }
}

/// Writes `n` zero bytes.
fn pad(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    let zeros = [0u8; 8192];
    while n > 0 {
        let step = n.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..step])?;
        n -= step as u64;
    }
    Ok(())
}
