//! `ferry send`: a transfer without the picker, for scripts and quick sends.
//!
//! Shows a progress bar on stderr when stderr is a terminal, prints one line
//! per file that did not simply land under its own name, and a summary.
//! Succeeds only when the server confirmed every file with a matching digest.
//! `--dry-run` prints the server's verdict on every file instead, and
//! `--retry-failed` sends again what the last transfer could not.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use ferry_proto::path::escape_for_display;
use ferry_proto::{Clash, OnClash, Verdict};
use humansize::{BINARY, format_size};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;

use crate::transfer::plan::{self, Planned};
use crate::transfer::preflight::preflight;
use crate::transfer::progress::format_duration;
use crate::transfer::{
    Dispatch, Event, Feed, ItemKind, ItemResult, Options, Plan, Report, Reporter, Skipped, link,
    retry, send, send_feed,
};
use crate::words::{plural, plural_as};

/// Prints a line on stdout. Output into a closed pipe (`| head -1`) is
/// not an error worth a panic: what is left is simply not shown.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// [`out!`] for stderr.
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Kept parts from this size on take long enough to read that the wait is
/// announced.
const CHECKING_NOTE_FROM: u64 = 1 << 30;

/// What `ferry send` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub paths: Vec<PathBuf>,
    pub follow_links: bool,
    /// Only ask the server what it would do.
    pub dry_run: bool,
    /// Send the files the last transfer could not, instead of `paths`.
    pub retry_failed: bool,
}

/// How `ferry send` ended, for its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Everything picked was confirmed stored (or, for a dry run, would be
    /// accepted).
    Done,
    /// Something was not; what, is printed.
    Failed,
    /// Ctrl-C or a signal stopped it; what was not sent is remembered.
    Interrupted,
}

impl Finish {
    fn from_ok(ok: bool) -> Finish {
        if ok { Finish::Done } else { Finish::Failed }
    }
}

/// Carries out `request` and prints what happened.
pub fn run(request: &Request, options: &Options) -> Finish {
    let finish = carry_out(request, options);
    // Trust given on a connection made before any transfer (a plan's) or
    // one that then failed has not been told yet.
    announce_first_trusted(None);
    finish
}

/// Tells the user of each server trusted on first use since the last call:
/// above the progress bar when there is one.
fn announce_first_trusted(bar: Option<&ProgressBar>) {
    for trusted in link::take_first_trusted() {
        let line = format!("ferry: {}", trusted.describe());
        match bar {
            Some(bar) => note(bar, line),
            None => err!("{line}"),
        }
    }
}

fn carry_out(request: &Request, options: &Options) -> Finish {
    // Only a plain send can start before the walk is over: the others need
    // the whole plan first (to ask the server about every file, or to read
    // the last transfer's record).
    if !request.retry_failed && !request.dry_run && options.on_clash != OnClash::SkipIdentical {
        return stream_send(request, options);
    }
    // The paths a stopped send had not walked through: a retry cannot
    // send what was never found, and says so.
    let mut unwalked = Vec::new();
    let mut plan = if request.retry_failed {
        match retry::load(&options.addr) {
            Ok(Some(record)) => {
                unwalked = record.unwalked.clone();
                if record.files.is_empty() {
                    note_unwalked(&options.addr, &unwalked);
                    return Finish::from_ok(unwalked.is_empty());
                }
                retry::plan(&record)
            }
            Ok(None) => {
                out!(
                    "nothing to retry: the last transfer to {} sent everything",
                    options.addr
                );
                return Finish::Done;
            }
            Err(e) => {
                err!("ferry: {e}");
                return Finish::Failed;
            }
        }
    } else {
        Plan::build(&request.paths, request.follow_links)
    };
    if options.on_clash == OnClash::Overwrite {
        plan.keep_one_file_per_name();
    }
    if request.retry_failed && !request.dry_run {
        // Ctrl-C meanwhile ends ferry as usual: nothing has been sent.
        // Nothing was sent; the record stays for the next try.
        if let Err(e) = retry::drop_already_stored(&mut plan, options, &AtomicBool::new(false))
            && !plan.items.is_empty()
        {
            err!("ferry: {e}");
            return Finish::Failed;
        }
        announce_first_trusted(None);
        let there = plan.already_stored.len();
        if there > 0 {
            err!(
                "ferry: {} already on the server, identical, not sent again",
                plural(there, "file")
            );
        }
        if there > 0 && plan.items.is_empty() {
            out!("nothing to retry: every file is already on the server");
            // Forgets them, unless a walk cut short is still to finish.
            if let Err(e) = retry::remember(&options.addr, &[], &Report::default(), &unwalked) {
                err!("ferry: cannot keep the list of failed files for --retry-failed: {e}");
            }
            note_unwalked(&options.addr, &unwalked);
            return Finish::from_ok(unwalked.is_empty() && report_skipped(&plan));
        }
    }
    if request.dry_run {
        report_skipped(&plan);
        let ok = dry_run(&plan, options) && plan.skipped.iter().all(|s| s.by_choice);
        note_unwalked(&options.addr, &unwalked);
        return Finish::from_ok(ok && unwalked.is_empty());
    }
    let finish = send_plan(&plan, options, &unwalked);
    if finish == Finish::Interrupted || unwalked.is_empty() {
        return finish;
    }
    // Whatever went, the retry did not cover those paths.
    note_unwalked(&options.addr, &unwalked);
    Finish::Failed
}

/// Names the paths an earlier send stopped walking, if any, and how to
/// send the files in them it never found.
fn note_unwalked(addr: &str, unwalked: &[PathBuf]) {
    if unwalked.is_empty() {
        return;
    }
    let paths: Vec<String> = unwalked
        .iter()
        .map(|p| escape_for_display(&p.to_string_lossy()))
        .collect();
    err!(
        "ferry: the last transfer to {addr} was stopped before it found every file in {}; \
         sending those paths again with --on-clash skip-identical sends only what is missing",
        paths.join(", ")
    );
}

/// Prints what cannot be sent; returns whether all of it was left out by
/// choice (symlinks) rather than by a problem.
fn report_skipped(plan: &Plan) -> bool {
    for skipped in &plan.skipped {
        err!("{}", skipped_line(skipped));
    }
    plan.skipped.iter().all(|s| s.by_choice)
}

fn skipped_line(skipped: &Skipped) -> String {
    let what = if skipped.by_choice {
        "skipped"
    } else {
        "cannot send"
    };
    format!(
        "ferry: {what} {}: {}",
        escape_for_display(&skipped.local.to_string_lossy()),
        skipped.reason
    )
}

/// Sends while the paths are still being walked: the first files are on
/// their way (and the server storing them) before the last are found. The
/// bar's total grows as the walk goes; paths that cannot be sent are
/// named as they are met.
fn stream_send(request: &Request, options: &Options) -> Finish {
    let cancel = interrupt_flag();
    let bar = progress_bar(0);
    let files = Arc::new(AtomicUsize::new(0));
    let (feed, writer) = Feed::open();
    let walker =
        {
            let paths = request.paths.clone();
            let follow_links = request.follow_links;
            // Two files for one name must not both go when the second would
            // replace the first.
            let one_per_name = options.on_clash == OnClash::Overwrite;
            let bar = bar.clone();
            let files = Arc::clone(&files);
            let cancel = Arc::clone(&cancel);
            thread::spawn(move || {
                let mut skipped = Vec::new();
                let walked_all =
                    plan::stream(&paths, follow_links, one_per_name, &cancel, |planned| {
                        match planned {
                            Planned::Item(item) => {
                                if matches!(item.kind, ItemKind::File { .. }) {
                                    files.fetch_add(1, Ordering::Relaxed);
                                    bar.inc_length(item.size());
                                }
                                writer.push(item);
                            }
                            Planned::Skipped(s) => {
                                note(&bar, skipped_line(&s));
                                skipped.push(s);
                            }
                        }
                    });
                (skipped, walked_all)
            })
        };
    let reporter = {
        let feed = Arc::clone(&feed);
        bar_reporter(
            &bar,
            move |index| feed.peek(index, |item| item.remote.clone()),
            move || files.load(Ordering::Relaxed),
        )
    };
    let mut report = send_feed(&feed, options, &cancel, reporter);
    let (skipped, walked_all) = walker.join().unwrap_or_else(|_| {
        let failed = Skipped {
            local: request.paths.first().cloned().unwrap_or_default(),
            reason: "the walk through the folders failed".into(),
            by_choice: false,
        };
        note(&bar, skipped_line(&failed));
        (vec![failed], false)
    });
    bar.finish_and_clear();
    let plan = Plan {
        items: feed.whole(),
        skipped,
        already_stored: Vec::new(),
    };
    // Stopped early, the sender did not wait for what the walk still
    // handed on as it stopped.
    report.results.resize(
        plan.items.len(),
        ItemResult::NotSent {
            reason: "cancelled".into(),
        },
    );
    if plan.items.is_empty() && !report.cancelled {
        err!("ferry: nothing to send");
        return Finish::Failed;
    }
    // The retry list can only name files that were found.
    let rest = if walked_all {
        RETRY_SENDS_THE_REST
    } else {
        "files not found yet are not in the list for --retry-failed: sending the same \
         paths again with --on-clash skip-identical sends only what is missing"
    };
    if !walked_all && !report.cancelled {
        err!("ferry: the walk stopped before every file was found; {rest}");
    }
    let ok = walked_all && plan.skipped.iter().all(|s| s.by_choice);
    let unwalked = if walked_all {
        Vec::new()
    } else {
        request.paths.clone()
    };
    conclude(&plan, options, &report, ok, rest, &unwalked)
}

/// Sends a plan with a progress bar, then prints the outcome. `unwalked`
/// is kept in the retry record (see [`conclude`]).
fn send_plan(plan: &Plan, options: &Options, unwalked: &[PathBuf]) -> Finish {
    let ok = report_skipped(plan);
    if plan.items.is_empty() {
        // Everything picked was left out (a symlink not followed, say): a
        // script that sent nothing must not read it as success.
        err!("ferry: nothing to send");
        return Finish::Failed;
    }
    // First, so that Ctrl-C while files are hashed for the plan stops as
    // cleanly as during the send.
    let cancel = interrupt_flag();
    let dispatch = dispatch(plan, options, &cancel);
    let outgoing = dispatch.outgoing();
    let bar = progress_bar(outgoing.iter().map(|i| i.size()).sum());
    let names: Vec<String> = plan.items.iter().map(|i| i.remote.clone()).collect();
    let files = plan.file_count();
    let reporter = bar_reporter(&bar, move |index| names.get(index).cloned(), move || files);
    // Events come numbered by what goes out; the names are the plan's.
    let renumbered: Reporter = {
        let dispatch = dispatch.clone();
        Arc::new(move |event: Event| reporter(dispatch.event(event)))
    };
    let sent = send(&outgoing, options, &cancel, renumbered);
    let report = dispatch.report(sent);
    bar.finish_and_clear();
    conclude(plan, options, &report, ok, RETRY_SENDS_THE_REST, unwalked)
}

const RETRY_SENDS_THE_REST: &str = "ferry send --retry-failed sends the rest";

/// After a send: remembers what to retry, prints the outcome, and says how
/// `ferry send` ends. `ok`: nothing was left out by a problem.
/// `rest` says how to send what an interruption left. `unwalked`: paths
/// whose walk was cut short, for the record to name.
fn conclude(
    plan: &Plan,
    options: &Options,
    report: &Report,
    ok: bool,
    rest: &str,
    unwalked: &[PathBuf],
) -> Finish {
    if let Err(e) = retry::remember(&options.addr, &plan.items, report, unwalked) {
        err!("ferry: cannot keep the list of failed files for --retry-failed: {e}");
    }

    print_outcomes(plan, report);
    if report.cancelled {
        err!("ferry: interrupted ({rest})");
        return Finish::Interrupted;
    }
    Finish::from_ok(ok && report.all_ok())
}

/// Moves `bar` with the sender's events. `name_of` names an item by its
/// index, and `files` counts the files to send (so far, while a walk goes
/// on).
fn bar_reporter(
    bar: &ProgressBar,
    name_of: impl Fn(usize) -> Option<String> + Send + Sync + 'static,
    files: impl Fn() -> usize + Send + Sync + 'static,
) -> Reporter {
    let bar = bar.clone();
    // Sent is not stored: the bar moves with bytes sent, its message
    // counts the files the server has confirmed on disk.
    let stored = AtomicUsize::new(0);
    // The file going out now, for the message to name.
    let current = AtomicUsize::new(usize::MAX);
    // Bytes the server already had: the bar counts only what moves, so
    // a resume does not look like a burst of speed.
    let resumed = AtomicU64::new(0);
    let shrink = |bar: &ProgressBar, by: i64| {
        if let Some(len) = bar.length() {
            bar.set_length(len.saturating_add_signed(-by));
        }
    };
    Arc::new(move |event: Event| match event {
        // Only a bar that shows needs its message: formatting one per
        // file costs a stream of small files a few percent.
        Event::Started { index } if !bar.is_hidden() => {
            current.store(index, Ordering::Relaxed);
            let done = stored.load(Ordering::Relaxed);
            show_stored(&bar, done, files(), name_of(index).as_ref());
        }
        Event::Resumed { index, offset } => {
            resumed.fetch_add(offset, Ordering::Relaxed);
            shrink(&bar, i64::try_from(offset).unwrap_or(i64::MAX));
            if let Some(name) = name_of(index) {
                note(
                    &bar,
                    format!(
                        "ferry: {}: resumed at {}",
                        escape_for_display(&name),
                        format_size(offset, BINARY)
                    ),
                );
            }
        }
        Event::NotResumed { index, offset } => {
            resumed.fetch_sub(
                offset.min(resumed.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            shrink(&bar, -i64::try_from(offset).unwrap_or(i64::MAX));
            if let Some(name) = name_of(index) {
                note(
                    &bar,
                    format!(
                        "ferry: {}: the server could not use what it kept; sending it whole",
                        escape_for_display(&name)
                    ),
                );
            }
        }
        // Reading a big kept part takes a while before anything moves.
        Event::Checking { index, offset } if offset >= CHECKING_NOTE_FROM => {
            if let Some(name) = name_of(index) {
                note(
                    &bar,
                    format!(
                        "ferry: {}: reading the {} the server already has, to check it…",
                        escape_for_display(&name),
                        format_size(offset, BINARY)
                    ),
                );
            }
        }
        Event::Progress { total_sent, .. } => {
            bar.set_position(total_sent.saturating_sub(resumed.load(Ordering::Relaxed)))
        }
        Event::Finished { result, .. } => {
            if matches!(result, ItemResult::Stored { .. }) {
                // Acks come after the files they confirm: the count
                // moves with them, not only when the next file starts.
                let done = stored.fetch_add(1, Ordering::Relaxed) + 1;
                if !bar.is_hidden() {
                    show_stored(
                        &bar,
                        done,
                        files(),
                        name_of(current.load(Ordering::Relaxed)).as_ref(),
                    );
                }
            }
        }
        Event::Connected { .. } => announce_first_trusted(Some(&bar)),
        Event::Started { .. } | Event::Checking { .. } => {}
    })
}

/// What goes out. With `skip-identical` the server is asked first which
/// files it already has (each file is hashed here for that), so that those
/// are not sent at all, and neither are files it would refuse; otherwise
/// everything goes, and the server decides file by file.
fn dispatch(plan: &Plan, options: &Options, cancel: &AtomicBool) -> Dispatch {
    let everything = || Dispatch::leaving_out(plan.items.clone(), |_| None);
    if options.on_clash != OnClash::SkipIdentical {
        return everything();
    }
    // Reading every file first can take a while: say what the wait is.
    err!(
        "ferry: reading {}, {}, to find those the server already has...",
        plural(plan.file_count(), "file"),
        format_size(plan.total_bytes(), BINARY)
    );
    let asked = preflight(&plan.items, options, |_| true, true, cancel);
    announce_first_trusted(None);
    match asked {
        Ok(verdicts) => Dispatch::leaving_out(plan.items.clone(), |index| {
            verdicts.get(index).and_then(Option::as_ref)
        }),
        // Interrupted: the send that follows stops at once and says so.
        Err(_) if cancel.load(Ordering::Relaxed) => everything(),
        Err(e) => {
            err!("ferry: cannot ask the server which files it has ({e}); sending them all");
            everything()
        }
    }
}

/// A flag that Ctrl-C (or SIGTERM, or the terminal closing) raises, so the
/// transfer stops cleanly: what was not sent is reported and remembered for
/// `--retry-failed`. A second Ctrl-C exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        // Registered first, so it sees the flag as it was before this signal.
        let exits = flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag));
        let raises = flag::register(signal, Arc::clone(&flag));
        if let Err(e) = exits.and(raises) {
            err!("ferry: cannot catch Ctrl-C ({e}): it will stop ferry without a summary");
        }
    }
    flag
}

fn progress_bar(total: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let style = ProgressStyle::with_template(
        "{bar:30.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One line per file whose outcome a person must know (a new name, a
/// failure), then the summary, which counts the rest.
fn print_outcomes(plan: &Plan, report: &Report) {
    let (mut stored, mut failed, mut bytes) = (0usize, 0usize, 0u64);
    // Of `failed`, the empty folders (which are not counted as files).
    let mut failed_folders = 0usize;
    let (mut replaced, mut identical) = (0usize, 0usize);
    // Empty folders made: a send of nothing but those must still say so.
    let mut folders = 0usize;
    let mut problems = Problems::default();
    let mut renamed: Vec<(String, String)> = Vec::new();
    for (item, result) in plan.items.iter().zip(&report.results) {
        // Made only for the lines printed: most files print none.
        let name = || escape_for_display(&item.remote);
        match result {
            ItemResult::Stored {
                stored_as,
                clash,
                bytes: n,
            } => {
                stored += 1;
                bytes += n;
                match clash {
                    Clash::None => {}
                    Clash::Renamed => renamed.push((name(), escape_for_display(stored_as))),
                    Clash::Overwritten => replaced += 1,
                    Clash::Identical => identical += 1,
                }
            }
            ItemResult::Folder { .. } => folders += 1,
            ItemResult::Failed { reason } => {
                failed += 1;
                problems.add("FAILED", reason, &item.remote);
            }
            ItemResult::NotSent { reason } => {
                failed += 1;
                problems.add("not sent", reason, &item.remote);
            }
        }
        if !result.is_ok() && item.kind == ItemKind::Folder {
            failed_folders += 1;
        }
    }
    // A few renames are worth a line each; a whole folder sent again is
    // worth one.
    for (name, stored_as) in renamed.iter().take(Problems::NAMED) {
        err!("ferry: {name}: name taken, stored as {stored_as}");
    }
    if renamed.len() > Problems::NAMED {
        err!(
            "ferry: ... and {} whose name was taken, stored under a numbered name",
            plural(renamed.len() - Problems::NAMED, "more file")
        );
    }
    problems.print();
    let secs = report.elapsed.as_secs_f64().max(1e-6);
    let rate = format_size((report.bytes_sent as f64 / secs) as u64, BINARY);
    let files = plan.file_count();
    let took = if report.elapsed < Duration::from_secs(60) {
        format!("{secs:.2}s")
    } else {
        format_duration(report.elapsed)
    };
    let mut notes = String::new();
    if report.bytes_resumed > 0 {
        notes.push_str(&format!(
            "; {} of that was already there (resumed), not sent again",
            format_size(report.bytes_resumed, BINARY)
        ));
    }
    // Counted here too, for whoever reads stdout only: the names are on
    // stderr.
    if !renamed.is_empty() {
        notes.push_str(&format!(
            "; {} stored under a new name (name taken)",
            renamed.len()
        ));
    }
    if replaced > 0 {
        notes.push_str(&format!("; {replaced} replaced an existing file"));
    }
    if identical > 0 {
        notes.push_str(&format!("; {identical} already there, identical"));
    }
    // Paths that could not even be planned (missing, unreadable) were
    // named above; the summary must not read as if all went well.
    let unsendable = plan.skipped.iter().filter(|s| !s.by_choice).count();
    let unsendable_note = match unsendable {
        0 => String::new(),
        n => format!("; {} could not be sent", plural(n, "path")),
    };
    // Identical files the server already had are counted in the notes,
    // not as stored by this send.
    let stored_now = stored - identical;
    let what = match (stored_now, folders) {
        (_, 0) => plural(stored_now, "file"),
        (0, _) => plural(folders, "empty folder"),
        _ => format!(
            "{} and {}",
            plural(stored_now, "file"),
            plural(folders, "empty folder")
        ),
    };
    if failed == 0 && unsendable == 0 {
        out!(
            "stored {what}, {} in {took} ({rate}/s sent), all verified{notes}",
            format_size(bytes, BINARY)
        );
    } else if failed == 0 {
        out!(
            "stored {what}, {} in {took} ({rate}/s sent), verified{notes}{unsendable_note}, see above",
            format_size(bytes, BINARY)
        );
    } else {
        // What --retry-failed would send again, apart from the paths it
        // could not read, which it cannot help with.
        let not_stored = match (failed - failed_folders, failed_folders) {
            (files, 0) => plural(files, "file"),
            (0, folders) => plural(folders, "empty folder"),
            (files, folders) => format!(
                "{} and {}",
                plural(files, "file"),
                plural(folders, "empty folder")
            ),
        };
        out!(
            "{stored} of {} stored and verified{notes}; not stored: {not_stored}{unsendable_note}. \
             See above; ferry send --retry-failed sends what was not stored",
            plural(files, "file")
        );
    }
}

/// Files that failed or were not sent, grouped by what happened to them: a
/// server that cannot be reached should cost one line, not one per file.
#[derive(Debug, Default)]
struct Problems {
    /// (what, reason) in the order first seen, with the files it hit.
    groups: Vec<((&'static str, String), Vec<String>)>,
}

impl Problems {
    /// Files named one by one for each reason before the rest are counted.
    const NAMED: usize = 3;

    fn add(&mut self, what: &'static str, reason: &str, file: &str) {
        let key = (what, reason.to_string());
        match self.groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, files)) => files.push(file.to_string()),
            None => self.groups.push((key, vec![file.to_string()])),
        }
    }

    fn print(&self) {
        for ((what, reason), files) in &self.groups {
            // Names and reasons (which can come from the server) print inert.
            let reason = escape_for_display(reason);
            for file in files.iter().take(Self::NAMED) {
                err!("ferry: {}: {what}: {reason}", escape_for_display(file));
            }
            if files.len() > Self::NAMED {
                err!(
                    "ferry: ... and {} more {what}: {reason}",
                    files.len() - Self::NAMED
                );
            }
        }
    }
}

/// Asks the server about every file and prints its verdicts. Returns
/// whether every file would be accepted.
fn dry_run(plan: &Plan, options: &Options) -> bool {
    let verdicts = match preflight(
        &plan.items,
        options,
        |_| true,
        true,
        &AtomicBool::new(false),
    ) {
        Ok(v) => v,
        Err(e) => {
            err!("ferry: {e}");
            return false;
        }
    };
    if plan.file_count() == 0 {
        // Only folders: nothing to ask about, but a plan that says all is
        // well must at least have found the server.
        if let Err(e) = crate::transfer::handshake::connect(options) {
            err!("ferry: {e}");
            return false;
        }
    }
    announce_first_trusted(None);
    let mut counts: [usize; 6] = [0; 6];
    let mut claimed = HashSet::new();
    for (item, verdict) in plan.items.iter().zip(&verdicts) {
        let name = escape_for_display(&item.remote);
        // The server judged each file alone: of two going to one name, the
        // later gets a number.
        let shared =
            matches!(item.kind, ItemKind::File { .. }) && !claimed.insert(item.remote.as_str());
        let line = match verdict {
            None if item.kind == ItemKind::Folder => format!("folder     {name}/"),
            Some(
                Verdict::New
                | Verdict::Clash {
                    result: Clash::Renamed,
                    ..
                },
            ) if shared => {
                counts[2] += 1;
                format!(
                    "rename     {name} (another file of this send has this name: it gets a number)"
                )
            }
            None => {
                counts[5] += 1;
                format!("UNKNOWN    {name}: the server gave no verdict on it")
            }
            Some(Verdict::New) => {
                counts[0] += 1;
                format!("new        {name}")
            }
            Some(Verdict::Identical) => {
                counts[1] += 1;
                format!("identical  {name} (nothing to send)")
            }
            Some(Verdict::Clash {
                result: Clash::Overwritten,
                ..
            }) => {
                counts[2] += 1;
                format!("overwrite  {name}")
            }
            Some(Verdict::Clash { stored_as, .. }) => {
                counts[2] += 1;
                format!("rename     {name} -> {}", escape_for_display(stored_as))
            }
            Some(Verdict::Resume {
                offset,
                clash,
                stored_as,
            }) => {
                counts[3] += 1;
                let then = match (clash, stored_as) {
                    (Some(Clash::Overwritten), _) => " (overwrite)".to_string(),
                    (Some(Clash::Renamed), Some(to)) => {
                        format!(" -> {}", escape_for_display(to))
                    }
                    _ => String::new(),
                };
                format!(
                    "resume     {name} at {}{then}",
                    format_size(*offset, BINARY)
                )
            }
            Some(Verdict::Refused { message, .. }) => {
                counts[4] += 1;
                format!("REFUSED    {name}: {}", escape_for_display(message))
            }
        };
        out!("{line}");
    }
    let [new, identical, clash, resume, refused, unknown] = counts;
    let unsendable = plan.skipped.iter().filter(|s| !s.by_choice).count();
    let cannot = if unsendable > 0 {
        format!(
            ", {} that cannot be sent (see above)",
            plural(unsendable, "path")
        )
    } else {
        String::new()
    };
    let unknown_note = if unknown > 0 {
        format!(", {unknown} with no verdict")
    } else {
        String::new()
    };
    out!(
        "plan: {new} new, {identical} identical, {}, {resume} to resume, \
         {refused} refused{unknown_note}{cannot}; nothing was sent",
        plural_as(clash, "name clash", "name clashes")
    );
    refused == 0 && unknown == 0
}

/// The bar's message: files confirmed so far, and the one going out.
fn show_stored(bar: &ProgressBar, done: usize, files: usize, sending: Option<&String>) {
    if let Some(name) = sending {
        bar.set_message(format!(
            "{done}/{files} stored · {}",
            escape_for_display(name)
        ));
    }
}

/// Prints a line above the progress bar, or on its own when the bar is
/// hidden (which would swallow it).
fn note(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        err!("{line}");
    } else {
        bar.println(line);
    }
}
