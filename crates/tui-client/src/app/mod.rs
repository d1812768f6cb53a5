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

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use ferry_proto::OnClash;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::browse::{Entry, FolderSizes, Listing, Marks, SizeReport};
use crate::event::TransferMsg;
use crate::transfer::handshake::{connect_failure, is_refusal};
use crate::transfer::link::FirstTrusted;
use crate::transfer::retry::Record;
use crate::transfer::{Dispatch, Event};

mod transfer_view;

pub use transfer_view::{Counts, Meter, Phase, PlanCounts, TransferView};

/// The most keys held for a folder being opened; more are dropped (a
/// person types ahead a few keys, not hundreds).
const MAX_HELD_KEYS: usize = 64;

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
    /// Like `Send`, with `--on-clash skip-identical` for this send only:
    /// the user asked for it on the plan screen.
    SendSkippingIdentical(Vec<PathBuf>),
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

/// Whether the server answers, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerState {
    Checking,
    Connected(String),
    Unreachable(String),
    /// It answered, and said no (a token missing or wrong, say).
    Refused(String),
}

impl ServerState {
    /// The state a probe's answer shows: its name, or why not.
    fn from_probe(result: Result<String, String>) -> Self {
        match result {
            Ok(name) => ServerState::Connected(name),
            Err(reason) if is_refusal(&reason) => ServerState::Refused(reason),
            Err(reason) => ServerState::Unreachable(reason),
        }
    }

    /// What a probe would show after a plan or transfer failed with
    /// `error`, when that error was a failure to connect; `None` when the
    /// server was there.
    fn after_failure(error: &str) -> Option<Self> {
        connect_failure(error).map(|why| ServerState::from_probe(Err(why)))
    }
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
    /// The list of keys is on screen; any key closes it.
    Help,
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
    /// What the server is asked to do with taken names (`--on-clash`).
    pub on_clash: OnClash,
    /// The folder asked for last; listings of any other folder arriving
    /// later are stale and ignored.
    opening: Option<PathBuf>,
    /// Keys typed while another folder is being opened, kept for it: acting
    /// on the list still on screen would mark or open the wrong entries
    /// (`l` then Space marked the folder left behind). `None` when no
    /// folder change is under way.
    held: Option<VecDeque<KeyEvent>>,
    /// Paths marked while a transfer ran behind the list: its end leaves
    /// them marked even if it sent them (they are for the next send).
    marked_meanwhile: HashSet<PathBuf>,
    /// How many rows the plan and the summary show, for scrolling.
    scroll_rows: ScrollRows,
    /// How far the help is scrolled, on a screen too small for it.
    pub help_scroll: usize,
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
            on_clash: OnClash::Rename,
            opening: Some(dir.clone()),
            held: Some(VecDeque::new()),
            marked_meanwhile: HashSet::new(),
            scroll_rows: ScrollRows::default(),
            help_scroll: 0,
        };
        (app, Action::Open { dir, select: None })
    }

    /// Whether a folder is being read for the list.
    pub fn reading(&self) -> bool {
        self.opening.is_some()
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

    /// How many rows the plan and the summary get on screen (for paging and
    /// for how far they scroll).
    pub fn set_scroll_rows(&mut self, rows: ScrollRows) {
        self.scroll_rows = rows;
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        // Terminals that report releases and repeats would act twice.
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        if let Some(held) = &mut self.held
            && self.opening.is_some()
            && matches!(self.screen, Screen::Browse)
            && matches!(self.input, Input::Normal)
        {
            match key.code {
                // Leaving never waits for a folder, however slow its disk.
                KeyCode::Char('q') => {}
                // Nor does changing one's mind about a folder that is slow
                // to read: the list on screen stays, and its keys work.
                KeyCode::Esc => {
                    self.held = None;
                    self.opening = None;
                    self.set_status("Stopped opening that folder.", false);
                    return None;
                }
                _ => {
                    if held.len() < MAX_HELD_KEYS {
                        held.push_back(key);
                    }
                    return None;
                }
            }
        }
        self.act_on_key(key)
    }

    /// The keys held while a folder was opened, now that it is on screen:
    /// each is handled as if typed now, in order, until one opens another
    /// folder (the rest then wait for that one). Returns their actions.
    pub fn replay_held_keys(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while self.opening.is_none()
            && let Some(key) = self.held.as_mut().and_then(VecDeque::pop_front)
        {
            actions.extend(self.act_on_key(key));
        }
        if self.opening.is_none() {
            self.held = None;
        }
        actions
    }

    fn act_on_key(&mut self, key: KeyEvent) -> Option<Action> {
        match self.input {
            Input::ConfirmQuit => return self.confirm_quit_key(key),
            Input::Filter => return self.filter_key(key),
            Input::Help => {
                self.help_key(key.code);
                return None;
            }
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
            KeyCode::Char('?') => self.input = Input::Help,
            KeyCode::Char('.') => {
                let show = !self.listing.show_hidden();
                self.listing.set_show_hidden(show);
            }
            KeyCode::Char('s') => return self.send_marked(),
            KeyCode::Char('r') => return self.reread(),
            KeyCode::Char('q') if self.transfer_running() => self.input = Input::ConfirmQuit,
            KeyCode::Char('q') => return Some(Action::Quit),
            KeyCode::Tab => self.show_transfer(),
            KeyCode::Esc => self.listing.set_filter(""),
            _ => {}
        }
        None
    }

    /// On a screen too small for the help, j/k and the like scroll it; any
    /// other key closes it, and does nothing else.
    fn help_key(&mut self, code: KeyCode) {
        let most = self.scroll_rows.help;
        let scroll = self.help_scroll;
        self.help_scroll = match code {
            _ if most == 0 => {
                self.input = Input::Normal;
                0
            }
            KeyCode::Char('j') | KeyCode::Down => scroll + 1,
            KeyCode::Char('k') | KeyCode::Up => scroll.saturating_sub(1),
            // The help is at most a few screens: paging goes to an end.
            KeyCode::Char('g') | KeyCode::Home | KeyCode::PageUp => 0,
            KeyCode::Char('G') | KeyCode::End | KeyCode::PageDown => most,
            _ => {
                self.input = Input::Normal;
                0
            }
        }
        .min(most);
    }

    /// Whether the help is bigger than the screen, and scrolls.
    pub fn help_scrolls(&self) -> bool {
        self.scroll_rows.help > 0
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
            (Phase::Ended { .. } | Phase::Review, code) if is_scroll_key(code) => {
                let rows = if view.phase == Phase::Review {
                    self.scroll_rows.plan
                } else {
                    self.scroll_rows.results
                };
                view.scroll_with(code, rows);
                None
            }
            (Phase::Ended { .. }, KeyCode::Char('r')) if view.can_retry() => {
                let record = view.retry_record(&self.addr);
                let roots = view.roots_to_retry();
                self.status = None;
                let mut again = TransferView::new(roots);
                again.retrying = true;
                self.screen = Screen::Transfer(Box::new(again));
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
            (Phase::Review, KeyCode::Char('i')) if view.can_skip_identical(self.on_clash) => {
                let roots = view.roots.clone();
                let mut again = TransferView::new(roots.clone());
                again.skip_identical = true;
                self.screen = Screen::Transfer(Box::new(again));
                Some(Action::SendSkippingIdentical(roots))
            }
            (Phase::Review, KeyCode::Enter | KeyCode::Char('y')) => {
                let dispatch = view.dispatch();
                view.start_sending(&dispatch);
                Some(Action::Go(dispatch))
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
        self.held.get_or_insert_default();
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
        self.held.get_or_insert_default();
        Some(Action::Open { dir, select })
    }

    /// `r`: the folder on screen is read again, for files that came or
    /// went, and its folders are measured again. Marks keep the sizes they
    /// were given when marked (as a marked file does); the plan measures
    /// everything afresh before anything is sent.
    fn reread(&mut self) -> Option<Action> {
        let dir = self.listing.dir().to_path_buf();
        for entry in self.listing.visible() {
            if entry.is_folder() && !self.marks.contains(&entry.path) {
                self.sizes.forget(&entry.path);
            }
        }
        self.opening = Some(dir.clone());
        Some(Action::Open { dir, select: None })
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
            self.set_status(STILL_RUNNING, false);
            return None;
        }
        // One that ended behind the list is replaced by the new one.
        self.behind = None;
        self.status = None;
        self.screen = Screen::Transfer(Box::new(TransferView::new(paths.clone())));
        Some(Action::Send(paths))
    }

    /// A server was trusted on first use: its fingerprint comes first, so
    /// that it is whole on a narrow footer (it is printed again on exit).
    pub fn trusted_on_first_use(&mut self, trusted: &FirstTrusted) {
        self.set_status(
            format!(
                "{} trusted on first use (the server's certificate): check that ferry-server \
                 printed the same",
                trusted.fingerprint
            ),
            false,
        );
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
                // What was typed ahead was meant for the folder that did not
                // open; on the one still on screen it would mark the wrong
                // entries.
                self.held = None;
                let name = dir.file_name().map_or_else(
                    || dir.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                self.set_status(format!("Cannot open {name}: {reason}"), true);
                return None;
            }
        };
        if dir == self.listing.dir() {
            // The folder on screen, read again: what the user set up on it
            // (filter, cursor, scroll) stays.
            self.listing.replace_entries(entries);
        } else {
            let rows = self.listing.rows();
            self.listing = Listing::new(dir, entries, self.listing.show_hidden());
            self.listing.set_rows(rows);
        }
        if let Some(name) = select {
            // A hidden entry asked for by name (`ferry DIR/.profile`) is
            // shown, rather than the cursor left on another.
            if !self.listing.select_name(&name) && name.starts_with('.') {
                self.listing.set_show_hidden(true);
                self.listing.select_name(&name);
            }
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
        self.server = ServerState::from_probe(result);
    }

    pub fn transfer(&mut self, msg: TransferMsg, now: Instant) {
        let view = match (&mut self.screen, &mut self.behind) {
            (Screen::Transfer(view), _) | (Screen::Browse, Some(view)) => view,
            (Screen::Browse, None) => return,
        };
        match msg {
            TransferMsg::Planned(plan) => view.planned(plan),
            TransferMsg::Checked(verdicts) => {
                // The header should not go on saying "connected" until the
                // next probe when the plan just failed to connect.
                if let Err(reason) = &verdicts
                    && let Some(state) = ServerState::after_failure(reason)
                {
                    self.server = state;
                }
                view.checked(verdicts);
            }
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
                if let Some(state) = view.stop_reason().and_then(ServerState::after_failure) {
                    self.server = state;
                }
                // The notice is out of date now; the status line shows how
                // the transfer ended instead.
                if self
                    .status
                    .as_ref()
                    .is_some_and(|s| s.text == STILL_RUNNING)
                {
                    self.status = None;
                }
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

/// Said when a send is asked for while one runs behind the list.
const STILL_RUNNING: &str = "A transfer is still running (Tab shows it): send more once it ends.";

/// Rows the plan's list and the summary's results get on screen, and how
/// many lines of the help do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrollRows {
    pub plan: usize,
    pub results: usize,
    pub help: usize,
}

impl Default for ScrollRows {
    fn default() -> Self {
        ScrollRows {
            plan: 10,
            results: 10,
            help: 0,
        }
    }
}

/// Keys that move through the plan or the summary.
fn is_scroll_key(code: KeyCode) -> bool {
    matches!(
        code,
        KeyCode::Char('j' | 'k' | 'g' | 'G')
            | KeyCode::Down
            | KeyCode::Up
            | KeyCode::PageDown
            | KeyCode::PageUp
            | KeyCode::Home
            | KeyCode::End
    )
}

#[cfg(test)]
mod tests;
