//! The terminal UI's state and how input changes it.
//!
//! [`App`] does no I/O and starts no threads: a key press or a message
//! changes the state and may return an [`Action`] for the event loop
//! (`tui.rs`) to carry out, such as reading a folder or starting a
//! transfer. That keeps every behaviour testable with plain values, and the
//! drawing code (`ui`) only ever reads an `App`.
//!
//! A send goes through three screens: the plan (what the server says it
//! would do with each file, confirmed with Enter before any byte moves),
//! the progress panel, and the summary, from which `r` sends again what
//! failed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::browse::{Entry, FolderSizes, Listing, Marks, SizeReport};
use crate::event::TransferMsg;
use crate::transfer::progress::Progress;
use crate::transfer::retry::{Failed, Record};
use crate::transfer::{Event, Item, ItemKind, ItemResult, Plan, Report, Skipped};
use ferry_proto::{Clash, Verdict};

/// A side effect the event loop performs for the [`App`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave, cancelling a running transfer first.
    Quit,
    /// Read `dir`; answer with [`App::listed`].
    Open {
        dir: PathBuf,
        select: Option<String>,
    },
    /// Plan these paths and ask the server what it would do with them;
    /// answer with [`App::transfer`] (`Planned`, then `Checked`).
    Send(Vec<PathBuf>),
    /// Like `Send`, for the files of a record of failures.
    Retry(Record),
    /// Send what the user confirmed on the plan screen; answer with the
    /// sender's events and `Done`.
    Go(Dispatch),
    /// Forget the plan being made or shown: nothing was sent.
    Abandon,
    CancelTransfer,
    /// Measure these folders first and to the end (they are marked).
    SizeNow(Vec<PathBuf>),
    /// Measure these when there is time, dropping older background work.
    SizeInBackground(Vec<PathBuf>),
}

/// What goes out after the plan was confirmed, and what was settled by the
/// plan alone (refused files, identical ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The whole plan, in order.
    pub items: Vec<Item>,
    /// Indices into `items` of what is sent, in order.
    pub send: Vec<usize>,
    /// One per item: its result when the plan already decided it.
    pub decided: Vec<Option<ItemResult>>,
}

impl Dispatch {
    /// The items to hand to the sender.
    pub fn outgoing(&self) -> Vec<Item> {
        self.send
            .iter()
            .filter_map(|&i| self.items.get(i).cloned())
            .collect()
    }

    /// Where item `index` of [`Dispatch::outgoing`] is in the whole plan.
    fn whole(&self, index: usize) -> usize {
        self.send.get(index).copied().unwrap_or(usize::MAX)
    }

    /// A sender event about the outgoing items, renumbered for the plan.
    pub fn event(&self, event: Event) -> Event {
        match event {
            Event::Connected { server } => Event::Connected { server },
            Event::Started { index } => Event::Started {
                index: self.whole(index),
            },
            Event::Resumed { index, offset } => Event::Resumed {
                index: self.whole(index),
                offset,
            },
            Event::Checking { index, offset } => Event::Checking {
                index: self.whole(index),
                offset,
            },
            Event::Progress {
                index,
                item_sent,
                total_sent,
            } => Event::Progress {
                index: self.whole(index),
                item_sent,
                total_sent,
            },
            Event::Finished { index, result } => Event::Finished {
                index: self.whole(index),
                result,
            },
        }
    }

    /// The sender's report on the outgoing items, as a report on the whole
    /// plan: one result per item, in plan order.
    pub fn report(&self, sent: Report) -> Report {
        let mut results = self.decided.clone();
        results.resize(self.items.len(), None);
        for (index, result) in sent.results.into_iter().enumerate() {
            if let Some(slot) = results.get_mut(self.whole(index)) {
                *slot = Some(result);
            }
        }
        Report {
            results: results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| ItemResult::NotSent {
                        reason: "not sent".into(),
                    })
                })
                .collect(),
            ..sent
        }
    }
}

/// Whether the server answers, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    Checking,
    Connected(String),
    Unreachable(String),
}

/// A one-line message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub is_error: bool,
}

/// What keys currently mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Normal,
    /// Typing goes into the filter.
    Filter,
    /// "Quit and cancel the transfer?" is on screen.
    ConfirmQuit,
}

#[derive(Debug, Clone)]
pub enum Screen {
    Browse,
    /// A send: its plan, its progress, or its summary.
    Transfer(Box<TransferView>),
}

#[derive(Debug, Clone)]
pub struct App {
    pub listing: Listing,
    pub marks: Marks,
    pub sizes: FolderSizes,
    /// The server, as the user named it.
    pub addr: String,
    pub server: ServerState,
    pub screen: Screen,
    /// A transfer going on (or just ended) behind the folder list, after
    /// Tab sent it there; Tab brings it back.
    pub behind: Option<Box<TransferView>>,
    pub input: Input,
    pub status: Option<Status>,
    /// The folder asked for last; listings of any other folder arriving
    /// later are stale and ignored.
    opening: Option<PathBuf>,
    /// Paths marked while a transfer ran behind the list: its end leaves
    /// them marked even if it sent them (they are for the next send).
    marked_meanwhile: HashSet<PathBuf>,
}

impl App {
    /// An app on `dir`, with the action that reads it.
    pub fn new(dir: PathBuf, addr: impl Into<String>) -> (App, Action) {
        let app = App {
            listing: Listing::empty(dir.clone()),
            marks: Marks::default(),
            sizes: FolderSizes::default(),
            addr: addr.into(),
            server: ServerState::Checking,
            screen: Screen::Browse,
            behind: None,
            input: Input::Normal,
            status: None,
            opening: Some(dir.clone()),
            marked_meanwhile: HashSet::new(),
        };
        (app, Action::Open { dir, select: None })
    }

    /// Whether bytes are moving (or being stopped), on screen or behind the
    /// list: quitting then asks first, and a new send waits.
    pub fn transfer_running(&self) -> bool {
        self.transfer_view().is_some_and(TransferView::is_sending)
    }

    /// The transfer on screen, or the one behind the list.
    pub fn transfer_view(&self) -> Option<&TransferView> {
        match &self.screen {
            Screen::Transfer(view) => Some(view),
            Screen::Browse => self.behind.as_deref(),
        }
    }

    /// How many rows the list gets on screen (for paging and scrolling).
    pub fn set_list_rows(&mut self, rows: usize) {
        self.listing.set_rows(rows);
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        // Terminals that report releases and repeats would act twice.
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        match self.input {
            Input::ConfirmQuit => return self.confirm_quit_key(key),
            Input::Filter => return self.filter_key(key),
            Input::Normal => {}
        }
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return None;
        }
        match self.screen {
            Screen::Transfer(_) => self.transfer_key(key),
            Screen::Browse => self.browse_key(key),
        }
    }

    fn browse_key(&mut self, key: KeyEvent) -> Option<Action> {
        self.status = None;
        match key.code {
            KeyCode::Char('j') | KeyCode::Down => self.listing.move_by(1),
            KeyCode::Char('k') | KeyCode::Up => self.listing.move_by(-1),
            KeyCode::Char('g') | KeyCode::Home => self.listing.move_to_first(),
            KeyCode::Char('G') | KeyCode::End => self.listing.move_to_last(),
            KeyCode::PageDown => self.listing.page_down(),
            KeyCode::PageUp => self.listing.page_up(),
            KeyCode::Enter => return self.enter(),
            KeyCode::Char('l') | KeyCode::Right => return self.open_current(),
            KeyCode::Char('h') | KeyCode::Left | KeyCode::Backspace => return self.go_up(),
            KeyCode::Char(' ') => return self.toggle_mark(),
            KeyCode::Char('a') => return self.mark_visible(),
            KeyCode::Char('u') => self.marks.clear(),
            KeyCode::Char('/') => self.input = Input::Filter,
            KeyCode::Char('.') => {
                let show = !self.listing.show_hidden();
                self.listing.set_show_hidden(show);
            }
            KeyCode::Char('s') => return self.send_marked(),
            KeyCode::Char('q') if self.transfer_running() => self.input = Input::ConfirmQuit,
            KeyCode::Char('q') => return Some(Action::Quit),
            KeyCode::Tab => self.show_transfer(),
            KeyCode::Esc => self.listing.set_filter(""),
            _ => {}
        }
        None
    }

    fn filter_key(&mut self, key: KeyEvent) -> Option<Action> {
        let mut filter = self.listing.filter().to_string();
        match key.code {
            KeyCode::Esc => {
                filter.clear();
                self.input = Input::Normal;
            }
            KeyCode::Enter => self.input = Input::Normal,
            KeyCode::Backspace => {
                filter.pop();
            }
            KeyCode::Down => self.listing.move_by(1),
            KeyCode::Up => self.listing.move_by(-1),
            KeyCode::Char(c)
                if !key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                filter.push(c)
            }
            _ => {}
        }
        if filter != self.listing.filter() {
            self.listing.set_filter(&filter);
        }
        None
    }

    fn transfer_key(&mut self, key: KeyEvent) -> Option<Action> {
        let Screen::Transfer(view) = &mut self.screen else {
            return None;
        };
        match (view.phase, key.code) {
            (Phase::Ended { .. }, KeyCode::Char('q')) => Some(Action::Quit),
            (Phase::Ended { .. }, KeyCode::Char('r')) if view.can_retry() => {
                let record = view.retry_record(&self.addr);
                let roots = view.roots_to_retry();
                self.status = None;
                self.screen = Screen::Transfer(Box::new(TransferView::new(roots)));
                Some(Action::Retry(record))
            }
            (Phase::Ended { .. }, _) => {
                self.screen = Screen::Browse;
                None
            }
            // Nothing has moved yet: leaving needs no confirmation.
            (Phase::Planning | Phase::Asking | Phase::Review, KeyCode::Char('q')) => {
                Some(Action::Quit)
            }
            (Phase::Planning | Phase::Asking | Phase::Review, KeyCode::Esc)
            | (Phase::Review, KeyCode::Char('n')) => {
                self.screen = Screen::Browse;
                self.set_status("Cancelled: nothing was sent.", false);
                Some(Action::Abandon)
            }
            (Phase::Review, KeyCode::Enter | KeyCode::Char('y')) => {
                let dispatch = view.dispatch();
                view.start_sending(&dispatch);
                Some(Action::Go(dispatch))
            }
            (Phase::Review, code) => {
                match code {
                    KeyCode::Char('j') | KeyCode::Down => view.scroll_by(1),
                    KeyCode::Char('k') | KeyCode::Up => view.scroll_by(-1),
                    KeyCode::PageDown => view.scroll_by(10),
                    KeyCode::PageUp => view.scroll_by(-10),
                    KeyCode::Char('g') | KeyCode::Home => view.scroll = 0,
                    _ => {}
                }
                None
            }
            (Phase::Sending, KeyCode::Esc) => {
                view.phase = Phase::Cancelling;
                Some(Action::CancelTransfer)
            }
            (Phase::Sending | Phase::Cancelling, KeyCode::Tab) => {
                self.browse_while_sending();
                None
            }
            (Phase::Sending | Phase::Cancelling, KeyCode::Char('q')) => {
                self.input = Input::ConfirmQuit;
                None
            }
            _ => None,
        }
    }

    fn confirm_quit_key(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => Some(Action::Quit),
            _ => {
                self.input = Input::Normal;
                None
            }
        }
    }

    /// Enter opens a folder, and sends from a file.
    fn enter(&mut self) -> Option<Action> {
        let entry = self.listing.current()?;
        if entry.is_folder() {
            return self.open_current();
        }
        if self.marks.is_empty() {
            let path = entry.path.clone();
            self.start_send(vec![path])
        } else {
            self.start_send(self.marks.paths())
        }
    }

    fn open_current(&mut self) -> Option<Action> {
        let entry = self.listing.current().filter(|e| e.is_folder())?;
        let dir = entry.path.clone();
        self.opening = Some(dir.clone());
        Some(Action::Open { dir, select: None })
    }

    fn go_up(&mut self) -> Option<Action> {
        let here = self.listing.dir();
        let Some(parent) = here.parent() else {
            self.set_status("This is the top folder.", false);
            return None;
        };
        let select = here.file_name().map(|n| n.to_string_lossy().into_owned());
        let dir = parent.to_path_buf();
        self.opening = Some(dir.clone());
        Some(Action::Open { dir, select })
    }

    /// Space: flip the mark and step down, so a run of files is marked by
    /// holding the key.
    fn toggle_mark(&mut self) -> Option<Action> {
        let entry = self.listing.current()?.clone();
        let marked = self.marks.toggle(&entry);
        if marked && self.transfer_running() {
            self.marked_meanwhile.insert(entry.path.clone());
        }
        self.listing.move_by(1);
        if marked {
            self.size_marked_folders([&entry])
        } else {
            None
        }
    }

    fn mark_visible(&mut self) -> Option<Action> {
        let visible: Vec<Entry> = self.listing.visible().cloned().collect();
        let running = self.transfer_running();
        for entry in &visible {
            self.marks.mark(entry);
            if running {
                self.marked_meanwhile.insert(entry.path.clone());
            }
        }
        self.size_marked_folders(&visible)
    }

    fn size_marked_folders<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Option<Action> {
        let folders: Vec<PathBuf> = entries
            .into_iter()
            .filter(|e| e.is_folder() && self.sizes.request_urgent(&e.path))
            .map(|e| e.path.clone())
            .collect();
        (!folders.is_empty()).then_some(Action::SizeNow(folders))
    }

    fn send_marked(&mut self) -> Option<Action> {
        if self.marks.is_empty() {
            self.set_status(
                "Nothing is marked: Space marks, Enter sends the file under the cursor.",
                false,
            );
            return None;
        }
        self.start_send(self.marks.paths())
    }

    /// Tab while sending: back to the list, the transfer going on behind it.
    fn browse_while_sending(&mut self) {
        if let Screen::Transfer(view) = std::mem::replace(&mut self.screen, Screen::Browse) {
            self.behind = Some(view);
        }
    }

    /// Tab in the list: the transfer behind it, if any, comes back.
    fn show_transfer(&mut self) {
        if let Some(view) = self.behind.take() {
            self.screen = Screen::Transfer(view);
        }
    }

    fn start_send(&mut self, paths: Vec<PathBuf>) -> Option<Action> {
        // One transfer at a time: the sender owns the connection.
        if self.transfer_running() {
            self.set_status(
                "A transfer is still running (Tab shows it): send more once it ends.",
                false,
            );
            return None;
        }
        // One that ended behind the list is replaced by the new one.
        self.behind = None;
        self.status = None;
        self.screen = Screen::Transfer(Box::new(TransferView::new(paths.clone())));
        Some(Action::Send(paths))
    }

    fn set_status(&mut self, text: impl Into<String>, is_error: bool) {
        self.status = Some(Status {
            text: text.into(),
            is_error,
        });
    }

    /// A folder was read, or could not be.
    pub fn listed(
        &mut self,
        dir: PathBuf,
        select: Option<String>,
        result: Result<Vec<Entry>, String>,
    ) -> Option<Action> {
        if self.opening.as_deref() != Some(dir.as_path()) {
            return None;
        }
        self.opening = None;
        let entries = match result {
            Ok(entries) => entries,
            Err(reason) => {
                let name = dir.file_name().map_or_else(
                    || dir.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                self.set_status(format!("Cannot open {name}: {reason}"), true);
                return None;
            }
        };
        let rows = self.listing.rows();
        self.listing = Listing::new(dir, entries, self.listing.show_hidden());
        self.listing.set_rows(rows);
        if let Some(name) = select {
            self.listing.select_name(&name);
        }
        // The sizer drops the previous folder's background work; marked
        // folders are urgent work and are measured regardless.
        self.sizes.forget_unfinished_background();
        let folders: Vec<PathBuf> = self
            .listing
            .visible()
            .filter(|e| e.is_folder())
            .map(|e| e.path.clone())
            .collect();
        let wanted = folders
            .into_iter()
            .filter(|path| self.sizes.request(path))
            .collect();
        Some(Action::SizeInBackground(wanted))
    }

    pub fn sizing(&mut self, report: SizeReport) -> Option<Action> {
        match report {
            SizeReport::Measured {
                path,
                size,
                complete,
            } => {
                self.sizes.update(path, size, complete);
                None
            }
            SizeReport::Dropped { path } => {
                self.sizes.forget_unfinished(&path);
                None
            }
        }
    }

    pub fn probed(&mut self, result: Result<String, String>) {
        self.server = match result {
            Ok(name) => ServerState::Connected(name),
            Err(reason) => ServerState::Unreachable(reason),
        };
    }

    pub fn transfer(&mut self, msg: TransferMsg, now: Instant) {
        let view = match (&mut self.screen, &mut self.behind) {
            (Screen::Transfer(view), _) | (Screen::Browse, Some(view)) => view,
            (Screen::Browse, None) => return,
        };
        match msg {
            TransferMsg::Planned(plan) => view.planned(plan),
            TransferMsg::Checked(verdicts) => view.checked(verdicts),
            TransferMsg::Progress(event) => {
                if let Event::Connected { server } = &event {
                    self.server = ServerState::Connected(server.clone());
                }
                view.apply(event, now);
            }
            TransferMsg::NotRemembered(reason) => self.set_status(
                format!("Cannot keep the list of failed files for a later retry: {reason}"),
                false,
            ),
            TransferMsg::Done(report) => {
                view.finish(report);
                // "Quit and cancel the transfer?" has no transfer left to
                // cancel.
                if self.input == Input::ConfirmQuit {
                    self.input = Input::Normal;
                }
                for root in view.fully_sent_roots() {
                    if !self.marked_meanwhile.contains(&root) {
                        self.marks.unmark(&root);
                    }
                }
                self.marked_meanwhile.clear();
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Walking the picked folders to know what to send.
    Planning,
    /// Asking the server what it would do with each file.
    Asking,
    /// The plan is on screen, waiting for the user to confirm it.
    Review,
    Sending,
    /// Esc was pressed; waiting for the sender to stop.
    Cancelling,
    Ended {
        cancelled: bool,
    },
}

/// Bytes done out of a total, where part of the done may have been there
/// before this transfer started (resumed). Rates and times left count only
/// what moves now, so a resume does not look like a burst of speed.
#[derive(Debug, Clone)]
pub struct Meter {
    moved: Progress,
    /// Bytes the server already had.
    resumed: u64,
    total: u64,
}

impl Meter {
    pub fn new(total: u64, now: Instant) -> Self {
        Meter {
            moved: Progress::new(total, now),
            resumed: 0,
            total,
        }
    }

    /// `offset` more bytes are done without being sent.
    fn resume(&mut self, offset: u64) {
        self.resumed += offset;
    }

    /// `done` bytes are done, resumed ones included.
    fn set_done(&mut self, done: u64, now: Instant) {
        self.moved.set_done(done.saturating_sub(self.resumed), now);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes done, resumed ones included.
    pub fn done(&self) -> u64 {
        (self.resumed + self.moved.done()).min(self.total)
    }

    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// Fraction done, 0.0 to 1.0. An empty transfer counts as done.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.done() as f64 / self.total as f64
        }
    }

    pub fn rate(&self, now: Instant) -> Option<f64> {
        self.moved.rate(now)
    }

    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let rate = self.rate(now).filter(|r| *r > 0.0)?;
        let left = self.total.saturating_sub(self.done()) as f64;
        Some(Duration::from_secs_f64(left / rate))
    }
}

/// Everything the plan screen, the progress panel and the summary show.
#[derive(Debug, Clone)]
pub struct TransferView {
    /// What the user picked.
    pub roots: Vec<PathBuf>,
    pub phase: Phase,
    pub items: Vec<Item>,
    pub skipped: Vec<Skipped>,
    /// The server's verdict on each item (`None` for folders), or why it
    /// could not be asked. `None` until it answers.
    pub verdicts: Option<Result<Vec<Option<Verdict>>, String>>,
    /// First plan row shown.
    pub scroll: usize,
    /// Indices of the items that go out (the rest were settled by the plan).
    pub outgoing: Vec<usize>,
    /// One per item, once known.
    pub results: Vec<Option<ItemResult>>,
    /// Where each item's upload picked up, when it continued an earlier one.
    pub resumed: Vec<Option<u64>>,
    /// Indices of items in the order their results came in.
    pub finished: Vec<usize>,
    /// The item going out now.
    pub current: Option<usize>,
    /// Bytes of the outgoing items done; starts with the first event from
    /// the sender, so that the rate counts from the connection.
    pub total: Option<Meter>,
    pub file: Option<Meter>,
    pub elapsed: Option<Duration>,
    /// The item whose kept part (this many bytes) is being read to check
    /// it, before anything is sent.
    pub checking: Option<(usize, u64)>,
}

/// How a transfer went, in numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Files the server confirmed (including renamed and identical ones).
    pub stored: usize,
    pub renamed: usize,
    pub identical: usize,
    pub folders: usize,
    pub failed: usize,
    pub not_sent: usize,
    pub skipped: usize,
}

impl Counts {
    pub fn sent(&self) -> usize {
        self.stored + self.folders
    }

    /// Everything that did not make it, for whatever reason.
    pub fn unsent(&self) -> usize {
        self.failed + self.not_sent + self.skipped
    }
}

/// What the server said it would do, in numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCounts {
    pub new: usize,
    pub identical: usize,
    pub clashes: usize,
    pub resume: usize,
    pub refused: usize,
    pub folders: usize,
    /// Files that will go out, and their bytes (all of each file, resumed
    /// parts included).
    pub to_send: usize,
    pub bytes: u64,
    /// Bytes the server already has of files it will resume.
    pub resumed_bytes: u64,
}

impl TransferView {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        TransferView {
            roots,
            phase: Phase::Planning,
            items: Vec::new(),
            skipped: Vec::new(),
            verdicts: None,
            scroll: 0,
            outgoing: Vec::new(),
            results: Vec::new(),
            resumed: Vec::new(),
            finished: Vec::new(),
            current: None,
            total: None,
            file: None,
            elapsed: None,
            checking: None,
        }
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended { .. })
    }

    /// Whether bytes are moving, or being stopped.
    pub fn is_sending(&self) -> bool {
        matches!(self.phase, Phase::Sending | Phase::Cancelling)
    }

    fn planned(&mut self, plan: Plan) {
        self.results = vec![None; plan.items.len()];
        self.resumed = vec![None; plan.items.len()];
        self.items = plan.items;
        self.skipped = plan.skipped;
        if self.phase == Phase::Planning {
            self.phase = Phase::Asking;
        }
    }

    fn checked(&mut self, verdicts: Result<Vec<Option<Verdict>>, String>) {
        self.verdicts = Some(verdicts);
        if self.phase == Phase::Asking {
            self.phase = Phase::Review;
        }
    }

    /// The server's verdict on item `index`, if it gave one.
    pub fn verdict(&self, index: usize) -> Option<&Verdict> {
        match &self.verdicts {
            Some(Ok(verdicts)) => verdicts.get(index)?.as_ref(),
            _ => None,
        }
    }

    /// Why the server could not be asked, if it could not.
    pub fn preflight_error(&self) -> Option<&str> {
        match &self.verdicts {
            Some(Err(reason)) => Some(reason),
            _ => None,
        }
    }

    pub fn plan_counts(&self) -> PlanCounts {
        let mut counts = PlanCounts::default();
        for (index, item) in self.items.iter().enumerate() {
            let ItemKind::File { size } = item.kind else {
                counts.folders += 1;
                continue;
            };
            match self.verdict(index) {
                Some(Verdict::Identical) => counts.identical += 1,
                Some(Verdict::Refused { .. }) => counts.refused += 1,
                verdict => {
                    match verdict {
                        Some(Verdict::Clash { .. }) => counts.clashes += 1,
                        Some(Verdict::Resume { offset }) => {
                            counts.resume += 1;
                            counts.resumed_bytes += offset.min(&size);
                        }
                        Some(Verdict::New) => counts.new += 1,
                        // Not asked: it goes out as planned.
                        _ => {}
                    }
                    counts.to_send += 1;
                    counts.bytes += size;
                }
            }
        }
        counts
    }

    fn scroll_by(&mut self, delta: isize) {
        let last = self.items.len().saturating_sub(1);
        self.scroll = self.scroll.saturating_add_signed(delta).min(last);
    }

    /// What Enter on the plan screen sends: everything but what the server
    /// refused or already has.
    fn dispatch(&self) -> Dispatch {
        let mut send = Vec::new();
        let mut decided = vec![None; self.items.len()];
        for (index, item) in self.items.iter().enumerate() {
            match self.verdict(index) {
                Some(Verdict::Refused { message, .. }) => {
                    decided[index] = Some(ItemResult::Failed {
                        reason: message.clone(),
                    });
                }
                Some(Verdict::Identical) => {
                    decided[index] = Some(ItemResult::Stored {
                        stored_as: item.remote.clone(),
                        clash: Clash::Identical,
                        bytes: 0,
                    });
                }
                _ => send.push(index),
            }
        }
        Dispatch {
            items: self.items.clone(),
            send,
            decided,
        }
    }

    fn start_sending(&mut self, dispatch: &Dispatch) {
        self.phase = Phase::Sending;
        self.outgoing = dispatch.send.clone();
        for (index, result) in dispatch.decided.iter().enumerate() {
            if let Some(result) = result {
                self.record(index, result.clone());
            }
        }
    }

    /// Total bytes of the files that go out.
    pub fn outgoing_bytes(&self) -> u64 {
        self.outgoing
            .iter()
            .filter_map(|&i| self.items.get(i))
            .map(Item::size)
            .sum()
    }

    /// Bytes of outgoing files the server confirmed stored.
    pub fn stored_bytes(&self) -> u64 {
        self.outgoing
            .iter()
            .filter(|&&i| matches!(self.results.get(i), Some(Some(ItemResult::Stored { .. }))))
            .filter_map(|&i| self.items.get(i))
            .map(Item::size)
            .sum()
    }

    /// Whether the server confirmed every outgoing item: only then is the
    /// transfer at 100%.
    pub fn all_confirmed(&self) -> bool {
        self.outgoing
            .iter()
            .all(|&i| matches!(self.results.get(i), Some(Some(r)) if r.is_ok()))
    }

    /// Whether the file going out now has its answer from the server.
    pub fn current_confirmed(&self) -> bool {
        self.current
            .is_some_and(|i| matches!(self.results.get(i), Some(Some(_))))
    }

    fn record(&mut self, index: usize, result: ItemResult) {
        if let Some(slot) = self.results.get_mut(index) {
            if slot.is_none() {
                self.finished.push(index);
            }
            *slot = Some(result);
        }
    }

    fn apply(&mut self, event: Event, now: Instant) {
        // Before anything moves: the rate does not count from here.
        if let Event::Checking { index, offset } = event {
            self.checking = Some((index, offset));
            return;
        }
        self.checking = None;
        let total = self.outgoing_bytes();
        let meter = self.total.get_or_insert_with(|| Meter::new(total, now));
        match event {
            Event::Connected { .. } | Event::Checking { .. } => {}
            Event::Started { index } => {
                self.current = Some(index);
                let size = self.items.get(index).map_or(0, Item::size);
                self.file = Some(Meter::new(size, now));
            }
            Event::Resumed { index, offset } => {
                meter.resume(offset);
                if let Some(slot) = self.resumed.get_mut(index) {
                    *slot = Some(offset);
                }
                if let Some(file) = self.file.as_mut().filter(|_| self.current == Some(index)) {
                    file.resume(offset);
                }
            }
            Event::Progress {
                index,
                item_sent,
                total_sent,
            } => {
                meter.set_done(total_sent, now);
                if let Some(file) = self.file.as_mut().filter(|_| self.current == Some(index)) {
                    file.set_done(item_sent, now);
                }
            }
            Event::Finished { index, result } => self.record(index, result),
        }
    }

    fn finish(&mut self, report: Report) {
        for (index, result) in report.results.into_iter().enumerate() {
            self.record(index, result);
        }
        self.phase = Phase::Ended {
            cancelled: report.cancelled,
        };
        self.current = None;
        self.file = None;
        self.elapsed = Some(report.elapsed);
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts {
            skipped: self.skipped.len(),
            ..Counts::default()
        };
        for result in self.results.iter().flatten() {
            match result {
                ItemResult::Stored { clash, .. } => {
                    counts.stored += 1;
                    match clash {
                        Clash::Renamed => counts.renamed += 1,
                        Clash::Identical => counts.identical += 1,
                        Clash::None | Clash::Overwritten => {}
                    }
                }
                ItemResult::Folder { .. } => counts.folders += 1,
                ItemResult::Failed { .. } => counts.failed += 1,
                ItemResult::NotSent { .. } => counts.not_sent += 1,
            }
        }
        counts
    }

    /// Why the transfer stopped early, if it did for a reason other than
    /// the user cancelling (say, the server could not be reached).
    pub fn stop_reason(&self) -> Option<&str> {
        if self.phase == (Phase::Ended { cancelled: true }) {
            return None;
        }
        self.results.iter().flatten().find_map(|r| match r {
            ItemResult::NotSent { reason } => Some(reason.as_str()),
            _ => None,
        })
    }

    /// The files that failed or were not sent.
    fn failed_files(&self) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .zip(&self.results)
            .filter(|(item, result)| {
                matches!(item.kind, ItemKind::File { .. })
                    && matches!(
                        result,
                        Some(ItemResult::Failed { .. } | ItemResult::NotSent { .. })
                    )
            })
            .map(|(item, _)| item)
    }

    /// Whether `r` on the summary has something to send again.
    pub fn can_retry(&self) -> bool {
        self.is_ended() && self.failed_files().next().is_some()
    }

    /// The files to send again, each to where it was going.
    fn retry_record(&self, server: &str) -> Record {
        Record {
            server: server.to_string(),
            files: self
                .failed_files()
                .map(|item| Failed {
                    local: item.local.clone(),
                    remote: item.remote.clone(),
                })
                .collect(),
        }
    }

    /// The picks a retry can complete: those with nothing skipped under
    /// them (what was skipped is not retried, so they stay marked).
    fn roots_to_retry(&self) -> Vec<PathBuf> {
        self.roots
            .iter()
            .filter(|root| !self.skipped.iter().any(|s| s.local.starts_with(root)))
            .cloned()
            .collect()
    }

    /// The picked paths that went over entirely: everything planned under
    /// them is stored and nothing under them was skipped. Their marks can
    /// go; the rest stay marked for another try.
    fn fully_sent_roots(&self) -> Vec<PathBuf> {
        let under = |root: &Path, path: &Path| path.starts_with(root);
        self.roots
            .iter()
            .filter(|root| {
                let mut results = self
                    .items
                    .iter()
                    .zip(&self.results)
                    .filter(|(item, _)| under(root, &item.local))
                    .peekable();
                results.peek().is_some()
                    && results.all(|(_, r)| r.as_ref().is_some_and(ItemResult::is_ok))
                    && !self.skipped.iter().any(|s| under(root, &s.local))
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browse::{FolderSize, Sizing, read_entries};
    use crate::transfer::ItemKind;
    use std::fs;
    use tempfile::TempDir;

    /// docs/{a.txt,b.txt}, photos/p1.jpg, notes.txt, zeta.bin, .secret
    fn fixture() -> TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir(root.join("docs")).expect("mkdir");
        fs::create_dir(root.join("photos")).expect("mkdir");
        fs::write(root.join("docs/a.txt"), b"aaaaa").expect("write");
        fs::write(root.join("docs/b.txt"), b"bbb").expect("write");
        fs::write(root.join("photos/p1.jpg"), b"jpeg").expect("write");
        fs::write(root.join("notes.txt"), b"twelve bytes").expect("write");
        fs::write(root.join("zeta.bin"), b"z").expect("write");
        fs::write(root.join(".secret"), b"s").expect("write");
        dir
    }

    /// Carries out folder reads the way the event loop does, synchronously.
    fn perform(app: &mut App, action: Option<Action>) -> Option<Action> {
        if let Some(Action::Open { dir, select }) = &action {
            let result = read_entries(dir).map_err(|e| crate::browse::describe_error(&e));
            app.listed(dir.clone(), select.clone(), result);
        }
        action
    }

    fn app_in(dir: &Path) -> App {
        let (mut app, open) = App::new(dir.to_path_buf(), "127.0.0.1:9");
        perform(&mut app, Some(open));
        app
    }

    fn press(app: &mut App, code: KeyCode) -> Option<Action> {
        let action = app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
        perform(app, action)
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            press(app, KeyCode::Char(c));
        }
    }

    fn names(app: &App) -> Vec<String> {
        app.listing.visible().map(|e| e.name.clone()).collect()
    }

    fn current(app: &App) -> String {
        app.listing
            .current()
            .map(|e| e.name.clone())
            .unwrap_or_default()
    }

    /// Enter on zeta.bin (the last entry): a send of it waits for its plan.
    fn planning(dir: &Path) -> App {
        let mut app = app_in(dir);
        press(&mut app, KeyCode::Char('G'));
        assert_eq!(
            press(&mut app, KeyCode::Enter).map(|a| matches!(a, Action::Send(_))),
            Some(true)
        );
        app
    }

    /// Enter on zeta.bin, the server finds it new, Enter again: sending.
    fn running_transfer(dir: &Path) -> App {
        let mut app = planning(dir);
        let go = confirm(
            &mut app,
            plan_of(dir, &["zeta.bin"]),
            vec![Some(Verdict::New)],
        );
        assert!(matches!(go, Some(Action::Go(_))), "{go:?}");
        app
    }

    /// The plan arrives, then the server's verdicts; Enter confirms.
    fn confirm(app: &mut App, plan: Plan, verdicts: Vec<Option<Verdict>>) -> Option<Action> {
        let now = Instant::now();
        app.transfer(TransferMsg::Planned(plan), now);
        app.transfer(TransferMsg::Checked(Ok(verdicts)), now);
        press(app, KeyCode::Enter)
    }

    /// The result of a file stored under its own name, with no clash.
    fn stored(name: &str, bytes: u64) -> ItemResult {
        ItemResult::Stored {
            stored_as: name.into(),
            clash: Clash::None,
            bytes,
        }
    }

    /// The first event of a send: the server said who it is.
    fn connected() -> Event {
        Event::Connected {
            server: "ferry-server/0.1.0".into(),
        }
    }

    fn view(app: &App) -> &TransferView {
        match &app.screen {
            Screen::Transfer(view) => view,
            Screen::Browse => panic!("not on a transfer screen"),
        }
    }

    #[test]
    fn lists_folders_first_without_hidden_entries() {
        let dir = fixture();
        let app = app_in(dir.path());
        assert_eq!(names(&app), ["docs", "photos", "notes.txt", "zeta.bin"]);
        assert_eq!(current(&app), "docs");
    }

    #[test]
    fn movement_keys_move_and_stop_at_the_ends() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(current(&app), "photos");
        press(&mut app, KeyCode::Down);
        assert_eq!(current(&app), "notes.txt");
        press(&mut app, KeyCode::Char('k'));
        press(&mut app, KeyCode::Up);
        press(&mut app, KeyCode::Up);
        assert_eq!(current(&app), "docs");
        press(&mut app, KeyCode::Char('G'));
        assert_eq!(current(&app), "zeta.bin");
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(current(&app), "zeta.bin");
        press(&mut app, KeyCode::Char('g'));
        assert_eq!(current(&app), "docs");
        press(&mut app, KeyCode::End);
        assert_eq!(current(&app), "zeta.bin");
        press(&mut app, KeyCode::Home);
        assert_eq!(current(&app), "docs");
        press(&mut app, KeyCode::PageDown);
        assert_eq!(current(&app), "zeta.bin");
        press(&mut app, KeyCode::PageUp);
        assert_eq!(current(&app), "docs");
    }

    #[test]
    fn opening_a_folder_and_going_back_puts_the_cursor_where_it_was() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char('j'));
        let opened = press(&mut app, KeyCode::Enter);
        assert_eq!(
            opened,
            Some(Action::Open {
                dir: dir.path().join("photos"),
                select: None
            })
        );
        assert_eq!(app.listing.dir(), dir.path().join("photos"));
        assert_eq!(names(&app), ["p1.jpg"]);

        press(&mut app, KeyCode::Backspace);
        assert_eq!(app.listing.dir(), dir.path());
        assert_eq!(current(&app), "photos");

        for open in [KeyCode::Char('l'), KeyCode::Right] {
            press(&mut app, open);
            assert_eq!(app.listing.dir(), dir.path().join("photos"));
            press(&mut app, KeyCode::Char('h'));
            assert_eq!(current(&app), "photos");
        }
        press(&mut app, KeyCode::Right);
        press(&mut app, KeyCode::Left);
        assert_eq!(app.listing.dir(), dir.path());
        assert_eq!(current(&app), "photos");
    }

    #[test]
    fn a_stale_listing_does_not_replace_the_one_asked_for() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        let open_docs = app.handle_key(KeyEvent::from(KeyCode::Enter));
        assert!(matches!(open_docs, Some(Action::Open { .. })));
        app.listed(dir.path().join("photos"), None, Ok(Vec::new()));
        assert_eq!(app.listing.dir(), dir.path());
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_that_cannot_be_opened_says_so_and_stays_put() {
        use std::os::unix::fs::PermissionsExt;
        let dir = fixture();
        let locked = dir.path().join("locked");
        fs::create_dir(&locked).expect("mkdir");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
        if fs::read_dir(&locked).is_ok() {
            // Running as root: permissions do not apply.
            return;
        }
        let mut app = app_in(dir.path());
        assert!(app.listing.select_name("locked"));
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.listing.dir(), dir.path());
        let status = app.status.clone().expect("a status");
        assert!(status.is_error);
        assert_eq!(status.text, "Cannot open locked: permission denied");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod back");
    }

    #[test]
    fn going_up_from_the_root_is_a_message_not_a_crash() {
        let (mut app, _) = App::new(PathBuf::from("/"), "x:1");
        assert_eq!(press(&mut app, KeyCode::Char('h')), None);
        assert!(app.status.is_some());
    }

    #[test]
    fn space_marks_and_moves_down_and_marks_survive_changing_folder() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char('G'));
        press(&mut app, KeyCode::Char('k'));
        press(&mut app, KeyCode::Char(' '));
        assert!(app.marks.contains(&dir.path().join("notes.txt")));
        assert_eq!(current(&app), "zeta.bin");
        press(&mut app, KeyCode::Char(' '));
        assert_eq!(app.marks.len(), 2);

        press(&mut app, KeyCode::Char('g'));
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Char(' '));
        assert_eq!(app.marks.len(), 3);
        press(&mut app, KeyCode::Char('h'));
        assert_eq!(app.marks.len(), 3);
        let totals = app.marks.totals(&app.sizes);
        assert_eq!((totals.files, totals.bytes), (3, 12 + 1 + 5));

        press(&mut app, KeyCode::Char('G'));
        press(&mut app, KeyCode::Char(' '));
        assert!(!app.marks.contains(&dir.path().join("zeta.bin")));
    }

    #[test]
    fn marking_a_folder_asks_for_its_size_first_and_only_once() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        // Listing the folder already queued docs/ as background work; a
        // mark makes it urgent.
        assert_eq!(
            app.sizes.get(&dir.path().join("docs")),
            Some(&Sizing::Pending)
        );
        let action = press(&mut app, KeyCode::Char(' '));
        assert_eq!(action, Some(Action::SizeNow(vec![dir.path().join("docs")])));
        press(&mut app, KeyCode::Char('k'));
        assert_eq!(press(&mut app, KeyCode::Char(' ')), None, "unmarked");
        press(&mut app, KeyCode::Char('k'));
        assert_eq!(
            press(&mut app, KeyCode::Char(' ')),
            None,
            "already asked for"
        );
        // Background work on it being dropped does not lose the urgent walk.
        app.sizing(SizeReport::Dropped {
            path: dir.path().join("docs"),
        });
        assert!(app.marks.totals(&app.sizes).sizing);
        app.sizing(SizeReport::Measured {
            path: dir.path().join("docs"),
            size: FolderSize {
                files: 2,
                bytes: 8,
                unreadable: 0,
            },
            complete: true,
        });
        let totals = app.marks.totals(&app.sizes);
        assert_eq!((totals.files, totals.bytes, totals.sizing), (2, 8, false));
    }

    #[test]
    fn listing_a_folder_asks_for_background_sizes_of_its_folders() {
        let dir = fixture();
        let (mut app, open) = App::new(dir.path().to_path_buf(), "x:1");
        let Action::Open { dir: path, select } = open else {
            panic!("starts by opening")
        };
        let entries = read_entries(&path).expect("read");
        let action = app.listed(path, select, Ok(entries));
        assert_eq!(
            action,
            Some(Action::SizeInBackground(vec![
                dir.path().join("docs"),
                dir.path().join("photos")
            ]))
        );
    }

    #[test]
    fn a_marks_everything_visible_and_u_clears_all_marks() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(app.marks.len(), 4);
        assert!(!app.marks.contains(&dir.path().join(".secret")));
        press(&mut app, KeyCode::Char('u'));
        assert!(app.marks.is_empty());

        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "txt");
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Char('a'));
        assert_eq!(app.marks.paths(), [dir.path().join("notes.txt")]);
    }

    #[test]
    fn filter_narrows_as_you_type_esc_clears_enter_keeps() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char('/'));
        assert_eq!(app.input, Input::Filter);
        typed(&mut app, "ot");
        assert_eq!(names(&app), ["photos", "notes.txt"]);
        // Keys that would move or quit are text while filtering.
        typed(&mut app, "q");
        assert_eq!(names(&app), Vec::<String>::new());
        press(&mut app, KeyCode::Backspace);
        assert_eq!(names(&app), ["photos", "notes.txt"]);
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.input, Input::Normal);
        assert_eq!(app.listing.filter(), "");
        assert_eq!(names(&app).len(), 4);

        press(&mut app, KeyCode::Char('/'));
        typed(&mut app, "zeta");
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.input, Input::Normal);
        assert_eq!(names(&app), ["zeta.bin"]);
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(current(&app), "zeta.bin");
        press(&mut app, KeyCode::Esc);
        assert_eq!(names(&app).len(), 4);
    }

    #[test]
    fn dot_toggles_hidden_entries() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char('.'));
        assert!(names(&app).contains(&".secret".to_string()));
        press(&mut app, KeyCode::Char('.'));
        assert!(!names(&app).contains(&".secret".to_string()));
    }

    #[test]
    fn enter_on_a_file_sends_just_it_when_nothing_is_marked() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char('G'));
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Some(Action::Send(vec![dir.path().join("zeta.bin")]))
        );
        // Nothing moves before the plan is confirmed.
        assert_eq!(view(&app).phase, Phase::Planning);
        assert!(!app.transfer_running());
    }

    #[test]
    fn enter_on_a_file_sends_the_marked_set_when_there_is_one() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char(' ')); // docs
        press(&mut app, KeyCode::Char('j')); // notes.txt
        press(&mut app, KeyCode::Char(' ')); // notes.txt marked, on zeta.bin
        assert_eq!(current(&app), "zeta.bin");
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            Some(Action::Send(vec![
                dir.path().join("docs"),
                dir.path().join("notes.txt")
            ]))
        );
    }

    #[test]
    fn s_sends_marks_and_says_so_when_there_are_none() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        assert_eq!(press(&mut app, KeyCode::Char('s')), None);
        assert!(
            app.status
                .as_ref()
                .is_some_and(|s| s.text.contains("Nothing is marked"))
        );
        assert!(!app.transfer_running());
        press(&mut app, KeyCode::Char(' '));
        assert_eq!(
            press(&mut app, KeyCode::Char('s')),
            Some(Action::Send(vec![dir.path().join("docs")]))
        );
    }

    #[test]
    fn q_quits_at_once_when_idle_but_asks_during_a_transfer() {
        let dir = fixture();
        let app = app_in(dir.path());
        assert_eq!(
            app.clone().handle_key(KeyEvent::from(KeyCode::Char('q'))),
            Some(Action::Quit)
        );

        let mut app = running_transfer(dir.path());
        assert_eq!(press(&mut app, KeyCode::Char('q')), None);
        assert_eq!(app.input, Input::ConfirmQuit);
        assert_eq!(press(&mut app, KeyCode::Char('n')), None);
        assert_eq!(app.input, Input::Normal);
        assert!(app.transfer_running());
        press(&mut app, KeyCode::Char('q'));
        assert_eq!(press(&mut app, KeyCode::Char('y')), Some(Action::Quit));
    }

    #[test]
    fn ctrl_c_always_quits() {
        let dir = fixture();
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        let mut app = running_transfer(dir.path());
        assert_eq!(app.handle_key(ctrl_c), Some(Action::Quit));
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char('/'));
        assert_eq!(app.handle_key(ctrl_c), Some(Action::Quit));
    }

    fn plan_of(dir: &Path, names: &[&str]) -> Plan {
        Plan::build(
            &names.iter().map(|n| dir.join(n)).collect::<Vec<_>>(),
            false,
        )
    }

    #[test]
    fn tab_browses_while_sending_and_brings_the_transfer_back() {
        let dir = fixture();
        let mut app = running_transfer(dir.path());
        let now = Instant::now();
        app.transfer(TransferMsg::Progress(connected()), now);
        assert_eq!(press(&mut app, KeyCode::Tab), None);
        assert!(matches!(app.screen, Screen::Browse));
        assert!(app.transfer_running());
        // The list works as usual meanwhile.
        assert_eq!(current(&app), "zeta.bin");
        press(&mut app, KeyCode::Char('k'));
        assert_eq!(current(&app), "notes.txt");
        press(&mut app, KeyCode::Char(' '));
        assert!(!app.marks.is_empty());
        // One transfer at a time: a second send waits for this one.
        assert_eq!(press(&mut app, KeyCode::Char('s')), None);
        assert!(matches!(app.screen, Screen::Browse));
        let status = app
            .status
            .as_ref()
            .map(|s| s.text.clone())
            .unwrap_or_default();
        assert!(status.contains("still running"), "{status}");
        // Quitting from the list asks first, as on the transfer screen.
        assert_eq!(press(&mut app, KeyCode::Char('q')), None);
        assert_eq!(app.input, Input::ConfirmQuit);
        press(&mut app, KeyCode::Char('n'));
        // What the sender reports reaches the transfer behind the list.
        let finished = Event::Finished {
            index: 0,
            result: stored("zeta.bin", 5),
        };
        app.transfer(TransferMsg::Progress(finished), now);
        assert_eq!(press(&mut app, KeyCode::Tab), None);
        assert!(view(&app).results[0].is_some());
        assert!(app.behind.is_none());
    }

    /// The transfer of `running_transfer` ends: zeta.bin stored.
    fn zeta_sent(app: &mut App) {
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![stored("zeta.bin", 5)],
                bytes_sent: 5,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            Instant::now(),
        );
    }

    #[test]
    fn a_transfer_that_ends_behind_the_list_keeps_its_summary_for_tab() {
        let dir = fixture();
        let mut app = running_transfer(dir.path());
        press(&mut app, KeyCode::Tab);
        press(&mut app, KeyCode::Char('q'));
        assert_eq!(app.input, Input::ConfirmQuit);
        zeta_sent(&mut app);
        assert!(matches!(app.screen, Screen::Browse));
        assert!(!app.transfer_running());
        // Nothing is left to cancel: the question goes away.
        assert_eq!(app.input, Input::Normal);
        // Tab shows the summary; any key then goes back to the list.
        press(&mut app, KeyCode::Tab);
        assert_eq!(view(&app).phase, Phase::Ended { cancelled: false });
        press(&mut app, KeyCode::Esc);
        assert!(matches!(app.screen, Screen::Browse));
        assert!(app.behind.is_none());
        // Once ended, a new send may start from the list.
        let mut app = running_transfer(dir.path());
        press(&mut app, KeyCode::Tab);
        zeta_sent(&mut app);
        assert!(matches!(
            press(&mut app, KeyCode::Enter),
            Some(Action::Send(_))
        ));
        assert!(app.behind.is_none());
        assert_eq!(view(&app).phase, Phase::Planning);
    }

    #[test]
    fn esc_cancels_a_running_transfer_and_the_summary_counts_what_was_not_sent() {
        let dir = fixture();
        let mut app = running_transfer(dir.path());
        let now = Instant::now();
        assert_eq!(press(&mut app, KeyCode::Esc), Some(Action::CancelTransfer));
        assert!(matches!(&app.screen, Screen::Transfer(t) if t.phase == Phase::Cancelling));
        // A second Esc while stopping does nothing more.
        assert_eq!(press(&mut app, KeyCode::Esc), None);

        let not_sent = ItemResult::NotSent {
            reason: "cancelled".into(),
        };
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![not_sent],
                bytes_sent: 0,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: true,
            }),
            now,
        );
        let Screen::Transfer(view) = &app.screen else {
            panic!("the summary stays up")
        };
        assert_eq!(view.phase, Phase::Ended { cancelled: true });
        assert_eq!((view.counts().sent(), view.counts().unsent()), (0, 1));
        assert!(!app.transfer_running());
        // The summary stays until a key, and that key only goes back.
        assert_eq!(press(&mut app, KeyCode::Esc), None);
        assert!(matches!(app.screen, Screen::Browse));
    }

    #[test]
    fn marks_of_what_was_fully_sent_are_cleared_and_the_rest_stay() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char(' ')); // docs
        press(&mut app, KeyCode::Char(' ')); // photos
        press(&mut app, KeyCode::Char(' ')); // notes.txt
        press(&mut app, KeyCode::Char('s'));
        let now = Instant::now();
        let plan = plan_of(dir.path(), &["docs", "notes.txt", "photos"]);
        let results: Vec<ItemResult> = plan
            .items
            .iter()
            .map(|item| match item.remote.as_str() {
                "docs/b.txt" => ItemResult::Failed {
                    reason: "the server's disk is full".into(),
                },
                other => stored(other, 1),
            })
            .collect();
        assert_eq!(results.len(), 4);
        app.transfer(TransferMsg::Planned(plan), now);
        app.transfer(
            TransferMsg::Done(Report {
                results,
                bytes_sent: 10,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            now,
        );
        assert_eq!(app.marks.paths(), [dir.path().join("docs")]);
    }

    #[test]
    fn marks_set_while_a_transfer_runs_behind_the_list_stay_after_it() {
        let dir = fixture();
        let mut app = running_transfer(dir.path()); // zeta.bin, unmarked
        press(&mut app, KeyCode::Tab);
        assert_eq!(current(&app), "zeta.bin");
        // Marked again for the next send while this one still runs.
        press(&mut app, KeyCode::Char(' '));
        zeta_sent(&mut app);
        assert_eq!(app.marks.paths(), [dir.path().join("zeta.bin")]);
        // The next send, of what is marked, clears it as usual.
        assert!(matches!(
            press(&mut app, KeyCode::Char('s')),
            Some(Action::Send(_))
        ));
        let go = confirm(
            &mut app,
            plan_of(dir.path(), &["zeta.bin"]),
            vec![Some(Verdict::New)],
        );
        assert!(matches!(go, Some(Action::Go(_))), "{go:?}");
        zeta_sent(&mut app);
        assert!(app.marks.is_empty());
    }

    #[test]
    fn progress_events_move_the_gauges_and_fill_the_finished_list() {
        let dir = fixture();
        let mut app = planning(dir.path());
        let t0 = Instant::now();
        let plan = Plan {
            items: vec![
                Item {
                    local: dir.path().join("a"),
                    remote: "a".into(),
                    kind: ItemKind::File { size: 100 },
                },
                Item {
                    local: dir.path().join("b"),
                    remote: "b".into(),
                    kind: ItemKind::File { size: 300 },
                },
            ],
            skipped: Vec::new(),
        };
        let go = confirm(&mut app, plan, vec![Some(Verdict::New), Some(Verdict::New)]);
        assert!(matches!(go, Some(Action::Go(_))));
        let events = [
            connected(),
            Event::Started { index: 0 },
            Event::Progress {
                index: 0,
                item_sent: 100,
                total_sent: 100,
            },
            Event::Started { index: 1 },
            Event::Finished {
                index: 0,
                result: stored("a", 100),
            },
            Event::Progress {
                index: 1,
                item_sent: 100,
                total_sent: 200,
            },
        ];
        for event in events {
            app.transfer(TransferMsg::Progress(event), t0 + Duration::from_secs(1));
        }
        assert_eq!(
            app.server,
            ServerState::Connected("ferry-server/0.1.0".into())
        );
        let Screen::Transfer(view) = &app.screen else {
            panic!("transfer screen")
        };
        assert_eq!(view.current, Some(1));
        assert_eq!(view.total.as_ref().map(Meter::ratio), Some(0.5));
        assert_eq!(view.file.as_ref().map(Meter::done), Some(100));
        assert_eq!(view.finished, [0]);
    }

    #[test]
    fn an_unreachable_server_is_the_stop_reason() {
        let mut view = TransferView::new(Vec::new());
        view.planned(Plan {
            items: vec![Item {
                local: PathBuf::from("/x"),
                remote: "x".into(),
                kind: ItemKind::File { size: 1 },
            }],
            skipped: Vec::new(),
        });
        view.finish(Report {
            results: vec![ItemResult::NotSent {
                reason: "cannot reach 127.0.0.1:9: connection refused".into(),
            }],
            bytes_sent: 0,
            bytes_resumed: 0,
            elapsed: Duration::ZERO,
            cancelled: false,
        });
        assert_eq!(
            view.stop_reason(),
            Some("cannot reach 127.0.0.1:9: connection refused")
        );
    }

    fn file(dir: &Path, name: &str, size: u64) -> Item {
        Item {
            local: dir.join(name),
            remote: name.into(),
            kind: ItemKind::File { size },
        }
    }

    /// On the plan screen for new.txt (new), same.txt (identical),
    /// bad.txt (refused) and big.iso (to resume at 1 KiB).
    fn reviewing(dir: &Path) -> App {
        let mut app = planning(dir);
        let now = Instant::now();
        let plan = Plan {
            items: vec![
                file(dir, "new.txt", 10),
                file(dir, "same.txt", 20),
                file(dir, "bad.txt", 30),
                file(dir, "big.iso", 4096),
            ],
            skipped: Vec::new(),
        };
        app.transfer(TransferMsg::Planned(plan), now);
        assert_eq!(view(&app).phase, Phase::Asking);
        app.transfer(
            TransferMsg::Checked(Ok(vec![
                Some(Verdict::New),
                Some(Verdict::Identical),
                Some(Verdict::Refused {
                    code: ferry_proto::ErrorCode::BadName,
                    message: "the name is not allowed".into(),
                }),
                Some(Verdict::Resume { offset: 1024 }),
            ])),
            now,
        );
        assert_eq!(view(&app).phase, Phase::Review);
        app
    }

    #[test]
    fn the_plan_screen_sends_on_enter_and_leaves_out_refused_and_identical_files() {
        let dir = fixture();
        for key in [KeyCode::Enter, KeyCode::Char('y')] {
            let mut app = reviewing(dir.path());
            let counts = view(&app).plan_counts();
            assert_eq!(
                (counts.new, counts.identical, counts.refused, counts.resume),
                (1, 1, 1, 1)
            );
            assert_eq!(
                (counts.to_send, counts.bytes, counts.resumed_bytes),
                (2, 4106, 1024)
            );
            assert!(!app.transfer_running());

            let Some(Action::Go(dispatch)) = press(&mut app, key) else {
                panic!("{key:?} sends")
            };
            assert_eq!(dispatch.send, [0, 3]);
            let outgoing: Vec<String> = dispatch.outgoing().into_iter().map(|i| i.remote).collect();
            assert_eq!(outgoing, ["new.txt", "big.iso"]);
            assert!(app.transfer_running());

            // What the plan settled is in the finished list already.
            let view = view(&app);
            assert_eq!(view.phase, Phase::Sending);
            assert_eq!(view.finished, [1, 2]);
            assert_eq!(
                view.results[2],
                Some(ItemResult::Failed {
                    reason: "the name is not allowed".into()
                })
            );
            assert!(matches!(
                view.results[1],
                Some(ItemResult::Stored {
                    clash: Clash::Identical,
                    bytes: 0,
                    ..
                })
            ));
            assert_eq!(view.outgoing_bytes(), 4106);
        }
    }

    #[test]
    fn esc_or_n_on_the_plan_goes_back_to_the_list_and_sends_nothing() {
        let dir = fixture();
        for key in [KeyCode::Esc, KeyCode::Char('n')] {
            let mut app = reviewing(dir.path());
            assert_eq!(press(&mut app, key), Some(Action::Abandon));
            assert!(matches!(app.screen, Screen::Browse));
            assert!(
                app.status
                    .as_ref()
                    .is_some_and(|s| s.text.contains("nothing was sent"))
            );
        }
        // Also while the server is still being asked.
        let mut app = planning(dir.path());
        app.transfer(
            TransferMsg::Planned(plan_of(dir.path(), &["zeta.bin"])),
            Instant::now(),
        );
        assert_eq!(view(&app).phase, Phase::Asking);
        assert_eq!(
            press(&mut app, KeyCode::Enter),
            None,
            "no plan to confirm yet"
        );
        assert_eq!(press(&mut app, KeyCode::Esc), Some(Action::Abandon));
        assert!(matches!(app.screen, Screen::Browse));
        // Late answers to the abandoned plan change nothing.
        app.transfer(TransferMsg::Checked(Ok(vec![None])), Instant::now());
        assert!(matches!(app.screen, Screen::Browse));
    }

    #[test]
    fn when_the_server_cannot_be_asked_enter_sends_everything_anyway() {
        let dir = fixture();
        let mut app = app_in(dir.path());
        press(&mut app, KeyCode::Char(' ')); // docs
        press(&mut app, KeyCode::Char('s'));
        let now = Instant::now();
        app.transfer(
            TransferMsg::Planned(plan_of(dir.path(), &["docs", "zeta.bin"])),
            now,
        );
        app.transfer(
            TransferMsg::Checked(Err("the server cannot plan: unknown message".into())),
            now,
        );
        assert_eq!(
            view(&app).preflight_error(),
            Some("the server cannot plan: unknown message")
        );
        let Some(Action::Go(dispatch)) = press(&mut app, KeyCode::Enter) else {
            panic!("Enter sends anyway")
        };
        assert_eq!(dispatch.send, [0, 1, 2]);
        assert!(dispatch.decided.iter().all(Option::is_none));
    }

    #[test]
    fn dispatch_numbers_events_and_results_as_in_the_whole_plan() {
        let dir = fixture();
        let mut app = reviewing(dir.path());
        let Some(Action::Go(dispatch)) = press(&mut app, KeyCode::Enter) else {
            panic!("sends")
        };
        assert_eq!(
            dispatch.event(Event::Started { index: 1 }),
            Event::Started { index: 3 }
        );
        let report = dispatch.report(Report {
            results: vec![stored("new.txt", 1), stored("big.iso", 1)],
            bytes_sent: 3082,
            bytes_resumed: 1024,
            elapsed: Duration::from_secs(1),
            cancelled: false,
        });
        assert_eq!(report.results.len(), 4);
        assert_eq!(report.results[0], stored("new.txt", 1));
        assert_eq!(report.results[3], stored("big.iso", 1));
        assert!(matches!(report.results[2], ItemResult::Failed { .. }));
        assert_eq!(report.bytes_resumed, 1024);
    }

    #[test]
    fn a_resumed_file_starts_at_its_offset_and_is_not_whole_until_confirmed() {
        let dir = fixture();
        let mut app = reviewing(dir.path());
        press(&mut app, KeyCode::Enter);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        for event in [
            connected(),
            Event::Started { index: 0 },
            Event::Progress {
                index: 0,
                item_sent: 10,
                total_sent: 10,
            },
            Event::Finished {
                index: 0,
                result: stored("new.txt", 10),
            },
            Event::Started { index: 3 },
            Event::Resumed {
                index: 3,
                offset: 1024,
            },
        ] {
            app.transfer(TransferMsg::Progress(event), t0);
        }
        let v = view(&app);
        let file = v.file.as_ref().expect("a file gauge");
        assert_eq!((file.done(), file.resumed()), (1024, 1024));
        assert_eq!(v.resumed[3], Some(1024));
        assert_eq!(v.total.as_ref().map(Meter::done), Some(1034));

        app.transfer(
            TransferMsg::Progress(Event::Progress {
                index: 3,
                item_sent: 4096,
                total_sent: 4106,
            }),
            t1,
        );
        let v = view(&app);
        let total = v.total.as_ref().expect("a total gauge");
        assert_eq!(total.ratio(), 1.0, "every byte is out");
        // Only what moved counts for the rate: 3082 bytes in a second.
        assert_eq!(total.rate(t1).map(|r| r.round()), Some(3082.0));
        assert!(!v.all_confirmed(), "big.iso is not confirmed yet");
        assert!(!v.current_confirmed());
        assert_eq!(v.stored_bytes(), 10);

        app.transfer(
            TransferMsg::Progress(Event::Finished {
                index: 3,
                result: stored("big.iso", 4096),
            }),
            t1,
        );
        let v = view(&app);
        assert!(v.all_confirmed());
        assert!(v.current_confirmed());
        assert_eq!(v.stored_bytes(), 4106);
    }

    fn ended_with(app: &mut App, results: Vec<ItemResult>) {
        app.transfer(
            TransferMsg::Done(Report {
                results,
                bytes_sent: 0,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            Instant::now(),
        );
    }

    #[test]
    fn r_retries_only_the_failed_files_and_only_when_there_are_some() {
        let dir = fixture();
        let mut app = reviewing(dir.path());
        press(&mut app, KeyCode::Enter);
        let ok = stored("new.txt", 10);
        let lost = ItemResult::NotSent {
            reason: "the connection was lost".into(),
        };
        ended_with(
            &mut app,
            vec![
                ok.clone(),
                ok.clone(),
                ItemResult::Failed {
                    reason: "the name is not allowed".into(),
                },
                lost,
            ],
        );
        assert!(view(&app).can_retry());
        let Some(Action::Retry(record)) = press(&mut app, KeyCode::Char('r')) else {
            panic!("r retries")
        };
        assert_eq!(record.server, "127.0.0.1:9");
        let remotes: Vec<&str> = record.files.iter().map(|f| f.remote.as_str()).collect();
        assert_eq!(remotes, ["bad.txt", "big.iso"]);
        assert_eq!(record.files[1].local, dir.path().join("big.iso"));
        // The retry goes through the plan screen again.
        assert_eq!(view(&app).phase, Phase::Planning);

        // Nothing failed: r is just a key that goes back to the list.
        let mut app = reviewing(dir.path());
        press(&mut app, KeyCode::Enter);
        ended_with(&mut app, vec![ok.clone(), ok.clone(), ok.clone(), ok]);
        // (The plan had refused bad.txt; the report said otherwise.)
        assert!(!view(&app).can_retry());
        assert_eq!(press(&mut app, KeyCode::Char('r')), None);
        assert!(matches!(app.screen, Screen::Browse));
    }

    #[test]
    fn quitting_before_anything_moves_needs_no_confirmation() {
        let dir = fixture();
        let mut app = reviewing(dir.path());
        assert_eq!(press(&mut app, KeyCode::Char('q')), Some(Action::Quit));
    }
}
