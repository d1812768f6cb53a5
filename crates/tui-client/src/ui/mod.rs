//! Drawing: a pure function of the [`App`] (and the time, for rates and
//! ETAs) onto a ratatui [`Frame`].
//!
//! The screen is a header (folder and server), a body (the folder list, the
//! plan of a send, or the transfer panel while sending and until its
//! summary is dismissed) and a two-line footer (status or totals, then the
//! keys that work now).

mod browser;
mod plan;
mod transfer;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ferry_proto::path::escape_for_display;
use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::app::{App, Input, Phase, Screen, ScrollRows, ServerState};
use crate::transfer::Skipped;

pub fn draw(frame: &mut Frame, app: &App, now: Instant) {
    let areas = Areas::of(frame.area());
    draw_header(frame, areas.header, app);
    match &app.screen {
        Screen::Browse => browser::draw(frame, areas.body, app),
        Screen::Transfer(view) => match view.phase {
            Phase::Planning | Phase::Asking | Phase::Review => {
                plan::draw(frame, areas.body, app, view)
            }
            _ => transfer::draw(frame, areas.body, app, view, now),
        },
    }
    draw_footer(frame, areas.footer, app, now);
    if app.input == Input::Help {
        draw_help(frame, areas.body, app.help_scroll);
    }
}

/// Every key of the folder list, with what it does: the footer has room
/// for the most used only.
const BROWSE_KEYS: [(&str, &str); 15] = [
    ("j k  ↓ ↑", "move down / up"),
    ("g G  Home End", "first / last entry"),
    ("PageUp PageDown", "move by a screenful"),
    ("l  →  Enter", "open the folder under the cursor"),
    ("h  ←  Backspace", "go to the parent folder"),
    ("Space", "mark or unmark, and move down"),
    ("a", "mark every visible entry"),
    ("u", "clear all marks, in every folder"),
    ("/", "filter as you type (Enter keeps, Esc clears)"),
    (".", "show or hide hidden files"),
    ("r", "read this folder again, and measure its folders"),
    (
        "Enter on a file",
        "send the marked entries, or just this file",
    ),
    ("s", "send the marked entries"),
    ("Tab", "the transfer behind the list, or its summary"),
    ("q  Ctrl-C", "quit (asks while sending) / quit at once"),
];

/// The keys, in a box over the list, scrolled down by `scroll` lines when
/// they do not all fit.
fn draw_help(frame: &mut Frame, area: Rect, scroll: usize) {
    let help = Help::in_area(area);
    let first = scroll.min(help.hidden());
    let title = if help.hidden() > 0 {
        " Keys (j/k scroll, other keys close) "
    } else {
        " Keys (any key closes) "
    };
    frame.render_widget(Clear, help.area);
    frame.render_widget(
        Paragraph::new(help.lines)
            .block(Block::bordered().title(title))
            .scroll((u16::try_from(first).unwrap_or(u16::MAX), 0)),
        help.area,
    );
}

/// The help box laid out for the room there is.
struct Help {
    lines: Vec<Line<'static>>,
    /// Where the box goes, centred, border included.
    area: Rect,
}

impl Help {
    /// One line per key when that fits the width; else the key on one line
    /// and what it does under it, so that a narrow terminal still reads
    /// every word that fits.
    fn in_area(area: Rect) -> Help {
        let room = usize::from(area.width.saturating_sub(2));
        let key_width = BROWSE_KEYS
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let one_line: Vec<Line<'static>> = BROWSE_KEYS
            .iter()
            .map(|(key, what)| {
                Line::from(vec![
                    Span::styled(format!(" {key:<key_width$}  "), Style::new().bold()),
                    Span::raw(*what),
                ])
            })
            .collect();
        let widest = one_line.iter().map(Line::width).max().unwrap_or(0);
        let lines = if widest < room {
            one_line
        } else {
            BROWSE_KEYS
                .iter()
                .flat_map(|(key, what)| {
                    [
                        Line::styled(format!(" {key}"), Style::new().bold()),
                        Line::raw(cut_end(&format!("   {what}"), room)),
                    ]
                })
                .collect()
        };
        let width =
            (lines.iter().map(Line::width).max().unwrap_or(0) + 3).min(usize::from(area.width));
        let height = (lines.len() + 2).min(usize::from(area.height));
        let [row] = Layout::vertical([Constraint::Length(height as u16)])
            .flex(Flex::Center)
            .areas(area);
        let [boxed] = Layout::horizontal([Constraint::Length(width as u16)])
            .flex(Flex::Center)
            .areas(row);
        Help { lines, area: boxed }
    }

    /// Lines below the box's bottom edge: how far it can scroll.
    fn hidden(&self) -> usize {
        self.lines
            .len()
            .saturating_sub(usize::from(self.area.height.saturating_sub(2)))
    }
}

/// How many list rows fit on a screen of this size, so that paging moves
/// by what is actually visible.
pub fn list_rows(screen: Rect) -> usize {
    browser::rows_inside(Areas::of(screen).body)
}

/// How many rows the plan and the summary show on a screen of this size.
pub fn scroll_rows(screen: Rect) -> ScrollRows {
    let body = Areas::of(screen).body;
    ScrollRows {
        plan: plan::list_rows(body),
        results: transfer::results_rows(body),
        help: Help::in_area(body).hidden(),
    }
}

struct Areas {
    header: Rect,
    body: Rect,
    footer: Rect,
}

impl Areas {
    fn of(area: Rect) -> Areas {
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(2),
        ])
        .areas(area);
        Areas {
            header,
            body,
            footer,
        }
    }
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App) {
    let (mark, state, color) = match &app.server {
        ServerState::Checking => ("…", "checking".to_string(), Color::Yellow),
        ServerState::Connected(name) => ("●", format!("connected: {name}"), Color::Green),
        ServerState::Unreachable(reason) => (
            "○",
            format!("unreachable: {}", without_addr(reason, &app.addr)),
            Color::Red,
        ),
        ServerState::Refused(reason) => ("○", reason.clone(), Color::Red),
    };
    // The server state gets up to three fifths of the line; a reason too
    // long for it loses its hint in parentheses first, then its end.
    let room = usize::from(area.width * 3 / 5)
        .saturating_sub(Span::raw(app.addr.as_str()).width() + mark.chars().count() + 3);
    let server = Line::from(vec![
        Span::raw(format!("{} ", app.addr)),
        Span::styled(
            format!("{mark} {} ", fit_state(&state, room)),
            Style::new().fg(color),
        ),
    ]);
    // The path matters most while browsing; the server state gets what is
    // left, up to three fifths of the line.
    let server_width = (server.width() as u16).min(area.width * 3 / 5);
    let [left, right] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(server_width)])
        .spacing(1)
        .areas(area);
    // On a narrow screen the end of the path (where one is) is kept.
    let room = usize::from(left.width).saturating_sub(" ferry  ".len());
    let dir = escape_for_display(&app.listing.dir().display().to_string());
    let path = Line::from(vec![
        Span::styled(
            " ferry ",
            Style::new().add_modifier(Modifier::BOLD).reversed(),
        ),
        Span::raw(" "),
        Span::styled(keep_end(&dir, room), Style::new().bold()),
    ]);
    frame.render_widget(Paragraph::new(path), left);
    frame.render_widget(Paragraph::new(server).right_aligned(), right);
}

/// A path left out of a send, and why, as the plan and the summary list it.
/// `reason` without the server's address it may begin with ("cannot reach
/// ADDR: ...", "handshake with ADDR failed: ..."): the header shows the
/// address already, and a line cut short should lose that, not the cause.
fn without_addr<'r>(reason: &'r str, addr: &str) -> &'r str {
    let rest = reason
        .strip_prefix("cannot reach ")
        .or_else(|| reason.strip_prefix("handshake with "))
        .and_then(|r| r.strip_prefix(addr));
    rest.and_then(|r| r.strip_prefix(": ").or_else(|| r.strip_prefix(" failed: ")))
        .unwrap_or(reason)
}

/// A row for something that will not be sent, named the way the rows of
/// what is sent are: from the picked folder's own name down, fitted to
/// `room` columns.
fn skipped_line(s: &Skipped, roots: &[PathBuf], room: usize) -> Line<'static> {
    let name = roots
        .iter()
        .find_map(|root| {
            let below = s.local.strip_prefix(root).ok()?;
            let top = Path::new(root.file_name()?);
            Some(match below.as_os_str().is_empty() {
                true => top.to_path_buf(),
                false => top.join(below),
            })
        })
        .unwrap_or_else(|| s.local.clone());
    let mark = "– ";
    let (name, note) = fit_name_and_note(
        &escape_for_display(&name.to_string_lossy()),
        &format!("  skipped: {}", s.reason),
        room.saturating_sub(mark.len()),
    );
    Line::from(vec![
        Span::styled(mark, Style::new().dark_gray()),
        Span::raw(name),
        Span::styled(note, Style::new().dark_gray()),
    ])
}

/// `text` cut to `room` columns by a `…` in its middle, when it is longer:
/// a file name keeps its start and its extension.
fn cut_middle(text: &str, room: usize) -> String {
    if Span::raw(text).width() <= room || room < 3 {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let width = |c: &char| Span::raw(c.to_string()).width();
    // The end gets at least half: that is where the extension is.
    let (mut head, mut tail) = (0, chars.len());
    let (mut head_width, mut tail_width) = (0, 0);
    let half = (room - 1) / 2;
    while head < tail && head_width + width(&chars[head]) <= half {
        head_width += width(&chars[head]);
        head += 1;
    }
    while tail > head && head_width + tail_width + width(&chars[tail - 1]) < room {
        tail -= 1;
        tail_width += width(&chars[tail]);
    }
    chars[..head]
        .iter()
        .chain(std::iter::once(&'…'))
        .chain(&chars[tail..])
        .collect()
}

/// `state` made to fit `room` columns: without a closing hint in
/// parentheses ("(is ferry-server running there?)") when that is enough,
/// else cut at the end, after a `…`.
fn fit_state(state: &str, room: usize) -> String {
    let fits = |t: &str| Span::raw(t).width() <= room;
    if fits(state) {
        return state.to_string();
    }
    if let Some(open) = state.rfind(" (")
        && state.ends_with(')')
        && fits(&state[..open])
    {
        return state[..open].to_string();
    }
    cut_end(state, room)
}

/// `text` cut to `room` columns, ending with a `…`, when it is longer.
fn cut_end(text: &str, room: usize) -> String {
    if Span::raw(text).width() <= room {
        return text.to_string();
    }
    let mut kept: String = fitting(text.chars(), room.saturating_sub(1))
        .into_iter()
        .collect();
    kept.push('…');
    kept
}

/// A row's name and the note after it, fitted to `room` columns. The name
/// gives up its middle first, but keeps at least half the room; then the
/// note is cut at its end. Both stay readable, where a plain cut at the
/// edge would take the whole note ("failed: …") off a long name's row.
fn fit_name_and_note(name: &str, note: &str, room: usize) -> (String, String) {
    let width = |t: &str| Span::raw(t).width();
    let (name_width, note_width) = (width(name), width(note));
    if name_width + note_width <= room {
        return (name.to_string(), note.to_string());
    }
    let name_room = room
        .saturating_sub(note_width)
        .max(name_width.min(room / 2));
    let name = cut_middle(name, name_room);
    let note = cut_end(note, room.saturating_sub(width(&name)));
    (name, note)
}

/// The characters of `chars`, in the order given, that fit in `room`
/// columns.
fn fitting(chars: impl Iterator<Item = char>, room: usize) -> Vec<char> {
    let mut kept = Vec::new();
    let mut width = 0;
    for c in chars {
        let w = Span::raw(c.to_string()).width();
        if width + w > room {
            break;
        }
        width += w;
        kept.push(c);
    }
    kept
}

/// `text` cut to its last `room` columns, after a `…`, when it is longer.
fn keep_end(text: &str, room: usize) -> String {
    if Span::raw(text).width() <= room {
        return text.to_string();
    }
    // One column for the ellipsis.
    let kept = fitting(text.chars().rev(), room.saturating_sub(1));
    std::iter::once('…').chain(kept.into_iter().rev()).collect()
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App, now: Instant) {
    let [status_area, keys_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(area);
    let status = match (app.input, &app.status) {
        (Input::Filter, _) => Line::from(vec![
            Span::styled("/", Style::new().fg(Color::Yellow).bold()),
            Span::raw(app.listing.filter().to_string()),
            Span::styled("▏", Style::new().fg(Color::Yellow)),
        ]),
        (Input::ConfirmQuit, _) => Line::styled(
            "A transfer is running. Quit and cancel it? y: quit, any other key: stay",
            Style::new().fg(Color::Yellow).bold(),
        ),
        (_, Some(status)) if status.is_error => {
            Line::styled(status.text.clone(), Style::new().fg(Color::Red))
        }
        (_, Some(status)) => Line::raw(status.text.clone()),
        (_, None) => match (&app.screen, app.behind.as_deref()) {
            (Screen::Browse, Some(view)) => {
                let width = usize::from(status_area.width);
                let mut line = transfer::behind_line(view, now, width);
                // The marks' totals follow when they fit whole: the
                // transfer's line is the one that changes.
                let totals = totals_line(app);
                if !app.marks.is_empty() && line.width() + 3 + totals.width() <= width {
                    line.push_span(Span::raw(" │ "));
                    line.extend(totals.spans);
                }
                line
            }
            // A retry's files are not the marks: those stay for later.
            (Screen::Transfer(view), _) if view.retrying => Line::default(),
            _ => totals_line(app),
        },
    };
    frame.render_widget(Paragraph::new(status), status_area);
    frame.render_widget(
        Paragraph::new(keys_line(app, keys_area.width)).dark_gray(),
        keys_area,
    );
}

fn totals_line(app: &App) -> Line<'static> {
    if app.marks.is_empty() {
        return Line::raw("Nothing marked").dark_gray();
    }
    let totals = app.marks.totals(&app.sizes);
    let files = if totals.files == 1 { "file" } else { "files" };
    let mut text = format!(
        "{} marked: {} {files}, {}",
        totals.paths,
        totals.files,
        bytes(totals.bytes)
    );
    if totals.sizing {
        text.push_str(" (still counting…)");
    }
    Line::styled(text, Style::new().fg(Color::Yellow))
}

/// The keys that work now, most useful first; those that do not fit in
/// `width` are left out whole rather than cut in the middle.
fn keys_line(app: &App, width: u16) -> Line<'static> {
    let keys: Vec<(&str, &str)> = match (&app.screen, app.input) {
        (_, Input::ConfirmQuit) => vec![("y", "quit"), ("n", "stay")],
        (_, Input::Help) if app.help_scrolls() => vec![("j/k", "scroll"), ("other keys", "back")],
        (_, Input::Help) => vec![("any key", "back")],
        (_, Input::Filter) => vec![
            ("type", "filter"),
            ("Enter", "keep"),
            ("Esc", "clear"),
            ("↑↓", "move"),
        ],
        // Sending waits while a transfer runs behind the list.
        (Screen::Browse, Input::Normal) if app.transfer_running() => vec![
            ("Tab", "transfer"),
            ("j/k", "move"),
            ("l", "open"),
            ("h", "back"),
            ("Space", "mark"),
            ("q", "quit"),
            ("?", "help"),
            ("/", "filter"),
            ("a", "mark all"),
            ("u", "unmark all"),
            (".", "hidden"),
        ],
        (Screen::Browse, Input::Normal) => {
            let mut keys = vec![
                ("j/k", "move"),
                ("l", "open"),
                ("h", "back"),
                ("Space", "mark"),
                ("Enter", "send"),
                ("q", "quit"),
                // Before the rest: it is how they are found.
                ("?", "help"),
                ("s", "send marked"),
                ("/", "filter"),
                ("a", "mark all"),
                ("u", "unmark all"),
                (".", "hidden"),
            ];
            if app.behind.is_some() {
                keys.insert(0, ("Tab", "summary"));
            }
            keys
        }
        (Screen::Transfer(view), Input::Normal) => match view.phase {
            Phase::Ended { .. } if view.can_retry() => vec![
                ("r", "retry failed"),
                ("j/k", "scroll"),
                ("other keys", "back to the list"),
                ("q", "quit"),
            ],
            Phase::Ended { .. } => vec![
                ("j/k", "scroll"),
                ("other keys", "back to the list"),
                ("q", "quit"),
            ],
            Phase::Planning | Phase::Asking => vec![("Esc", "cancel"), ("q", "quit")],
            Phase::Review if view.preflight_error().is_some() => vec![
                ("Enter", "send anyway"),
                ("Esc", "cancel"),
                ("j/k", "scroll"),
                ("q", "quit"),
            ],
            // As the prompt above it says: there is nothing to send.
            Phase::Review if view.plan_counts().to_send + view.plan_counts().folders == 0 => vec![
                ("Enter", "finish"),
                ("Esc", "back to the list"),
                ("j/k", "scroll"),
                ("q", "quit"),
            ],
            Phase::Review if view.can_skip_identical(app.on_clash) => vec![
                ("Enter/y", "send"),
                ("Esc/n", "cancel"),
                ("i", "skip files already there"),
                ("j/k", "scroll"),
                ("q", "quit"),
            ],
            Phase::Review => vec![
                ("Enter/y", "send"),
                ("Esc/n", "cancel"),
                ("j/k", "scroll"),
                ("q", "quit"),
            ],
            Phase::Cancelling => vec![("Tab", "browse"), ("q", "quit"), ("Ctrl-C", "quit now")],
            Phase::Sending => vec![
                ("Esc", "cancel"),
                ("Tab", "browse"),
                ("q", "quit"),
                ("Ctrl-C", "quit now"),
            ],
        },
    };
    let mut spans = Vec::new();
    let mut used = 0;
    for (key, what) in &keys {
        let needed = key.chars().count() + what.chars().count() + 3;
        if used + needed > usize::from(width) {
            continue;
        }
        used += needed;
        spans.push(Span::styled(format!(" {key}"), Style::new().bold()));
        spans.push(Span::raw(format!(" {what} ")));
    }
    Line::from(spans)
}

/// Bytes the way people read them (binary units, as the sender reports).
fn bytes(n: u64) -> String {
    humansize::format_size(n, humansize::BINARY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use ferry_proto::{Clash, ErrorCode, Verdict};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent};

    use crate::app::Action;
    use crate::browse::{FolderSize, SizeReport, read_entries};
    use crate::event::TransferMsg;
    use crate::transfer::{Event, Item, ItemKind, ItemResult, Plan, Report, Skipped};

    fn screen(app: &App, now: Instant, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
        terminal.draw(|frame| draw(frame, app, now)).expect("draw");
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{}", lines.join("\n")))
    }

    fn browsing(dir: &Path) -> App {
        let (mut app, open) = App::new(dir.to_path_buf(), "127.0.0.1:7878");
        let Action::Open { dir, select } = open else {
            panic!("starts by opening")
        };
        let entries = read_entries(&dir).map_err(|e| e.to_string());
        app.listed(dir, select, entries);
        app
    }

    /// Enter on a.txt in a folder of its own: a send waiting for its plan,
    /// which each test hands over as it needs.
    fn asked_to_send() -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.txt"), b"a").expect("write");
        let mut app = browsing(dir.path());
        app.handle_key(KeyEvent::from(KeyCode::Enter));
        app
    }

    /// A plan of `items` with nothing skipped.
    fn plan_of(items: Vec<Item>) -> Plan {
        Plan {
            items,
            skipped: Vec::new(),
            already_stored: Vec::new(),
        }
    }

    /// The result of a file stored under its own name, with no clash.
    fn stored(name: &str, bytes: u64) -> ItemResult {
        ItemResult::Stored {
            stored_as: name.into(),
            clash: Clash::None,
            bytes,
        }
    }

    #[test]
    fn browser_shows_path_server_rows_sizes_marks_and_totals() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("photos")).expect("mkdir");
        std::fs::create_dir(dir.path().join("music")).expect("mkdir");
        std::fs::write(dir.path().join("report.pdf"), vec![0u8; 2048]).expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"hello").expect("write");
        let mut app = browsing(dir.path());
        app.probed(Ok("ferry-server/0.1.0".into()));
        app.sizing(SizeReport::Measured {
            path: dir.path().join("photos"),
            size: FolderSize {
                files: 3,
                bytes: 3 * 1024 * 1024,
                unreadable: 0,
            },
            complete: true,
        });
        // Mark photos/ and notes.txt.
        app.listing.move_by(1);
        app.handle_key(KeyEvent::from(KeyCode::Char(' ')));
        app.handle_key(KeyEvent::from(KeyCode::Char(' ')));

        let lines = screen(&app, Instant::now(), 100, 20);
        let header = &lines[0];
        assert!(
            header.contains(&dir.path().display().to_string()),
            "{header}"
        );
        assert!(
            header.contains("127.0.0.1:7878 ● connected: ferry-server/0.1.0"),
            "{header}"
        );

        assert!(line_with(&lines, "photos/").contains("3 MiB"));
        assert!(line_with(&lines, "photos/").contains('*'));
        assert!(line_with(&lines, "report.pdf").contains("2 KiB"));
        assert!(!line_with(&lines, "report.pdf").contains('*'));
        assert!(line_with(&lines, "notes.txt").contains("5 B"));
        assert!(line_with(&lines, "notes.txt").contains('*'));
        // music/ is being measured in the background: no size yet.
        assert!(line_with(&lines, "music/").contains('…'));
        // Folders before files.
        let row = |name: &str| lines.iter().position(|l| l.contains(name)).expect("row");
        assert!(row("photos/") < row("notes.txt"));

        let footer = &lines[lines.len() - 2];
        assert!(footer.contains("2 marked: 4 files, 3.00 MiB"), "{footer}");
        assert!(lines[lines.len() - 1].contains("Space mark"));
    }

    #[test]
    fn header_says_when_the_server_is_unreachable_and_footer_shows_the_filter() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.txt"), b"a").expect("write");
        let mut app = browsing(dir.path());
        let before = screen(&app, Instant::now(), 100, 10);
        assert!(before[0].contains("… checking"));
        // As Link::open words it; the address is on the line once.
        app.probed(Err("cannot reach 127.0.0.1:7878: connection refused".into()));
        app.handle_key(KeyEvent::from(KeyCode::Char('/')));
        app.handle_key(KeyEvent::from(KeyCode::Char('z')));
        let lines = screen(&app, Instant::now(), 100, 10);
        assert!(
            lines[0].contains("○ unreachable: connection refused"),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[0].matches("127.0.0.1:7878").count(),
            1,
            "{}",
            lines[0]
        );
        assert!(line_with(&lines, "/z").contains("/z"));
        assert!(line_with(&lines, "nothing matches").contains("nothing matches"));
    }

    /// A reason too long for the header drops its hint in parentheses, and
    /// is cut with a `…` only when even that does not fit; never mid-word
    /// with no sign of it.
    #[test]
    fn a_long_reason_in_the_header_loses_its_hint_then_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut app = browsing(dir.path());
        app.probed(Err(
            "cannot reach 127.0.0.1:7878: connection refused (is ferry-server running there?)"
                .into(),
        ));
        let wide = screen(&app, Instant::now(), 200, 6);
        assert!(
            wide[0].contains("(is ferry-server running there?)"),
            "{}",
            wide[0]
        );
        let header = screen(&app, Instant::now(), 100, 6)[0].clone();
        assert!(
            header
                .trim_end()
                .ends_with("○ unreachable: connection refused"),
            "{header}"
        );
        let narrow = screen(&app, Instant::now(), 60, 6)[0].clone();
        assert!(narrow.contains("○ unreachable: conn"), "{narrow}");
        assert!(narrow.trim_end().ends_with('…'), "{narrow}");
    }

    /// What answered is not unreachable, and not Ferry either.
    #[test]
    fn header_says_when_the_port_is_not_a_ferry_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut app = browsing(dir.path());
        app.probed(Err("not a Ferry server: it speaks another protocol".into()));
        let lines = screen(&app, Instant::now(), 120, 10);
        assert!(
            lines[0].contains("○ not a Ferry server: it speaks another protocol"),
            "{}",
            lines[0]
        );
        assert!(!lines[0].contains("unreachable"), "{}", lines[0]);
    }

    fn connected() -> Event {
        Event::Connected {
            server: "ferry-server/0.1.0".into(),
        }
    }

    /// The plan arrives, the server finds every file new, Enter sends.
    fn confirm(app: &mut App, plan: Plan, now: Instant) {
        let verdicts = plan
            .items
            .iter()
            .map(|i| matches!(i.kind, ItemKind::File { .. }).then_some(Verdict::New))
            .collect();
        app.transfer(TransferMsg::Planned(plan), now);
        app.transfer(TransferMsg::Checked(Ok(verdicts)), now);
        let go = app.handle_key(KeyEvent::from(KeyCode::Enter));
        assert!(matches!(go, Some(Action::Go(_))), "{go:?}");
    }

    fn file(name: &str, size: u64) -> Item {
        Item {
            local: PathBuf::from("/here").join(name),
            remote: name.into(),
            kind: ItemKind::File { size },
        }
    }

    #[test]
    fn progress_panel_mid_transfer_shows_gauges_current_file_and_outcomes() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let mib = 1024 * 1024;
        let plan = Plan {
            items: vec![
                file("a.txt", mib),
                file("b.txt", mib),
                file("c.txt", mib),
                file("big.iso", 7 * mib),
            ],
            skipped: vec![Skipped {
                local: PathBuf::from("/here/link"),
                reason: "is a symlink (not followed)".into(),
                by_choice: true,
            }],
            already_stored: Vec::new(),
        };
        confirm(&mut app, plan, t0);
        app.transfer(TransferMsg::Progress(connected()), t0);
        let at = t0 + Duration::from_secs(2);
        let events = [
            Event::Started { index: 0 },
            Event::Finished {
                index: 0,
                result: stored("a.txt", mib),
            },
            Event::Finished {
                index: 1,
                result: ItemResult::Stored {
                    stored_as: "b (1).txt".into(),
                    clash: Clash::Renamed,
                    bytes: mib,
                },
            },
            Event::Finished {
                index: 2,
                result: ItemResult::Failed {
                    reason: "the server's disk is full".into(),
                },
            },
            Event::Started { index: 3 },
            Event::Progress {
                index: 3,
                item_sent: 2 * mib,
                total_sent: 5 * mib,
            },
        ];
        for event in events {
            app.transfer(TransferMsg::Progress(event), at);
        }
        let lines = screen(&app, at, 100, 30);
        let total = line_with(&lines, "50%");
        assert!(
            total.contains("sent 5.00 MiB · stored 2.00 MiB / 10.00 MiB"),
            "{total}"
        );
        assert!(total.contains("2.50 MiB/s"), "{total}");
        assert!(total.contains("ETA 2s"), "{total}");
        assert!(line_with(&lines, "big.iso").contains("big.iso"));
        let current = line_with(&lines, "28%");
        assert!(current.contains("2.00 MiB / 7.00 MiB"), "{current}");
        assert!(line_with(&lines, "b.txt").contains("renamed to b (1).txt"));
        assert!(line_with(&lines, "c.txt").contains("failed: the server's disk is full"));
        assert!(line_with(&lines, "a.txt").contains("stored"));
        assert!(line_with(&lines, "/here/link").contains("skipped: is a symlink"));
        assert!(lines[lines.len() - 1].contains("Esc cancel"));

        // A narrow screen drops what was sent, then what is stored, and
        // keeps the rate and the time left whole.
        let narrow = screen(&app, at, 60, 30);
        let total = line_with(&narrow, "50%");
        assert!(
            total.contains("50% · stored 2.00 MiB / 10.00 MiB · 2.50 MiB/s · ETA 2s"),
            "{total}"
        );
        assert!(!total.contains("sent"), "{total}");
        // Counts that move keep two decimals, so the label keeps still.
        let current = line_with(&lines, "28%");
        assert!(current.contains("2.00 MiB / 7.00 MiB"), "{current}");
        let narrower = screen(&app, at, 30, 30);
        let total = line_with(&narrower, "50%");
        assert!(total.contains("50% · 2.50 MiB/s · ETA 2s"), "{total}");
    }

    #[test]
    fn reading_a_kept_part_before_sending_is_shown_instead_of_connecting() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        confirm(&mut app, plan_of(vec![file("big.iso", 3 << 30)]), t0);
        let lines = screen(&app, t0, 100, 20);
        line_with(&lines, "connecting to the server…");
        let checking = Event::Checking {
            index: 0,
            offset: 2 << 30,
        };
        app.transfer(TransferMsg::Progress(checking), t0);
        let lines = screen(&app, t0, 100, 20);
        line_with(
            &lines,
            "reading the 2 GiB of big.iso the server already has, to check it…",
        );
        // Once bytes move, the gauge takes its place.
        app.transfer(TransferMsg::Progress(connected()), t0);
        let lines = screen(&app, t0, 100, 20);
        assert!(
            !lines.iter().any(|l| l.contains("reading the")),
            "{}",
            lines.join("\n")
        );
    }

    #[test]
    fn the_list_shows_a_transfer_going_on_behind_it() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let mib = 1024 * 1024;
        confirm(
            &mut app,
            plan_of(vec![file("a.txt", mib), file("b.txt", 3 * mib)]),
            t0,
        );
        app.transfer(TransferMsg::Progress(connected()), t0);
        let at = t0 + Duration::from_secs(1);
        let events = [
            Event::Started { index: 0 },
            Event::Finished {
                index: 0,
                result: stored("a.txt", mib),
            },
            Event::Started { index: 1 },
            Event::Progress {
                index: 1,
                item_sent: mib,
                total_sent: 2 * mib,
            },
        ];
        for event in events {
            app.transfer(TransferMsg::Progress(event), at);
        }
        assert_eq!(
            app.handle_key(KeyEvent::from(KeyCode::Tab)),
            None,
            "Tab goes to the list"
        );
        let lines = screen(&app, at, 100, 12);
        assert!(
            line_with(&lines, "a.txt").contains("a.txt"),
            "the list is drawn"
        );
        let footer = line_with(&lines, "Sending:");
        assert!(
            footer.contains("50% · 2.00 MiB/s · ETA 1s · Tab shows it"),
            "{footer}"
        );
        assert!(lines[lines.len() - 1].contains("Tab transfer"));
        // Narrow, the hint goes, whole, before any of the numbers is cut.
        let narrow = screen(&app, at, 40, 12);
        assert_eq!(
            line_with(&narrow, "Sending:").trim_end(),
            "Sending: 50% · 2.00 MiB/s · ETA 1s"
        );
        // Marks made meanwhile are counted after it, when they fit whole.
        app.handle_key(KeyEvent::from(KeyCode::Char(' ')));
        let wide = screen(&app, at, 100, 12);
        let footer = line_with(&wide, "Sending:");
        assert!(
            footer.contains("ETA 1s · Tab shows it │ 1 marked: 1 file"),
            "{footer}"
        );
        let narrow = screen(&app, at, 60, 12);
        assert_eq!(
            line_with(&narrow, "Sending:").trim_end(),
            "Sending: 50% · 2.00 MiB/s · ETA 1s · Tab shows it"
        );

        app.transfer(
            TransferMsg::Done(Report {
                results: vec![
                    stored("a.txt", mib),
                    ItemResult::Failed {
                        reason: "the server's disk is full".into(),
                    },
                ],
                bytes_sent: 4 * mib,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(2),
                cancelled: false,
            }),
            at,
        );
        let lines = screen(&app, at, 100, 12);
        let footer = line_with(&lines, "Finished");
        assert!(
            footer.contains("Finished with problems: 1 stored, 1 failed · Tab shows it"),
            "{footer}"
        );
        // Sending works again, and the keys say so.
        let keys = &lines[lines.len() - 1];
        assert!(keys.contains("Tab summary"), "{keys}");
        assert!(keys.contains("Enter send"), "{keys}");
    }

    #[test]
    fn summary_after_cancel_says_what_was_and_was_not_sent() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let plan = plan_of(vec![
            file("a.txt", 10),
            file("b.txt", 10),
            file("c.txt", 10),
        ]);
        confirm(&mut app, plan, t0);
        app.handle_key(KeyEvent::from(KeyCode::Esc));
        let cancelling = screen(&app, t0, 100, 24);
        assert!(line_with(&cancelling, "Cancelling").contains("Cancelling"));
        let not_sent = ItemResult::NotSent {
            reason: "cancelled".into(),
        };
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![stored("a.txt", 10), not_sent.clone(), not_sent],
                bytes_sent: 10,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: true,
            }),
            t0 + Duration::from_secs(1),
        );
        let lines = screen(&app, t0 + Duration::from_secs(1), 100, 24);
        assert!(line_with(&lines, "Cancelled").contains("1 stored, 2 not sent"));
        assert!(line_with(&lines, "b.txt").contains("not sent: cancelled"));
        assert!(lines[lines.len() - 1].contains("back to the list"));
    }

    #[test]
    fn an_unreachable_server_is_explained_in_the_summary() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        app.transfer(TransferMsg::Planned(plan_of(vec![file("a.txt", 1)])), t0);
        let reason =
            "cannot reach 127.0.0.1:7878: connection refused (is ferry-server running there?)";
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![ItemResult::NotSent {
                    reason: reason.into(),
                }],
                bytes_sent: 0,
                bytes_resumed: 0,
                elapsed: Duration::ZERO,
                cancelled: false,
            }),
            t0,
        );
        let lines = screen(&app, t0, 100, 24);
        let headline = line_with(&lines, "Stopped");
        assert!(headline.contains("connection refused"), "{headline}");
        assert!(headline.contains("0 stored, 1 not sent"), "{headline}");
        // The address is in the header; on 100 columns the cause fits.
        let row = line_with(&lines, "a.txt");
        assert!(
            row.contains("not sent: connection refused (is ferry-server running there?)"),
            "{row}"
        );
        assert_eq!(
            lines[0].matches("127.0.0.1:7878").count(),
            1,
            "{}",
            lines[0]
        );
    }

    /// A long name in the list keeps its end, and what is wrong with it
    /// stays on its row instead of running off the edge.
    #[test]
    fn a_long_name_in_the_list_gives_up_its_middle_and_keeps_its_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = format!("{}-end", "b".repeat(150));
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join(&long))
            .expect("symlink");
        let app = browsing(dir.path());
        let lines = screen(&app, Instant::now(), 80, 12);
        let row = line_with(&lines, "-end");
        assert!(row.contains('…'), "{row}");
        assert!(row.contains("(link) (broken link)"), "{row}");
        assert!(row.trim_end().ends_with("│"), "{row}");
    }

    /// A server trusted on first use is named on the footer by its
    /// fingerprint, whole even on a narrow screen.
    #[test]
    fn a_server_trusted_on_first_use_shows_its_fingerprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut app = browsing(dir.path());
        let fingerprint = format!("sha256:{}", "ab".repeat(32));
        app.trusted_on_first_use(&crate::transfer::link::FirstTrusted {
            addr: "127.0.0.1:7878".into(),
            fingerprint: fingerprint.clone(),
        });
        let lines = screen(&app, Instant::now(), 80, 12);
        let footer = &lines[lines.len() - 2];
        assert!(
            footer.starts_with(&format!("{fingerprint} trusted")),
            "{footer}"
        );
    }

    /// A link that will not be sent shows no size, and says it will not:
    /// the totals count it for nothing, and the plan skips it.
    #[test]
    fn a_link_not_followed_says_so_and_shows_no_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("real.bin"), vec![0u8; 3 << 20]).expect("write");
        std::os::unix::fs::symlink(dir.path().join("real.bin"), dir.path().join("alias.bin"))
            .expect("symlink");
        let mut app = browsing(dir.path());
        let row =
            |app: &App| line_with(&screen(app, Instant::now(), 80, 12), "alias.bin").to_string();
        let shown = row(&app);
        assert!(shown.contains("alias.bin (link, not sent)"), "{shown}");
        assert!(!shown.contains("MiB"), "{shown}");
        app.marks = crate::browse::Marks::new(true);
        let shown = row(&app);
        assert!(shown.contains("alias.bin (link)"), "{shown}");
        assert!(shown.contains("3 MiB"), "{shown}");
    }

    /// A long name in the results must not take its outcome off the row.
    #[test]
    fn a_long_name_in_the_results_keeps_its_outcome() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let long = format!("{}.bin", "c".repeat(150));
        confirm(&mut app, plan_of(vec![file(&long, 10)]), t0);
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![ItemResult::Failed {
                    reason: "the server's disk is full".into(),
                }],
                bytes_sent: 0,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            t0,
        );
        let lines = screen(&app, t0, 80, 16);
        let row = line_with(&lines, "✗");
        assert!(row.contains('…') && row.contains("c.bin"), "{row}");
        assert!(row.contains("failed: the server's disk is full"), "{row}");
    }

    #[test]
    fn a_name_and_its_note_share_the_room() {
        // Both fit: untouched.
        assert_eq!(
            fit_name_and_note("a.txt", "  stored", 20),
            ("a.txt".to_string(), "  stored".to_string())
        );
        // The name gives up its middle for the note.
        let (name, note) = fit_name_and_note("abcdefghijklmnop.txt", "  stored", 20);
        assert_eq!(note, "  stored");
        assert!(name.contains('…') && name.ends_with(".txt"), "{name}");
        assert_eq!(Span::raw(name + &note).width(), 20);
        // A note too long for half the room is cut at its end instead.
        let (name, note) = fit_name_and_note("abcdefghij.txt", &"x".repeat(40), 20);
        assert_eq!(Span::raw(name.as_str()).width(), 10, "{name}");
        assert!(note.ends_with('…'), "{note}");
        assert_eq!(Span::raw(name + &note).width(), 20);
        assert_eq!(cut_end("abcdef", 4), "abc…");
        assert_eq!(cut_end("abc", 4), "abc");
    }

    /// One very long name must not push every verdict off the screen.
    #[test]
    fn a_long_name_on_the_plan_gives_up_its_middle() {
        let long = format!("{}.txt", "a".repeat(200));
        let app = plan_screen(
            vec![file(&long, 1), file("taken.txt", 2)],
            Ok(vec![
                Some(Verdict::New),
                Some(Verdict::Clash {
                    result: Clash::Renamed,
                    stored_as: "taken (1).txt".into(),
                }),
            ]),
        );
        let lines = screen(&app, Instant::now(), 100, 20);
        let row = line_with(&lines, "taken.txt");
        assert!(row.contains("will be renamed to taken (1).txt"), "{row}");
        let row = line_with(&lines, "a.txt");
        assert!(row.contains('…') && row.contains("1 B  new"), "{row}");
    }

    /// A folder that could not be read is not called empty, and one still
    /// being read says so.
    #[test]
    fn an_unread_folder_is_not_called_empty() {
        let (mut app, _open) = App::new(PathBuf::from("/nowhere/locked"), "127.0.0.1:9");
        let reading = screen(&app, Instant::now(), 80, 10);
        assert!(line_with(&reading, "reading this folder…").contains('…'));
        app.listed(
            PathBuf::from("/nowhere/locked"),
            None,
            Err("permission denied".into()),
        );
        let lines = screen(&app, Instant::now(), 80, 10);
        assert!(line_with(&lines, "this folder could not be read").contains("read"));
        assert!(line_with(&lines, "Cannot open locked: permission denied").contains("denied"));
        assert!(!lines.iter().any(|l| l.contains("this folder is empty")));
    }

    /// A plan with nothing to send does not offer to send, in its key bar
    /// either.
    #[test]
    fn a_plan_with_nothing_to_send_offers_to_finish() {
        let app = plan_screen(
            vec![file("same.txt", 3)],
            Ok(vec![Some(Verdict::Identical)]),
        );
        let lines = screen(&app, Instant::now(), 100, 12);
        assert!(line_with(&lines, "Nothing needs sending").contains("Enter: finish"));
        let keys = &lines[lines.len() - 1];
        assert!(keys.contains("Enter finish"), "{keys}");
        assert!(!keys.contains("send"), "{keys}");
    }

    /// A clash row keeps what it is for, the new name: the rename is shown
    /// without the folders the row already names, and a verdict too long
    /// for what the name column leaves gives up its middle, not its end.
    #[test]
    fn a_clash_row_keeps_the_new_name_beside_a_wide_name_column() {
        let long = format!("docs/{}_very_long_name.txt", "a".repeat(60));
        let deep = "docs/reports/q1/report1.txt";
        let app = plan_screen(
            vec![file(&long, 1), file(deep, 2)],
            Ok(vec![
                Some(Verdict::Clash {
                    result: Clash::Renamed,
                    stored_as: format!("docs/{}_very_long_name (1).txt", "a".repeat(60)),
                }),
                Some(Verdict::Clash {
                    result: Clash::Renamed,
                    stored_as: "docs/reports/q1/report1 (1).txt".into(),
                }),
            ]),
        );
        let lines = screen(&app, Instant::now(), 120, 20);
        let row = line_with(&lines, "report1.txt");
        assert!(row.contains("will be renamed to report1 (1).txt"), "{row}");
        let row = line_with(&lines, "_very_long_name.txt");
        assert!(row.contains("will be renamed to "), "{row}");
        assert!(
            row.contains("…") && row.contains("long_name (1).txt"),
            "{row}"
        );
    }

    /// Skipped rows are named as sent ones are, from the pick down; what is
    /// under no pick keeps its whole path.
    #[test]
    fn skipped_rows_are_named_from_the_picked_folder_down() {
        let skipped = |local: &str| Skipped {
            local: PathBuf::from(local),
            reason: "is a symlink (not followed)".into(),
            by_choice: true,
        };
        let roots = [
            PathBuf::from("/home/me/trip"),
            PathBuf::from("/home/me/x.txt"),
        ];
        let text = |line: Line| {
            line.spans
                .iter()
                .map(|s| s.content.as_ref())
                .collect::<String>()
        };
        assert!(
            text(skipped_line(
                &skipped("/home/me/trip/photos/link"),
                &roots,
                80
            ))
            .starts_with("– trip/photos/link  skipped")
        );
        assert!(
            text(skipped_line(&skipped("/home/me/x.txt"), &roots, 80)).starts_with("– x.txt  ")
        );
        assert!(
            text(skipped_line(&skipped("/elsewhere/l"), &roots, 80))
                .starts_with("– /elsewhere/l  ")
        );
    }

    /// The footer has room for the most used keys only; `?` lists them
    /// all, and the key that closes the list does nothing else.
    #[test]
    fn question_mark_lists_every_key_until_any_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.txt"), b"a").expect("write");
        let mut app = browsing(dir.path());
        let keys = screen(&app, Instant::now(), 80, 24);
        assert!(keys[keys.len() - 1].contains("? help"), "{keys:#?}");
        assert_eq!(app.handle_key(KeyEvent::from(KeyCode::Char('?'))), None);
        let help = screen(&app, Instant::now(), 80, 24);
        assert!(
            line_with(&help, "Keys").contains("any key closes"),
            "{help:#?}"
        );
        for (key, what) in BROWSE_KEYS {
            assert!(line_with(&help, what).contains(key), "{help:#?}");
        }
        // Bigger than a small terminal, it is cut, not a panic.
        for (width, height) in [(30, 8), (10, 3), (1, 1)] {
            screen(&app, Instant::now(), width, height);
        }
        assert_eq!(app.handle_key(KeyEvent::from(KeyCode::Char('q'))), None);
        let after = screen(&app, Instant::now(), 80, 24);
        assert!(!after.iter().any(|l| l.contains("Keys")), "{after:#?}");
        assert!(line_with(&after, "a.txt").contains("a.txt"));
    }

    /// On a terminal too small for it, the help scrolls, and every key is
    /// still there to be read, its words cut only at the edge.
    #[test]
    fn help_on_a_small_terminal_scrolls_to_every_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.txt"), b"a").expect("write");
        let mut app = browsing(dir.path());
        let small = Rect::new(0, 0, 40, 10);
        app.set_scroll_rows(scroll_rows(small));
        assert!(app.help_scrolls());
        app.handle_key(KeyEvent::from(KeyCode::Char('?')));
        let now = Instant::now();
        let top = screen(&app, now, 40, 10);
        assert!(line_with(&top, "Keys").contains("j/k scroll"), "{top:#?}");
        assert!(top[top.len() - 1].contains("j/k scroll"), "{top:#?}");
        assert!(line_with(&top, "j k").contains("j k"));
        // Narrow: what a key does is under it.
        assert!(line_with(&top, "move down / up").contains("move down"));

        let mut seen: Vec<String> = top.clone();
        for _ in 0..40 {
            app.handle_key(KeyEvent::from(KeyCode::Char('j')));
            seen.extend(screen(&app, now, 40, 10));
        }
        for (key, _) in BROWSE_KEYS {
            line_with(&seen, key);
        }
        assert!(line_with(&seen, "mark or unmark").contains("mark or unmark"));
        // At the bottom, k goes back up, and any other key closes it.
        app.handle_key(KeyEvent::from(KeyCode::Char('k')));
        let up = screen(&app, now, 40, 10);
        assert!(up.iter().any(|l| l.contains("Keys")), "{up:#?}");
        app.handle_key(KeyEvent::from(KeyCode::Char('x')));
        let after = screen(&app, now, 40, 10);
        assert!(!after.iter().any(|l| l.contains("Keys")), "{after:#?}");
        assert_eq!(app.help_scroll, 0);
        // A screen with room for it all: any key closes, j included.
        app.set_scroll_rows(scroll_rows(Rect::new(0, 0, 100, 40)));
        app.handle_key(KeyEvent::from(KeyCode::Char('?')));
        app.handle_key(KeyEvent::from(KeyCode::Char('j')));
        assert_eq!(app.input, Input::Normal);
    }

    /// `ferry DIR/.profile` must not leave the cursor on another file
    /// because hidden files are not shown: that one is shown.
    #[test]
    fn a_hidden_file_asked_for_by_name_is_shown_under_the_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.txt"), b"a").expect("write");
        std::fs::write(dir.path().join(".profile"), b"p").expect("write");
        let (mut app, _) = App::new(dir.path().to_path_buf(), "127.0.0.1:7878");
        let entries = read_entries(dir.path()).map_err(|e| e.to_string());
        app.listed(dir.path().to_path_buf(), Some(".profile".into()), entries);
        let lines = screen(&app, Instant::now(), 80, 10);
        assert!(line_with(&lines, "▶").contains(".profile"), "{lines:#?}");
    }

    /// `i` is offered only where it changes something and nothing else:
    /// taken names that were not compared, under the rename policy.
    #[test]
    fn i_is_offered_on_the_plan_only_for_clashes_not_compared() {
        let clash = Some(Verdict::Clash {
            result: Clash::Renamed,
            stored_as: "a (1).txt".into(),
        });
        let keys = |app: &App| screen(app, Instant::now(), 120, 12).last().cloned();
        let mut app = plan_screen(vec![file("a.txt", 1)], Ok(vec![clash.clone()]));
        assert!(keys(&app).is_some_and(|k| k.contains("i skip files already there")));
        app.on_clash = ferry_proto::OnClash::SkipIdentical;
        assert!(keys(&app).is_some_and(|k| !k.contains("i skip")));
        assert_eq!(app.handle_key(KeyEvent::from(KeyCode::Char('i'))), None);
        // Under overwrite it would turn overwriting into keeping both.
        app.on_clash = ferry_proto::OnClash::Overwrite;
        assert!(keys(&app).is_some_and(|k| !k.contains("i skip")));
        assert_eq!(app.handle_key(KeyEvent::from(KeyCode::Char('i'))), None);
        let app = plan_screen(vec![file("a.txt", 1)], Ok(vec![Some(Verdict::New)]));
        assert!(keys(&app).is_some_and(|k| !k.contains("i skip")));

        let mut app = plan_screen(vec![file("a.txt", 1)], Ok(vec![clash]));
        let again = app.handle_key(KeyEvent::from(KeyCode::Char('i')));
        assert!(
            matches!(again, Some(Action::SendSkippingIdentical(_))),
            "{again:?}"
        );
        let asking = screen(&app, Instant::now(), 120, 12);
        assert!(line_with(&asking, "Looking at what to send").contains("Looking"));
    }

    /// Under a retry's plan the footer does not count the marks, which are
    /// not what is being retried.
    #[test]
    fn a_retry_plan_does_not_show_the_marks() {
        let mut app = asked_to_send();
        let now = Instant::now();
        app.transfer(TransferMsg::Planned(plan_of(vec![file("b.txt", 1)])), now);
        let footer = |app: &App| screen(app, now, 100, 12)[10].clone();
        assert!(footer(&app).contains("Nothing marked"), "{}", footer(&app));
        if let Screen::Transfer(view) = &mut app.screen {
            view.retrying = true;
        }
        assert!(footer(&app).trim().is_empty(), "{}", footer(&app));
    }

    #[test]
    fn moving_counts_keep_their_decimals() {
        assert_eq!(transfer::steady(0), "0 B");
        assert_eq!(transfer::steady(1023), "1023 B");
        assert_eq!(transfer::steady(38 << 20), "38.00 MiB");
        assert_eq!(transfer::steady((38 << 20) + (1 << 19)), "38.50 MiB");
    }

    /// A renamed file is one of those stored, not one more.
    #[test]
    fn the_summary_counts_renamed_files_among_the_stored() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        confirm(&mut app, plan_of(vec![file("taken.txt", 4)]), t0);
        let renamed = ItemResult::Stored {
            stored_as: "taken (1).txt".into(),
            clash: Clash::Renamed,
            bytes: 4,
        };
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![renamed],
                bytes_sent: 4,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            t0,
        );
        let lines = screen(&app, t0, 100, 24);
        let headline = line_with(&lines, "Finished");
        assert!(
            headline.contains("Finished: 1 stored (1 renamed)."),
            "{headline}"
        );
    }

    /// The headline says "Sending 1 file": an empty folder made on the way
    /// is named apart, not counted as a second file stored.
    #[test]
    fn the_summary_counts_empty_folders_apart_from_files() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let folder = Item {
            local: PathBuf::from("/here/empty"),
            remote: "empty".into(),
            kind: ItemKind::Folder,
        };
        confirm(&mut app, plan_of(vec![file("a.txt", 4), folder]), t0);
        let stored = ItemResult::Stored {
            stored_as: "a.txt".into(),
            clash: Clash::None,
            bytes: 4,
        };
        let made = ItemResult::Folder {
            path: "empty".into(),
        };
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![stored, made],
                bytes_sent: 4,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            t0,
        );
        let lines = screen(&app, t0, 100, 24);
        let headline = line_with(&lines, "Finished");
        assert!(
            headline.contains("Finished: 1 stored, 1 empty folder."),
            "{headline}"
        );
    }

    #[test]
    fn only_the_address_of_this_server_is_taken_out_of_a_reason() {
        let addr = "10.0.0.5:8090";
        assert_eq!(
            without_addr("cannot reach 10.0.0.5:8090: connection refused", addr),
            "connection refused"
        );
        assert_eq!(
            without_addr(
                "handshake with 10.0.0.5:8090 failed: not a Ferry server",
                addr
            ),
            "not a Ferry server"
        );
        for kept in [
            "cannot reach 10.0.0.6:8090: connection refused",
            "the server's disk is full",
            "cannot reach 10.0.0.5:80901: timed out",
        ] {
            assert_eq!(without_addr(kept, addr), kept);
        }
    }

    #[test]
    fn keys_that_do_not_fit_are_left_out_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = browsing(dir.path());
        let wide = screen(&app, Instant::now(), 140, 10);
        let keys = &wide[wide.len() - 1];
        for key in [
            "j/k move",
            "Space mark",
            "s send marked",
            "q quit",
            "? help",
            ". hidden",
        ] {
            assert!(keys.contains(key), "{key} missing from {keys}");
        }
        let narrow = screen(&app, Instant::now(), 50, 10);
        let keys = narrow[narrow.len() - 1].trim_end();
        assert!(keys.contains("Space mark"), "{keys}");
        assert!(!keys.contains("hidden"), "{keys}");
        assert!(
            keys.ends_with(|c: char| c.is_alphabetic()),
            "cut short: {keys}"
        );
    }

    #[test]
    fn list_rows_match_what_the_browser_draws() {
        assert_eq!(list_rows(Rect::new(0, 0, 80, 24)), 24 - 1 - 2 - 2);
        assert_eq!(list_rows(Rect::new(0, 0, 80, 3)), 1);
    }

    const MIB: u64 = 1024 * 1024;

    /// On the plan screen of a send whose plan is `items`, once the server
    /// answered `verdicts`.
    fn plan_screen(items: Vec<Item>, verdicts: Result<Vec<Option<Verdict>>, String>) -> App {
        let mut app = asked_to_send();
        let now = Instant::now();
        app.transfer(TransferMsg::Planned(plan_of(items)), now);
        app.transfer(TransferMsg::Checked(verdicts), now);
        app
    }

    /// Two picked files bound for one name: the server calls each new, but
    /// the plan says the second gets a number, and counts it as a clash.
    #[test]
    fn two_files_of_one_send_for_one_name_are_a_clash() {
        let readme = |from: &str| Item {
            local: PathBuf::from(from),
            remote: "README".into(),
            kind: ItemKind::File { size: 5 },
        };
        let app = plan_screen(
            vec![readme("/here/a/README"), readme("/here/b/README")],
            Ok(vec![Some(Verdict::New), Some(Verdict::New)]),
        );
        let lines = screen(&app, Instant::now(), 120, 12);
        let rows: Vec<&String> = lines.iter().filter(|l| l.contains("README")).collect();
        assert_eq!(rows.len(), 2, "{lines:#?}");
        assert!(rows.iter().any(|r| r.contains("5 B  new")), "{rows:?}");
        assert!(
            rows.iter()
                .any(|r| r.contains("another file of this send has this name: will get a number")),
            "{rows:?}"
        );
        let totals = line_with(&lines, " new ·");
        assert!(totals.contains("1 new · 0 identical · 1 clash"), "{totals}");
    }

    /// A resume into a name taken meanwhile says where the file will land,
    /// as a clash does.
    #[test]
    fn a_resume_into_a_taken_name_says_so() {
        let words = |clash, stored_as: Option<&str>| {
            plan::verdict_words(&Verdict::Resume {
                offset: 3 * MIB,
                clash,
                stored_as: stored_as.map(str::to_string),
            })
            .2
        };
        assert_eq!(words(None, None), "resume at 3 MiB");
        assert_eq!(
            words(Some(Clash::Renamed), Some("big (1).bin")),
            "resume at 3 MiB, name taken: will be big (1).bin"
        );
        assert_eq!(
            words(Some(Clash::Overwritten), Some("big.bin")),
            "resume at 3 MiB, will overwrite"
        );
    }

    #[test]
    fn plan_screen_says_what_the_server_would_do_with_each_file_and_totals() {
        let app = plan_screen(
            vec![
                file("fresh.txt", 5),
                file("same.txt", 7),
                file("taken.txt", 9),
                file("old.txt", 11),
                file("movie.mkv", 40 * MIB),
                file("con.txt", 1),
                Item {
                    local: PathBuf::from("/here/empty"),
                    remote: "empty".into(),
                    kind: ItemKind::Folder,
                },
            ],
            Ok(vec![
                Some(Verdict::New),
                Some(Verdict::Identical),
                Some(Verdict::Clash {
                    result: Clash::Renamed,
                    stored_as: "taken (1).txt".into(),
                }),
                Some(Verdict::Clash {
                    result: Clash::Overwritten,
                    stored_as: "old.txt".into(),
                }),
                Some(Verdict::Resume {
                    offset: 12 * MIB,
                    clash: None,
                    stored_as: None,
                }),
                Some(Verdict::Refused {
                    code: ErrorCode::BadName,
                    message: "the name is reserved".into(),
                }),
                None,
            ]),
        );
        let lines = screen(&app, Instant::now(), 100, 30);
        assert!(line_with(&lines, "fresh.txt").contains("5 B  new "));
        assert!(line_with(&lines, "same.txt").contains("identical, nothing to send"));
        assert!(line_with(&lines, "taken.txt").contains("will be renamed to taken (1).txt"));
        assert!(line_with(&lines, "old.txt").contains("will overwrite"));
        assert!(line_with(&lines, "movie.mkv").contains("resume at 12 MiB"));
        assert!(line_with(&lines, "con.txt").contains("refused: the name is reserved"));
        assert!(line_with(&lines, "empty/").contains("folder"));
        let totals = line_with(&lines, " new ·");
        assert!(
            totals.contains("1 new · 1 identical · 2 clashes · 1 resume · 1 refused"),
            "{totals}"
        );
        // Refused and identical files are left out of what Enter sends.
        let prompt = line_with(&lines, "Enter:");
        assert!(
            prompt.contains("send 4 files (40.00 MiB, 12 MiB already there)"),
            "{prompt}"
        );
        assert!(
            totals.contains("· not sent: identical, refused"),
            "{totals}"
        );
        assert!(prompt.contains("Esc: cancel"), "{prompt}");
        let keys = &lines[lines.len() - 1];
        assert!(
            keys.contains("Enter/y send") && keys.contains("Esc/n cancel"),
            "{keys}"
        );
    }

    /// A retry's files that the cancelled try stored after all are not in
    /// the plan's rows; the totals say where they went.
    #[test]
    fn plan_screen_counts_files_a_retry_found_already_stored() {
        let mut app = asked_to_send();
        let now = Instant::now();
        let plan = Plan {
            already_stored: vec!["t/a.txt".into(), "t/b.txt".into()],
            ..plan_of(vec![file("c.txt", 3)])
        };
        app.transfer(TransferMsg::Planned(plan), now);
        app.transfer(TransferMsg::Checked(Ok(vec![Some(Verdict::New)])), now);
        let lines = screen(&app, now, 120, 20);
        let totals = line_with(&lines, " new ·");
        assert!(
            totals.contains("· 2 files already on the server from the last try"),
            "{totals}"
        );
        assert!(line_with(&lines, "Enter:").contains("send 1 file (3 B)"));
        assert!(!lines.iter().any(|l| l.contains("a.txt")), "{lines:#?}");
    }

    /// "0 refused" above a row that says "name refused" read as a
    /// contradiction: what the client itself leaves out is counted too.
    #[test]
    fn plan_totals_count_what_was_skipped_before_asking() {
        let mut app = asked_to_send();
        let now = Instant::now();
        let plan = Plan {
            skipped: vec![Skipped {
                local: PathBuf::from("/here/bad\\name.txt"),
                reason: "name refused: backslashes are not allowed".into(),
                by_choice: false,
            }],
            ..plan_of(vec![file("c.txt", 3)])
        };
        app.transfer(TransferMsg::Planned(plan), now);
        app.transfer(TransferMsg::Checked(Ok(vec![Some(Verdict::New)])), now);
        let lines = screen(&app, now, 120, 20);
        let totals = line_with(&lines, " new ·");
        assert!(
            totals.contains("1 new · 0 identical · 0 clashes · 0 resume · 0 refused · 1 skipped"),
            "{totals}"
        );
    }

    #[test]
    fn plan_screen_waits_for_the_server_and_says_when_it_cannot_be_asked() {
        let mut app = asked_to_send();
        let now = Instant::now();
        app.transfer(TransferMsg::Planned(plan_of(vec![file("a.txt", 1)])), now);
        let asking = screen(&app, now, 100, 20);
        assert!(line_with(&asking, "Asking the server at 127.0.0.1:7878").contains("1 file"));
        assert!(line_with(&asking, "a.txt").contains("asking the server…"));

        app.transfer(
            TransferMsg::Checked(Err("cannot reach 127.0.0.1:7878: connection refused".into())),
            now,
        );
        let failed = screen(&app, now, 100, 20);
        assert!(
            line_with(&failed, "Could not ask the server").contains("connection refused"),
            "{failed:?}"
        );
        assert!(line_with(&failed, "a.txt").contains("not checked"));
        assert!(line_with(&failed, "Enter: send anyway").contains("Esc: cancel"));
        assert!(failed[failed.len() - 1].contains("Enter send anyway"));
    }

    #[test]
    fn total_is_not_100_percent_until_the_server_confirmed_every_file() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let plan = plan_of(vec![file("one.bin", 4 * MIB), file("two.bin", 6 * MIB)]);
        confirm(&mut app, plan, t0);
        let at = t0 + Duration::from_secs(1);
        for event in [
            connected(),
            Event::Started { index: 0 },
            Event::Progress {
                index: 0,
                item_sent: 4 * MIB,
                total_sent: 4 * MIB,
            },
            Event::Finished {
                index: 0,
                result: stored("one.bin", 4 * MIB),
            },
            Event::Started { index: 1 },
            Event::Progress {
                index: 1,
                item_sent: 6 * MIB,
                total_sent: 10 * MIB,
            },
        ] {
            app.transfer(TransferMsg::Progress(event), at);
        }
        // Every byte is out, but two.bin is not confirmed.
        let lines = screen(&app, at, 100, 30);
        assert!(!lines.iter().any(|l| l.contains("100%")), "{lines:#?}");
        let total = line_with(&lines, "sent 10.00 MiB");
        assert!(total.contains("99%"), "{total}");
        assert!(total.contains("stored 4.00 MiB / 10.00 MiB"), "{total}");
        let current = line_with(&lines, "6.00 MiB / 6.00 MiB");
        assert!(current.contains("99%"), "{current}");
        assert!(
            current.contains("waiting for the server to confirm"),
            "{current}"
        );

        app.transfer(
            TransferMsg::Progress(Event::Finished {
                index: 1,
                result: stored("two.bin", 6 * MIB),
            }),
            at,
        );
        let lines = screen(&app, at, 100, 30);
        let total = line_with(&lines, "sent 10.00 MiB");
        assert!(total.contains("100%"), "{total}");
        assert!(total.contains("stored 10.00 MiB / 10.00 MiB"), "{total}");
        assert!(line_with(&lines, "6.00 MiB / 6.00 MiB").contains("100%"));
    }

    #[test]
    fn a_resumed_file_shows_where_it_picked_up() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let plan = plan_of(vec![
            file("movie.mkv", 40 * MIB),
            file("next.bin", 10 * MIB),
        ]);
        confirm(&mut app, plan, t0);
        let at = t0 + Duration::from_secs(2);
        app.transfer(TransferMsg::Progress(connected()), t0);
        for event in [
            Event::Started { index: 0 },
            Event::Resumed {
                index: 0,
                offset: 12 * MIB,
            },
        ] {
            app.transfer(TransferMsg::Progress(event), t0);
        }
        // Right after the resume the gauge starts at the offset.
        let lines = screen(&app, t0, 100, 30);
        let current = line_with(&lines, "12.00 MiB / 40.00 MiB");
        assert!(current.contains("30%"), "{current}");
        assert!(current.contains("resumed at 12 MiB"), "{current}");
        assert!(line_with(&lines, "Sending").contains("12 MiB already there"));

        for event in [
            Event::Progress {
                index: 0,
                item_sent: 40 * MIB,
                total_sent: 40 * MIB,
            },
            Event::Finished {
                index: 0,
                result: stored("movie.mkv", 40 * MIB),
            },
            Event::Started { index: 1 },
        ] {
            app.transfer(TransferMsg::Progress(event), at);
        }
        let lines = screen(&app, at, 100, 30);
        assert!(line_with(&lines, "✓ movie.mkv").contains("stored (resumed at 12 MiB)"));
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![
                    stored("movie.mkv", 40 * MIB),
                    ItemResult::NotSent {
                        reason: "cancelled".into(),
                    },
                ],
                bytes_sent: 28 * MIB,
                bytes_resumed: 12 * MIB,
                elapsed: Duration::from_secs(2),
                cancelled: true,
            }),
            at,
        );
        let summary = screen(&app, at, 100, 30);
        let total = line_with(&summary, "took 2s");
        // The average counts only what crossed the network, and a file
        // not sent keeps the total short of 100%.
        assert!(total.contains("· 14 MiB/s"), "{total}");
        assert!(total.contains("80%"), "{total}");
        // 28 MiB moved in 2 s: the resumed part is not speed.
        assert!(line_with(&lines, "sent 40.00 MiB").contains("14.00 MiB/s"));
    }

    /// On a narrow screen the header keeps the end of the path, and a gap
    /// before the server's address.
    #[test]
    fn a_narrow_header_keeps_the_end_of_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a-long-folder-name").join("photos");
        std::fs::create_dir_all(&deep).expect("mkdir");
        let app = browsing(&deep);
        let header = screen(&app, Instant::now(), 40, 10)[0].clone();
        assert!(header.contains("…"), "{header}");
        assert!(header.contains("photos "), "{header}");
        assert_eq!(cut_middle("abcdefghij.txt", 9), "abcd….txt");
        assert_eq!(cut_middle("short.txt", 9), "short.txt");
        let cut = cut_middle(&format!("{}.txt", "a".repeat(200)), 20);
        assert_eq!(Span::raw(cut.as_str()).width(), 20, "{cut}");
        assert!(cut.ends_with("a.txt") && cut.contains('…'), "{cut}");
        assert_eq!(cut_middle("日本語のファイル名.txt", 12), "日本…名.txt");
        assert_eq!(keep_end("abcdef", 4), "…def");
        assert_eq!(keep_end("abc", 4), "abc");
    }

    /// While sending, the results box counts files, as the headline does:
    /// an empty folder made on the way is not one.
    #[test]
    fn the_results_box_counts_files_not_folders() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let empty = Item {
            local: PathBuf::from("/here/empty"),
            remote: "empty".into(),
            kind: ItemKind::Folder,
        };
        confirm(
            &mut app,
            plan_of(vec![empty, file("a", 1), file("b", 1)]),
            t0,
        );
        let lines = screen(&app, t0, 80, 24);
        assert!(line_with(&lines, "Sending 2 files").contains("2 files"));
        assert!(
            line_with(&lines, " Done ").contains("Done 0 of 2"),
            "{lines:#?}"
        );
    }

    /// A server that answers "no" is not shown as unreachable.
    #[test]
    fn a_refusing_server_is_shown_as_refused_not_unreachable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut app = browsing(dir.path());
        app.probed(Err(
            "the server refused: it needs a token (--token-file or FERRY_TOKEN)".into(),
        ));
        let header = screen(&app, Instant::now(), 120, 10)[0].clone();
        assert!(
            header.contains("○ the server refused: it needs a token"),
            "{header}"
        );
        assert!(!header.contains("unreachable"), "{header}");
        app.probed(Err("cannot reach 127.0.0.1:1: connection refused".into()));
        let header = screen(&app, Instant::now(), 120, 10)[0].clone();
        assert!(header.contains("unreachable: cannot reach"), "{header}");
    }

    /// Once the transfer has ended the empty file gauge gives its rows to
    /// the results: at 40x10 some results still show.
    #[test]
    fn a_small_summary_gives_the_results_the_file_gauges_room() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        confirm(
            &mut app,
            plan_of(vec![file("a.txt", 1), file("b.txt", 1)]),
            t0,
        );
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![stored("a.txt", 1), stored("b.txt", 1)],
                bytes_sent: 2,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            t0,
        );
        let lines = screen(&app, t0, 40, 10);
        let body = lines.join("\n");
        assert!(!body.contains("┌ File"), "{body}");
        assert!(body.contains("✓ a.txt"), "{body}");
    }

    /// The walk sends in byte order (f1, f10, f2); the plan and the summary
    /// list the files as people count them, as the picker does.
    #[test]
    fn plan_and_summary_list_files_in_counting_order() {
        let names = ["shots/f1.png", "shots/f10.png", "shots/f2.png"];
        let rows_in = |lines: &[String]| -> Vec<usize> {
            names
                .iter()
                .map(|n| {
                    lines
                        .iter()
                        .position(|l| l.contains(n))
                        .unwrap_or_else(|| panic!("no {n} in:\n{}", lines.join("\n")))
                })
                .collect()
        };
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let plan = plan_of(names.iter().map(|n| file(n, 1)).collect());
        app.transfer(TransferMsg::Planned(plan.clone()), t0);
        app.transfer(TransferMsg::Checked(Ok(vec![Some(Verdict::New); 3])), t0);
        let [one, ten, two] = rows_in(&screen(&app, t0, 80, 24))[..] else {
            unreachable!()
        };
        assert!(one < two && two < ten, "plan rows: {one} {two} {ten}");

        let mut app = asked_to_send();
        confirm(&mut app, plan, t0);
        app.transfer(
            TransferMsg::Done(Report {
                results: names.iter().map(|n| stored(n, 1)).collect(),
                bytes_sent: 3,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            t0,
        );
        let [one, ten, two] = rows_in(&screen(&app, t0, 80, 24))[..] else {
            unreachable!()
        };
        assert!(one < two && two < ten, "summary rows: {one} {two} {ten}");
    }

    /// Names on the summary are escaped as on the plan.
    #[test]
    fn summary_names_show_control_characters_escaped() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        confirm(&mut app, plan_of(vec![file("nl\nname.txt", 1)]), t0);
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![stored("nl\nname.txt", 1)],
                bytes_sent: 1,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            t0,
        );
        let lines = screen(&app, t0, 80, 24);
        assert!(
            lines.iter().any(|l| l.contains("nl\\nname.txt")),
            "{}",
            lines.join("\n")
        );
    }

    /// A control character in a name is shown escaped in the list, not
    /// dropped (which would show another name) nor sent to the terminal.
    #[test]
    fn control_characters_in_names_are_shown_escaped() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ctrl\u{1}char.txt"), b"x").expect("write");
        let app = browsing(dir.path());
        let lines = screen(&app, Instant::now(), 80, 10);
        assert!(
            lines.iter().any(|l| l.contains("ctrl\\u{1}char.txt")),
            "{}",
            lines.join("\n")
        );
    }

    /// Wide (CJK) names take two columns a character: the sizes after them
    /// still line up.
    #[test]
    fn plan_sizes_line_up_after_wide_names() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let plan = plan_of(vec![file("漢字.txt", 1), file("abcdefgh.txt", 1)]);
        app.transfer(TransferMsg::Planned(plan), t0);
        app.transfer(
            TransferMsg::Checked(Ok(vec![Some(Verdict::New), Some(Verdict::New)])),
            t0,
        );
        let lines = screen(&app, t0, 80, 24);
        // One string character per cell: a wide character's second cell
        // reads as a space, so character positions are columns.
        let size_at = |needle: &str| {
            let line = line_with(&lines, needle);
            line[..line.find("1 B").expect("a size")].chars().count()
        };
        assert_eq!(
            size_at("漢"),
            size_at("abcdefgh.txt"),
            "{}",
            lines.join("\n")
        );
    }

    /// The plan lists what cannot be sent first, then clashes and resumes,
    /// then new files, whatever the order of the files.
    #[test]
    fn the_plan_puts_refusals_first_then_clashes() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let plan = plan_of(vec![file("a.txt", 1), file("b.txt", 1), file("c.txt", 1)]);
        app.transfer(TransferMsg::Planned(plan), t0);
        app.transfer(
            TransferMsg::Checked(Ok(vec![
                Some(Verdict::New),
                Some(Verdict::Clash {
                    result: Clash::Renamed,
                    stored_as: "b (1).txt".into(),
                }),
                Some(Verdict::Refused {
                    code: ErrorCode::TooLarge,
                    message: "over the limit".into(),
                }),
            ])),
            t0,
        );
        let lines = screen(&app, t0, 80, 24);
        let at = |name: &str| {
            lines
                .iter()
                .position(|l| l.contains(name))
                .unwrap_or_else(|| panic!("no {name}:\n{}", lines.join("\n")))
        };
        assert!(at("c.txt") < at("b.txt"), "{}", lines.join("\n"));
        assert!(at("b.txt") < at("a.txt"), "{}", lines.join("\n"));
    }

    /// A long summary puts what failed first, and scrolls: with 40 files
    /// and two failures near the end, the failures are on the first screen,
    /// and G shows the last stored file.
    #[test]
    fn a_long_summary_shows_failures_first_and_scrolls() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let names: Vec<String> = (0..40).map(|i| format!("f{i:02}.txt")).collect();
        let items = names.iter().map(|n| file(n, 1)).collect();
        confirm(&mut app, plan_of(items), t0);
        let results = names
            .iter()
            .map(|n| match n.as_str() {
                "f35.txt" | "f37.txt" => ItemResult::Failed {
                    reason: "the disk is full".into(),
                },
                _ => stored(n, 1),
            })
            .collect();
        app.transfer(
            TransferMsg::Done(Report {
                results,
                bytes_sent: 40,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            t0,
        );
        app.set_scroll_rows(scroll_rows(Rect::new(0, 0, 80, 24)));
        let lines = screen(&app, t0, 80, 24);
        let body = lines.join("\n");
        let first_row = lines
            .iter()
            .position(|l| l.contains("Results, problems first"))
            .expect("the results box")
            + 1;
        assert!(lines[first_row].contains("✗ f35.txt"), "{body}");
        assert!(lines[first_row + 1].contains("✗ f37.txt"), "{body}");
        assert!(!body.contains("f39.txt"), "{body}");
        assert!(body.contains("j/k scroll"), "{body}");

        app.handle_key(KeyEvent::from(KeyCode::Char('G')));
        let lines = screen(&app, t0, 80, 24);
        let body = lines.join("\n");
        assert!(body.contains("✓ f39.txt"), "{body}");
        assert!(!body.contains("✗ f35.txt"), "{body}");
        app.handle_key(KeyEvent::from(KeyCode::Char('g')));
        let body = screen(&app, t0, 80, 24).join("\n");
        assert!(
            body.contains("✗ f35.txt"),
            "scrolling keeps the summary: {body}"
        );
        // Any other key still goes back to the list.
        app.handle_key(KeyEvent::from(KeyCode::Char('x')));
        assert!(matches!(app.screen, Screen::Browse));
    }

    #[test]
    fn summary_offers_retry_only_when_something_failed() {
        let mut app = asked_to_send();
        let t0 = Instant::now();
        let plan = plan_of(vec![file("a.txt", 1), file("b.txt", 1)]);
        let items = plan.items.clone();
        app.transfer(TransferMsg::Planned(plan), t0);
        app.transfer(
            TransferMsg::Checked(Ok(vec![
                Some(Verdict::Identical),
                Some(Verdict::Refused {
                    code: ErrorCode::NoSpace,
                    message: "no room left on the server".into(),
                }),
            ])),
            t0,
        );
        let Some(Action::Go(dispatch)) = app.handle_key(KeyEvent::from(KeyCode::Enter)) else {
            panic!("Enter sends")
        };
        assert!(dispatch.send.is_empty(), "nothing left to send");
        let report = dispatch.report(Report {
            results: Vec::new(),
            bytes_sent: 0,
            bytes_resumed: 0,
            elapsed: Duration::ZERO,
            cancelled: false,
        });
        assert_eq!(report.results.len(), items.len());
        app.transfer(TransferMsg::Done(report), t0);
        let lines = screen(&app, t0, 100, 24);
        assert!(line_with(&lines, "= a.txt").contains("identical, skipped"));
        // The box counts files done out of files.
        assert!(
            line_with(&lines, "Results").contains("Results"),
            "{lines:#?}"
        );
        assert!(line_with(&lines, "✗ b.txt").contains("failed: no room left on the server"));
        assert!(line_with(&lines, "Total").contains("Total"));
        assert!(line_with(&lines, "nothing was sent").contains("nothing was sent"));
        // What the server already had is not counted as stored now.
        assert!(
            line_with(&lines, "Finished").contains("0 stored, 1 already there, 1 failed"),
            "{lines:#?}"
        );
        assert!(
            lines[lines.len() - 1].contains("r retry failed"),
            "{lines:#?}"
        );

        let mut app = asked_to_send();
        confirm(&mut app, plan_of(vec![file("a.txt", 1)]), t0);
        app.transfer(
            TransferMsg::Done(Report {
                results: vec![stored("a.txt", 1)],
                bytes_sent: 1,
                bytes_resumed: 0,
                elapsed: Duration::from_secs(1),
                cancelled: false,
            }),
            t0,
        );
        let lines = screen(&app, t0, 100, 24);
        assert!(!lines[lines.len() - 1].contains("retry"), "{lines:#?}");
        assert!(lines[lines.len() - 1].contains("back to the list"));
    }
}
