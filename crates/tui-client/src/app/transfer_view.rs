//! A send as the screens show it: its plan, its progress and its summary,
//! changed only by the sender's events and the user's keys (through [`App`]).
//!
//! [`App`]: super::App

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_proto::{Clash, OnClash, Verdict};
use ratatui::crossterm::event::KeyCode;

use crate::order::natural_path_order;
use crate::transfer::progress::Progress;
use crate::transfer::retry::{Failed, Record};
use crate::transfer::{Dispatch, Event, Item, ItemKind, ItemResult, Plan, Report, Skipped};

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

    /// `offset` bytes counted by [`Meter::resume`] were not there after all.
    fn unresume(&mut self, offset: u64) {
        self.resumed = self.resumed.saturating_sub(offset);
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
    /// Planned from a record of failures (`r`), not from `roots`.
    pub retrying: bool,
    /// This send skips files the server already has, whatever `--on-clash`
    /// said (the user asked on the plan screen).
    pub skip_identical: bool,
    pub phase: Phase,
    pub items: Vec<Item>,
    /// Indices of `items` in the order the plan and the summary list them:
    /// by path as people count ([`natural_path_order`]), where `items` is in the
    /// walk's (and the sending's) byte order.
    pub order: Vec<usize>,
    pub skipped: Vec<Skipped>,
    /// For each item, whether an earlier file of this send goes to the same
    /// name on the server (`a/README` and `b/README`, both picked): the
    /// server, asked about each alone, calls both new, but the second is
    /// stored under a numbered name. (Under overwrite the plan keeps only
    /// the first: see `Plan::keep_one_file_per_name`.)
    pub shares_name: Vec<bool>,
    /// Files of a retry left out because the server already holds them.
    pub already_stored: usize,
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
    /// Files of a retry taken out of the plan because the server already
    /// holds them (not among the counts above).
    pub already_stored: usize,
    /// What was picked but cannot go, found before the server was asked
    /// (a symlink not followed, a name the client refuses, ...).
    pub skipped: usize,
}

impl TransferView {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        TransferView {
            roots,
            retrying: false,
            skip_identical: false,
            phase: Phase::Planning,
            items: Vec::new(),
            order: Vec::new(),
            skipped: Vec::new(),
            shares_name: Vec::new(),
            already_stored: 0,
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

    pub(super) fn planned(&mut self, plan: Plan) {
        self.results = vec![None; plan.items.len()];
        self.resumed = vec![None; plan.items.len()];
        self.items = plan.items;
        let mut claimed = HashSet::new();
        self.shares_name = self
            .items
            .iter()
            .map(|i| matches!(i.kind, ItemKind::File { .. }) && !claimed.insert(i.remote.as_str()))
            .collect();
        let paths: Vec<&str> = self.items.iter().map(|i| i.remote.as_str()).collect();
        self.order = natural_path_order(&paths);
        self.skipped = plan.skipped;
        self.already_stored = plan.already_stored.len();
        if self.phase == Phase::Planning {
            self.phase = Phase::Asking;
        }
    }

    pub(super) fn checked(&mut self, verdicts: Result<Vec<Option<Verdict>>, String>) {
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

    /// Whether the plan can be asked again with skip-identical: the server
    /// found taken names, which it has not compared with these files.
    pub fn can_skip_identical(&self, on_clash: OnClash) -> bool {
        let clashes = matches!(&self.verdicts, Some(Ok(verdicts))
            if verdicts.iter().any(|v| matches!(v,
                Some(Verdict::Clash { .. } | Verdict::Resume { clash: Some(_), .. }))));
        // Only under rename: skip-identical renames the files that differ,
        // which under overwrite would quietly keep both instead.
        clashes && on_clash == OnClash::Rename && !self.skip_identical && !self.retrying
    }

    pub fn plan_counts(&self) -> PlanCounts {
        let mut counts = PlanCounts {
            already_stored: self.already_stored,
            skipped: self.skipped.len(),
            ..PlanCounts::default()
        };
        for (index, item) in self.items.iter().enumerate() {
            let ItemKind::File { size } = item.kind else {
                counts.folders += 1;
                continue;
            };
            match self.verdict(index) {
                Some(Verdict::Identical) => counts.identical += 1,
                Some(Verdict::Refused { .. }) => counts.refused += 1,
                verdict => {
                    let shared = self.shares_name.get(index).copied().unwrap_or(false);
                    match verdict {
                        Some(Verdict::Clash { .. }) => counts.clashes += 1,
                        Some(Verdict::New) if shared => counts.clashes += 1,
                        Some(Verdict::Resume { offset, .. }) => {
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

    /// Moves the first row shown of the plan or the summary by a scroll
    /// key, for a list `rows` high: a page is a screenful less one row,
    /// and the last screenful is as far as it goes.
    pub(super) fn scroll_with(&mut self, code: KeyCode, rows: usize) {
        let page = rows.saturating_sub(1).max(1) as isize;
        let delta = match code {
            KeyCode::Char('j') | KeyCode::Down => 1,
            KeyCode::Char('k') | KeyCode::Up => -1,
            KeyCode::PageDown => page,
            KeyCode::PageUp => -page,
            KeyCode::Char('g') | KeyCode::Home => isize::MIN,
            KeyCode::Char('G') | KeyCode::End => isize::MAX,
            _ => 0,
        };
        // The plan shows every item, the summary those with a result.
        let shown = if self.phase == Phase::Review {
            self.items.len()
        } else {
            self.finished.len()
        };
        let last = (shown + self.skipped.len()).saturating_sub(rows);
        self.scroll = self.scroll.saturating_add_signed(delta).min(last);
    }

    /// What Enter on the plan screen sends: everything but what the server
    /// refused or already has.
    pub(super) fn dispatch(&self) -> Dispatch {
        Dispatch::leaving_out(self.items.clone(), |index| self.verdict(index))
    }

    pub(super) fn start_sending(&mut self, dispatch: &Dispatch) {
        self.phase = Phase::Sending;
        // The summary, later, starts at its top (its failures), not where
        // the plan was left.
        self.scroll = 0;
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

    pub(super) fn apply(&mut self, event: Event, now: Instant) {
        // Before anything moves: the rate does not count from here.
        if let Event::Checking { index, offset } = event {
            self.checking = Some((index, offset));
            return;
        }
        self.checking = None;
        // Summed once, with the first event: every event summing it again
        // made a send of n files cost n² (seconds for 10,000 small files).
        if self.total.is_none() {
            self.total = Some(Meter::new(self.outgoing_bytes(), now));
        }
        let Some(meter) = self.total.as_mut() else {
            return;
        };
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
            Event::NotResumed { index, offset } => {
                meter.unresume(offset);
                if let Some(slot) = self.resumed.get_mut(index) {
                    *slot = None;
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

    pub(super) fn finish(&mut self, report: Report) {
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

    /// The files and empty folders that failed or were not sent.
    fn failed_items(&self) -> impl Iterator<Item = &Item> {
        self.items
            .iter()
            .zip(&self.results)
            .filter(|(_, result)| {
                matches!(
                    result,
                    Some(ItemResult::Failed { .. } | ItemResult::NotSent { .. })
                )
            })
            .map(|(item, _)| item)
    }

    /// Whether `r` on the summary has something to send again.
    pub fn can_retry(&self) -> bool {
        self.is_ended() && self.failed_items().next().is_some()
    }

    /// The files to send again, each to where it was going.
    pub(super) fn retry_record(&self, server: &str) -> Record {
        Record {
            server: server.to_string(),
            files: self
                .failed_items()
                .map(|item| Failed {
                    local: item.local.clone(),
                    remote: item.remote.clone(),
                    folder: item.kind == ItemKind::Folder,
                })
                .collect(),
            // The picker plans everything before it sends.
            unwalked: Vec::new(),
        }
    }

    /// The picks a retry can complete: those with nothing skipped under
    /// them (what was skipped is not retried, so they stay marked).
    pub(super) fn roots_to_retry(&self) -> Vec<PathBuf> {
        self.roots
            .iter()
            .filter(|root| !self.skipped.iter().any(|s| s.local.starts_with(root)))
            .cloned()
            .collect()
    }

    /// The picked paths that went over entirely: everything planned under
    /// them is stored. Their marks can go; the rest stay marked for another
    /// try. What was skipped under a pick (a symlink, a folder that cannot
    /// be read) does not keep its mark: sending the pick again would only
    /// store every other file of it a second time, as `name (1)`, and
    /// skip the same paths again. The summary has listed them.
    pub(super) fn fully_sent_roots(&self) -> Vec<PathBuf> {
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
            })
            .cloned()
            .collect()
    }
}
