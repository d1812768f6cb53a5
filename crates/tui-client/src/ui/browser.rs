//! The folder list: one row per entry with its mark, name and size.

use ferry_proto::path::escape_for_display;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, HighlightSpacing, Paragraph, Row, Table, TableState};

use super::{bytes, fit_name_and_note};
use crate::app::App;
use crate::browse::{Entry, EntryKind, FolderSize, Sizing};

/// Width of the size column: fits "1023.99 KiB…".
const SIZE_WIDTH: u16 = 13;

/// The rows a list drawn in `area` has room for (inside its border).
pub(super) fn rows_inside(area: Rect) -> usize {
    usize::from(area.height.saturating_sub(2)).max(1)
}

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let listing = &app.listing;
    let mut block = Block::bordered().border_style(Style::new().dark_gray());
    if !listing.filter().is_empty() {
        block = block.title(Line::from(format!(" filter: {} ", listing.filter())).yellow());
    }
    let hidden = listing.hidden_count();
    if hidden > 0 {
        block = block.title(
            Line::from(format!(" {hidden} hidden "))
                .dark_gray()
                .right_aligned(),
        );
    }

    if listing.visible_len() == 0 {
        let why = if !listing.is_read() && app.reading() {
            "reading this folder…"
        } else if !listing.is_read() {
            // The status line below says why.
            "this folder could not be read"
        } else if !listing.filter().is_empty() {
            "nothing matches the filter (Esc clears it)"
        } else if hidden > 0 {
            "only hidden entries here (. shows them)"
        } else {
            "this folder is empty"
        };
        frame.render_widget(
            Paragraph::new(Line::raw(why).dark_gray().italic()).block(block),
            area,
        );
        return;
    }

    // What the name column keeps of the width: the border, the cursor,
    // the mark, the size and the gaps between them take the rest.
    let name_room = usize::from(area.width.saturating_sub(2 + 2 + 1 + SIZE_WIDTH + 2));
    let rows = listing.visible().map(|entry| row(app, entry, name_room));
    let table = Table::new(
        rows,
        [
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(SIZE_WIDTH),
        ],
    )
    .block(block)
    .column_spacing(1)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol("▶ ")
    .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::new()
        .with_offset(listing.offset())
        .with_selected(Some(listing.cursor()));
    frame.render_stateful_widget(table, area, &mut state);
}

/// One entry's row; a name longer than `name_room` gives up its middle,
/// so that its extension and what is wrong with it stay in sight.
fn row<'a>(app: &App, entry: &'a Entry, name_room: usize) -> Row<'a> {
    let marked = app.marks.contains(&entry.path);
    let mark = if marked {
        Span::styled("*", Style::new().fg(Color::Yellow).bold())
    } else {
        Span::raw(" ")
    };
    // Control characters in a name would act on the terminal, or vanish:
    // they are shown escaped, as everywhere else.
    let mut shown = escape_for_display(&entry.name);
    if entry.kind == EntryKind::Folder {
        shown.push('/');
    }
    // A link is sent as what it points to only with -L; otherwise the
    // plan skips it, and the row says so before anyone marks it (unless
    // what is wrong with it says more).
    let link = if app.marks.skips(entry) && entry.problem.is_none() {
        " (link, not sent)"
    } else if entry.is_link {
        " (link)"
    } else {
        ""
    };
    let problem = entry
        .problem
        .as_ref()
        .map(|problem| format!(" ({problem})"))
        .unwrap_or_default();
    let (shown, note) = fit_name_and_note(&shown, &format!("{link}{problem}"), name_room);
    let mut name = vec![match entry.kind {
        EntryKind::Folder => Span::styled(shown, Style::new().fg(Color::Blue).bold()),
        EntryKind::File => Span::raw(shown),
        EntryKind::Other => Span::styled(shown, Style::new().dark_gray()),
    }];
    // The note keeps its two colours, "(link)" grey and the problem red,
    // even when it was cut.
    let (grey, red) = match note.strip_prefix(link) {
        Some(rest) => (link, rest),
        None => (note.as_str(), ""),
    };
    if !grey.is_empty() {
        name.push(Span::raw(grey.to_string()).dark_gray());
    }
    if !red.is_empty() {
        name.push(Span::styled(red.to_string(), Style::new().fg(Color::Red)));
    }
    let mut row = Row::new([
        Cell::from(mark),
        Cell::from(Line::from(name)),
        Cell::from(Line::from(size_text(app, entry)).right_aligned()),
    ]);
    if marked {
        row = row.style(Style::new().fg(Color::Yellow));
    }
    row
}

/// What sending the entry would send: nothing for a link that is not
/// followed, whatever the size of what it points to.
fn size_text(app: &App, entry: &Entry) -> String {
    if app.marks.skips(entry) {
        return String::new();
    }
    match entry.kind {
        EntryKind::File => entry.size.map(bytes).unwrap_or_default(),
        EntryKind::Folder => match app.sizes.get(&entry.path) {
            Some(Sizing::Known(size)) => folder_size(size),
            Some(Sizing::Counting(size)) => format!("{}…", bytes(size.bytes)),
            Some(Sizing::Pending) => "…".into(),
            None => String::new(),
        },
        EntryKind::Other => String::new(),
    }
}

fn folder_size(size: &FolderSize) -> String {
    // Parts that could not be read are not counted: say it is a minimum.
    if size.unreadable > 0 {
        format!("≥{}", bytes(size.bytes))
    } else {
        bytes(size.bytes)
    }
}
