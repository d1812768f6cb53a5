//! The terminal UI's event loop: sets up the terminal, starts the threads
//! that feed the one message channel, and carries out the [`Action`]s the
//! [`App`] asks for.
//!
//! Everything slow runs on its own thread (reading folders, measuring
//! them, probing the server, planning a send and asking the server about
//! it, sending), so the loop itself only waits on the channel and the
//! screen never freezes. The terminal is restored on every
//! way out: normal return, error, and panic (ratatui's panic hook).

use std::fs;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_proto::OnClash;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self as term, Event as TermEvent};
use ratatui::layout::Rect;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::app::{Action, App};
use crate::browse::{Marks, Sizer, describe_error, read_entries};
use crate::event::{Message, TransferMsg, reporter};
use crate::transfer::Dispatch;
use crate::transfer::link::{self, FirstTrusted};
use crate::transfer::preflight::preflight;
use crate::transfer::retry::{self, Record};
use crate::transfer::{Options, Plan, probe, send};
use crate::ui;

/// How often the screen is refreshed when nothing else happens, so that
/// rates and ETAs keep moving during a stall.
const TICK: Duration = Duration::from_millis(250);
/// How often the server is asked whether it is there.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// The longest a probe may take; a transfer uses the full connect timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long quitting waits for a cancelled transfer to stop, so that the
/// server is left with no half file; after that Ferry leaves anyway.
const QUIT_GRACE: Duration = Duration::from_secs(3);
/// How long background threads sleep between checks that Ferry is quitting.
const POLL: Duration = Duration::from_millis(100);

/// What `ferry --to HOST:PORT [DIR]` starts with.
pub struct Config {
    pub dir: PathBuf,
    pub options: Options,
    pub follow_links: bool,
}

/// How the picker ended, for what to say after the screen is restored and
/// for the exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    /// Quitting cancelled a running transfer.
    pub cancelled: bool,
    /// How many of its files were not sent (they are remembered for
    /// `ferry send --retry-failed`), if it said so in time.
    pub unsent: Option<usize>,
    /// The signal that ended the picker, if one did (its number).
    pub signal: Option<i32>,
    /// Servers trusted on first use meanwhile: said again once the screen
    /// is back, where the whole fingerprint can be read and compared.
    pub trusted: Vec<FirstTrusted>,
}

/// Runs the picker until the user quits.
pub fn run(config: Config) -> anyhow::Result<Ending> {
    // Checked before the terminal changes, so the error is printed plainly.
    let path = fs::canonicalize(&config.dir)
        .with_context(|| format!("cannot open {}", config.dir.display()))?;
    // Given a file, the picker opens its folder with the cursor on it.
    let (dir, select) = match (path.is_dir(), path.parent(), path.file_name()) {
        (true, _, _) => (path.clone(), None),
        (false, Some(parent), Some(name)) => (
            parent.to_path_buf(),
            Some(name.to_string_lossy().into_owned()),
        ),
        _ => bail!("{} is not a folder", config.dir.display()),
    };
    // Without a terminal (a script, a pipe) there is nothing to draw on.
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        bail!("the picker needs a terminal; from scripts, use `ferry send PATH...`");
    }
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => {
            ratatui::restore();
            return Err(e).context("cannot set up the terminal");
        }
    };
    let result =
        Session::start(dir, select, config.options, config.follow_links).run(&mut terminal);
    ratatui::restore();
    result
}

/// What a send starts from.
enum Source {
    Paths(Vec<PathBuf>),
    /// Files that failed before.
    Retry(Record),
}

/// A transfer thread and the flag that stops it.
struct Running {
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Session {
    app: App,
    first_action: Option<Action>,
    tx: Sender<Message>,
    rx: Receiver<Message>,
    options: Options,
    /// `--on-clash` for the send being planned or made, when the user
    /// changed it for that send on the plan screen.
    on_clash_now: Option<OnClash>,
    follow_links: bool,
    sizer: Sizer,
    transfer: Option<Running>,
    /// The number of the current send. A plan abandoned while the server is
    /// still being asked about it finishes on its own thread; its messages
    /// carry an older number and are dropped.
    job: u64,
    /// Stops the current plan's thread hashing files for the server's
    /// verdicts, once the plan is abandoned or replaced.
    planning: Option<Arc<AtomicBool>>,
    /// Tells the input, tick and probe threads to end.
    quitting: Arc<AtomicBool>,
    /// Pauses probing while a transfer holds a connection of its own.
    sending: Arc<AtomicBool>,
    /// Asks for a probe now, rather than at the next turn: after a
    /// transfer, which may have ended because the server went away.
    probe_now: Sender<()>,
    /// What to say once the screen is restored.
    ending: Ending,
}

impl Session {
    fn start(
        dir: PathBuf,
        select: Option<String>,
        options: Options,
        follow_links: bool,
    ) -> Session {
        let (tx, rx) = mpsc::channel();
        let quitting = Arc::new(AtomicBool::new(false));
        let sending = Arc::new(AtomicBool::new(false));
        spawn_input(tx.clone(), Arc::clone(&quitting));
        spawn_signals(tx.clone());
        spawn_ticks(tx.clone(), Arc::clone(&quitting));
        let (probe_now, probe_asked) = mpsc::channel();
        spawn_probe(
            tx.clone(),
            options.clone(),
            Arc::clone(&quitting),
            Arc::clone(&sending),
            probe_asked,
        );
        let sizer = {
            let tx = tx.clone();
            Sizer::spawn(follow_links, move |report| {
                tx.send(Message::Sizing(report)).is_ok()
            })
        };
        let (mut app, first_action) = App::new(dir, options.addr.clone());
        let first_action = match first_action {
            Action::Open { dir, select: None } => Action::Open { dir, select },
            other => other,
        };
        app.marks = Marks::new(follow_links);
        app.on_clash = options.on_clash;
        Session {
            app,
            first_action: Some(first_action),
            tx,
            rx,
            options,
            on_clash_now: None,
            follow_links,
            sizer,
            transfer: None,
            job: 0,
            planning: None,
            quitting,
            sending,
            probe_now,
            ending: Ending::default(),
        }
    }

    /// The options of the send being planned or made.
    fn options_now(&self) -> Options {
        Options {
            on_clash: self.on_clash_now.unwrap_or(self.options.on_clash),
            ..self.options.clone()
        }
    }

    fn run(mut self, terminal: &mut DefaultTerminal) -> anyhow::Result<Ending> {
        if let Some(action) = self.first_action.take() {
            self.perform(action);
        }
        let outcome = self.event_loop(terminal);
        self.shut_down();
        outcome?;
        Ok(self.ending.clone())
    }

    fn event_loop(&mut self, terminal: &mut DefaultTerminal) -> anyhow::Result<()> {
        loop {
            let size = terminal.size().context("cannot read the terminal size")?;
            let screen = Rect::new(0, 0, size.width, size.height);
            self.app.set_list_rows(ui::list_rows(screen));
            self.app.set_scroll_rows(ui::scroll_rows(screen));
            if let Err(e) = terminal.draw(|frame| ui::draw(frame, &self.app, Instant::now())) {
                // A terminal that was closed fails to draw just as its
                // SIGHUP arrives: that ending is the signal's, not an error.
                if let Some(signal) = self.signal_arriving() {
                    self.ending.signal = Some(signal);
                    return Ok(());
                }
                return Err(e).context("cannot draw");
            }
            // The session holds a sender itself, so the channel cannot close.
            let Ok(first) = self.rx.recv() else {
                return Ok(());
            };
            // Handle everything already waiting before drawing again, so a
            // burst of progress events costs one redraw.
            let pending: Vec<Message> = std::iter::once(first).chain(self.rx.try_iter()).collect();
            for message in pending {
                let action = self.handle(message)?;
                // Keys typed while a folder was being opened wait for its
                // listing, and go once it is on screen.
                let replayed = self.app.replay_held_keys();
                for action in action.into_iter().chain(replayed) {
                    if action == Action::Quit {
                        return Ok(());
                    }
                    self.perform(action);
                }
            }
        }
    }

    fn handle(&mut self, message: Message) -> anyhow::Result<Option<Action>> {
        let now = Instant::now();
        for trusted in link::take_first_trusted() {
            self.app.trusted_on_first_use(&trusted);
            self.ending.trusted.push(trusted);
        }
        Ok(match message {
            Message::Key(key) => self.app.handle_key(key),
            Message::Resize | Message::Tick => None,
            Message::InputClosed(why) => bail!("the terminal stopped sending input: {why}"),
            // Leaving the loop shuts down, cancelling a transfer cleanly, so
            // what it did not send is still remembered for a retry.
            Message::Stop(why) => {
                self.ending.signal = Some(why);
                return Ok(Some(Action::Quit));
            }
            Message::Listed {
                dir,
                select,
                result,
            } => self.app.listed(dir, select, result),
            Message::Sizing(report) => self.app.sizing(report),
            Message::Probe(result) => {
                self.app.probed(result);
                None
            }
            Message::Transfer { job, msg } => {
                if matches!(msg, TransferMsg::Done(_)) {
                    self.transfer_ended();
                }
                if job == self.job {
                    self.app.transfer(msg, now);
                }
                None
            }
        })
    }

    fn perform(&mut self, action: Action) {
        match action {
            // Handled by the loop, which is the one to stop.
            Action::Quit => {}
            Action::Open { dir, select } => {
                let tx = self.tx.clone();
                thread::spawn(move || {
                    let result = read_entries(&dir).map_err(|e| describe_error(&e));
                    let _ = tx.send(Message::Listed {
                        dir,
                        select,
                        result,
                    });
                });
            }
            Action::Send(paths) => self.start_planning(Source::Paths(paths), None),
            Action::SendSkippingIdentical(paths) => {
                self.start_planning(Source::Paths(paths), Some(OnClash::SkipIdentical));
            }
            Action::Retry(record) => self.start_planning(Source::Retry(record), None),
            Action::Go(dispatch) => self.start_transfer(dispatch),
            Action::Abandon => {
                self.job += 1;
                self.stop_planning();
            }
            Action::CancelTransfer => {
                // Not counted in `ending`: the summary on screen says what
                // the cancel left. Quitting before the transfer has
                // stopped is counted, in `shut_down`.
                if let Some(running) = &self.transfer {
                    running.cancel.store(true, Ordering::Relaxed);
                }
            }
            Action::SizeNow(paths) => {
                for path in paths {
                    self.sizer.urgent(path);
                }
            }
            Action::SizeInBackground(paths) => self.sizer.background(paths),
        }
    }

    /// Builds the plan and asks the server about it, on a thread of its
    /// own: walking folders, hashing files and the round trip can all take
    /// a while. Nothing is sent until the user confirms ([`Action::Go`]).
    fn start_planning(&mut self, source: Source, on_clash: Option<OnClash>) {
        self.job += 1;
        self.stop_planning();
        self.on_clash_now = on_clash;
        let stop = Arc::new(AtomicBool::new(false));
        self.planning = Some(Arc::clone(&stop));
        let job = self.job;
        let tx = self.tx.clone();
        let options = self.options_now();
        let follow_links = self.follow_links;
        thread::spawn(move || {
            let retrying = matches!(source, Source::Retry(_));
            let mut plan = match source {
                Source::Paths(paths) => Plan::build(&paths, follow_links),
                Source::Retry(record) => retry::plan(&record),
            };
            if options.on_clash == OnClash::Overwrite {
                plan.keep_one_file_per_name();
            }
            // What a cancel left unconfirmed may be there already. Finding
            // out asks the server about the whole plan, and its answer is
            // the plan screen's too (unless skip-identical needs digests).
            // A server that cannot be asked is reported by the plan's own
            // question, next.
            let mut verdicts = None;
            if retrying {
                verdicts = retry::drop_already_stored(&mut plan, &options, &stop)
                    .ok()
                    .flatten();
            }
            let items = plan.items.clone();
            let msg = TransferMsg::Planned(plan);
            if tx.send(Message::Transfer { job, msg }).is_err() {
                return;
            }
            let verdicts = match verdicts {
                Some(known) => Ok(known),
                None => preflight(&items, &options, |_| true, true, &stop),
            };
            let msg = TransferMsg::Checked(verdicts);
            let _ = tx.send(Message::Transfer { job, msg });
        });
    }

    fn start_transfer(&mut self, dispatch: Dispatch) {
        if self.transfer.is_some() {
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let tx = self.tx.clone();
        let options = self.options_now();
        let stop = Arc::clone(&cancel);
        let job = self.job;
        self.sending.store(true, Ordering::Relaxed);
        let thread = thread::spawn(move || {
            let dispatch = Arc::new(dispatch);
            let outgoing = dispatch.outgoing();
            let events = reporter(tx.clone(), job, Arc::clone(&dispatch));
            let report = dispatch.report(send(&outgoing, &options, &stop, events));
            if let Err(why) = retry::remember(&options.addr, &dispatch.items, &report, &[]) {
                let msg = TransferMsg::NotRemembered(why);
                let _ = tx.send(Message::Transfer { job, msg });
            }
            let msg = TransferMsg::Done(report);
            let _ = tx.send(Message::Transfer { job, msg });
        });
        self.transfer = Some(Running { cancel, thread });
    }

    /// A stop signal among the messages arriving in the next moment. The
    /// others are put back, in order, for shutting down to see (a transfer's
    /// last message among them).
    fn signal_arriving(&self) -> Option<i32> {
        let until = Instant::now() + Duration::from_millis(200);
        let mut others = Vec::new();
        let mut signal = None;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(Message::Stop(s)) => {
                    signal = Some(s);
                    break;
                }
                Ok(other) => others.push(other),
                Err(_) => break,
            }
        }
        for message in others {
            let _ = self.tx.send(message);
        }
        signal
    }

    /// Stops the thread of a plan that is no longer wanted; its messages
    /// are dropped anyway (by their job number).
    fn stop_planning(&mut self) {
        if let Some(stop) = self.planning.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }

    fn transfer_ended(&mut self) {
        if let Some(running) = self.transfer.take() {
            // Done is the thread's last message, so this returns at once.
            let _ = running.thread.join();
        }
        self.sending.store(false, Ordering::Relaxed);
        let _ = self.probe_now.send(());
    }

    /// Stops the other threads; a running transfer is cancelled and given
    /// a moment to stop cleanly.
    fn shut_down(&mut self) {
        self.quitting.store(true, Ordering::Relaxed);
        self.stop_planning();
        let Some(running) = &self.transfer else {
            return;
        };
        running.cancel.store(true, Ordering::Relaxed);
        self.ending.cancelled = true;
        let deadline = Instant::now() + QUIT_GRACE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(Message::Transfer {
                    msg: TransferMsg::Done(report),
                    ..
                }) => {
                    let unsent = report.results.iter().filter(|r| !r.is_ok()).count();
                    self.ending.unsent = Some(unsent);
                    self.transfer_ended();
                    return;
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Turns SIGHUP (the terminal closed), SIGTERM and SIGINT (from `kill`;
/// Ctrl-C in the picker is a key) into a [`Message::Stop`], instead of
/// dying on the spot with a transfer's retry list unwritten.
fn spawn_signals(tx: Sender<Message>) {
    let mut signals = match Signals::new([SIGHUP, SIGTERM, SIGINT]) {
        Ok(s) => s,
        // Without the handlers the signals keep their default: quit at once.
        Err(_) => return,
    };
    thread::spawn(move || {
        for signal in signals.forever() {
            if tx.send(Message::Stop(signal)).is_err() {
                return;
            }
        }
    });
}

/// Reads the terminal. Polls rather than blocks so that it notices when
/// Ferry quits and does not swallow a key meant for the shell.
fn spawn_input(tx: Sender<Message>, quitting: Arc<AtomicBool>) {
    thread::spawn(move || {
        while !quitting.load(Ordering::Relaxed) {
            let message = match term::poll(POLL) {
                Ok(false) => continue,
                Ok(true) => match term::read() {
                    Ok(TermEvent::Key(key)) => Message::Key(key),
                    Ok(TermEvent::Resize(..)) => Message::Resize,
                    Ok(_) => continue,
                    Err(e) => Message::InputClosed(e.to_string()),
                },
                Err(e) => Message::InputClosed(e.to_string()),
            };
            let closed = matches!(message, Message::InputClosed(_));
            if tx.send(message).is_err() || closed {
                return;
            }
        }
    });
}

fn spawn_ticks(tx: Sender<Message>, quitting: Arc<AtomicBool>) {
    thread::spawn(move || {
        while !quitting.load(Ordering::Relaxed) {
            thread::sleep(TICK);
            if tx.send(Message::Tick).is_err() {
                return;
            }
        }
    });
}

/// Asks the server for a handshake now and then, for the header.
fn spawn_probe(
    tx: Sender<Message>,
    options: Options,
    quitting: Arc<AtomicBool>,
    sending: Arc<AtomicBool>,
    asked: Receiver<()>,
) {
    thread::spawn(move || {
        while !quitting.load(Ordering::Relaxed) {
            if !sending.load(Ordering::Relaxed) {
                // With the token and TLS a transfer would use, so the header
                // tells the truth about whether sending can work.
                let result = probe(
                    &options.addr,
                    PROBE_TIMEOUT,
                    options.token.as_deref(),
                    options.tls.as_ref(),
                );
                if tx.send(Message::Probe(result)).is_err() {
                    return;
                }
            }
            let next = Instant::now() + PROBE_EVERY;
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                if quitting.load(Ordering::Relaxed) {
                    return;
                }
                match asked.recv_timeout(left.min(POLL)) {
                    Ok(()) => break,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        }
    });
}
