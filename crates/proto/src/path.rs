//! What counts as a valid name on the wire.
//!
//! A path in a Ferry message is a plain relative path: components separated
//! by `/`, each a plain name. Anything that could climb out of the target
//! folder, be read differently on another system, or spoof a terminal or log
//! is refused, never rewritten: a silent rewrite would store a file somewhere
//! the sender did not ask for. Senders and servers share these rules, so a
//! sender can refuse a name before it costs a round trip.

use std::borrow::Cow;

use thiserror::Error;
use unicode_normalization::{UnicodeNormalization, is_nfc};

/// Longest single component, in bytes: the common file-system limit.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Longest whole path, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Deepest path accepted, in components.
pub const MAX_DEPTH: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("absolute paths are not allowed")]
    Absolute,
    #[error("the path has an empty component (`//` or a trailing `/`)")]
    EmptyComponent,
    #[error("`.` and `..` are not allowed as components")]
    DotComponent,
    #[error("backslashes are not allowed (use `/` between folders)")]
    Backslash,
    #[error("`:` is not allowed (drive letters and streams)")]
    Colon,
    #[error("control characters (including NUL and ESC) are not allowed")]
    Control,
    #[error("invisible or direction-changing characters are not allowed")]
    Invisible,
    #[error("`{0}` cannot be stored on Windows (this server keeps names portable)")]
    NotPortable(String),
    #[error("a component is {0} bytes, over the {MAX_COMPONENT_BYTES}-byte limit")]
    ComponentTooLong(usize),
    #[error("the path is {0} bytes, over the {MAX_PATH_BYTES}-byte limit")]
    PathTooLong(usize),
    #[error("the path is {0} folders deep, over the limit of {MAX_DEPTH}")]
    TooDeep(usize),
}

/// Checks `path` and returns its components.
pub fn components(path: &str) -> Result<Vec<&str>, NameError> {
    if path.is_empty() {
        return Err(NameError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(NameError::PathTooLong(path.len()));
    }
    if path.starts_with('/') {
        return Err(NameError::Absolute);
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(NameError::TooDeep(parts.len()));
    }
    for part in &parts {
        check_component(part)?;
    }
    Ok(parts)
}

/// Checks one component (a single file or folder name).
pub fn check_component(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::EmptyComponent);
    }
    if name == "." || name == ".." {
        return Err(NameError::DotComponent);
    }
    if name.len() > MAX_COMPONENT_BYTES {
        return Err(NameError::ComponentTooLong(name.len()));
    }
    let mut prev = None;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' => return Err(NameError::EmptyComponent),
            '\\' => return Err(NameError::Backslash),
            ':' => return Err(NameError::Colon),
            c if c.is_control() => return Err(NameError::Control),
            c if hides(prev, c, chars.peek().copied()) => return Err(NameError::Invisible),
            _ => {}
        }
        prev = Some(c);
    }
    Ok(())
}

/// The canonical (NFC) form of a name: the same name typed on different
/// systems (macOS writes `é` as `e` plus a combining accent) becomes the same
/// bytes, so two names that look alike can never sit side by side.
pub fn canonical(path: &str) -> Cow<'_, str> {
    if is_nfc(path) {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(path.nfc().collect())
    }
}

/// Checks a component against what Windows cannot store: its reserved
/// device names (`CON`, `NUL`, `COM1`, ... with or without an extension),
/// a trailing dot or space, and `<>"|?*`. Used when a server keeps names
/// portable.
pub fn check_portable(name: &str) -> Result<(), NameError> {
    let refuse = || Err(NameError::NotPortable(escape_for_display(name)));
    if name.ends_with('.') || name.ends_with(' ') {
        return refuse();
    }
    if name.contains(['<', '>', '"', '|', '?', '*']) {
        return refuse();
    }
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    let upper = stem.to_ascii_uppercase();
    let reserved = matches!(upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && upper.as_bytes()[3].is_ascii_digit()
            && upper.as_bytes()[3] != b'0');
    if reserved { refuse() } else { Ok(()) }
}

/// Characters that print as nothing yet change how a name reads, so that
/// two names that look the same could sit side by side: Unicode's default
/// ignorable code points (zero-width spaces and joiners, soft hyphens,
/// fillers, variation selectors, tags, bidirectional controls, which can
/// make `exe.txt` show as `txt.exe`) and the line and paragraph separators.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}'
        | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// Whether `c`, between `prev` and `next`, hides in a name. Some
/// invisible characters are part of how a name is written, and pass where
/// they do that:
/// - a variation selector after an emoji (its colour form, as in `❤️`), a
///   CJK ideograph (a glyph variant) or, for the Mongolian selectors, a
///   Mongolian letter; and U+FE0F in a keycap (`1️⃣`);
/// - a zero-width joiner or non-joiner between two letters of the scripts
///   that write with them (Arabic and Persian, the Indic scripts: `کتاب‌ها`,
///   `ශ්‍රී`), or between emoji (`👨‍👩‍👧`).
///
/// Tag characters (subdivision flags) are always refused: they can carry
/// hidden text.
///
/// Anywhere else (after ASCII, at the start or end, after another
/// invisible character) they only hide: `café` plus a selector looks just
/// like `café`.
fn hides(prev: Option<char>, c: char, next: Option<char>) -> bool {
    if !is_invisible(c) {
        return false;
    }
    let Some(prev) = prev else {
        return true;
    };
    // Letters of the scripts that write with joiners, and emoji.
    let joins = |x: char| uses_joiners(x) || is_emoji(x);
    let drawn = match c {
        '\u{FE0F}' if matches!(prev, '0'..='9' | '#' | '*') => next == Some('\u{20E3}'),
        '\u{FE00}'..='\u{FE0F}' => is_emoji(prev) || is_cjk(prev),
        '\u{E0100}'..='\u{E01EF}' => is_cjk(prev),
        '\u{180B}'..='\u{180D}' | '\u{180F}' => matches!(prev, '\u{1800}'..='\u{18AF}'),
        // A joiner may follow an emoji's selector (`❤️‍🔥`).
        '\u{200C}' | '\u{200D}' => (joins(prev) || prev == '\u{FE0F}') && next.is_some_and(joins),
        _ => false,
    };
    !drawn
}

/// Characters drawn as emoji when a selector asks (the blocks of symbols,
/// dingbats and pictographs that hold them).
fn is_emoji(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{21FF}'
        | '\u{2300}'..='\u{23FF}'
        | '\u{24C2}'
        | '\u{25A0}'..='\u{27BF}'
        | '\u{2900}'..='\u{297F}'
        | '\u{2B00}'..='\u{2BFF}'
        | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{1F000}'..='\u{1FAFF}')
}

/// Letters of scripts in which a zero-width joiner or non-joiner changes
/// how a word is written: Arabic (and Persian, Urdu) and the Indic scripts
/// from Devanagari to Sinhala.
fn uses_joiners(c: char) -> bool {
    matches!(c,
        '\u{0600}'..='\u{06FF}'
        | '\u{0750}'..='\u{077F}'
        | '\u{08A0}'..='\u{08FF}'
        | '\u{FB50}'..='\u{FDFF}'
        | '\u{FE70}'..='\u{FEFF}'
        | '\u{0900}'..='\u{0DFF}')
}

/// CJK ideographs, which have glyph variants.
fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{3FFFF}')
}

/// Writes `text` so that it is safe to print in a log line or a terminal:
/// control and invisible characters become escapes (`\n`, `\u{1b}`) instead
/// of acting on the terminal or hiding; everything else prints as it is.
pub fn escape_for_display(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_control() || hides(prev, c, chars.peek().copied()) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        assert_eq!(components("a.txt").expect("ok"), ["a.txt"]);
        assert_eq!(
            components("a/b c/ä.jpg").expect("ok"),
            ["a", "b c", "ä.jpg"]
        );
        assert_eq!(
            components(".hidden/..dots...").expect("ok"),
            [".hidden", "..dots..."]
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("..", NameError::DotComponent),
            (".", NameError::DotComponent),
            ("../x", NameError::DotComponent),
            ("a/../../x", NameError::DotComponent),
            ("a/./b", NameError::DotComponent),
            ("a//b", NameError::EmptyComponent),
            ("a/", NameError::EmptyComponent),
            ("..\\..\\x", NameError::Backslash),
            ("\\\\srv\\share", NameError::Backslash),
            ("C:\\x", NameError::Colon),
            ("C:x", NameError::Colon),
            ("a\0b", NameError::Control),
            ("a\nb", NameError::Control),
            ("\u{1b}[2Jboom", NameError::Control),
            ("\u{9b}x", NameError::Control),
            ("invoice\u{202E}fdp.exe", NameError::Invisible),
            ("zero\u{200B}width", NameError::Invisible),
            ("\u{FEFF}bom", NameError::Invisible),
            ("invoice\u{FE0F}.pdf", NameError::Invisible),
            ("\u{FE0F}x", NameError::Invisible),
            ("\u{2764}\u{200B}\u{FE0F}", NameError::Invisible),
            ("grapheme\u{034F}joiner", NameError::Invisible),
            ("\u{3164}", NameError::Invisible),
            ("half\u{FFA0}width", NameError::Invisible),
            ("hangul\u{115F}", NameError::Invisible),
            ("khmer\u{17B4}", NameError::Invisible),
            ("mongolian\u{180B}", NameError::Invisible),
            ("tag\u{E0041}", NameError::Invisible),
            ("music\u{1D173}", NameError::Invisible),
            ("line\u{2028}break", NameError::Invisible),
            ("para\u{2029}break", NameError::Invisible),
        ];
        for (path, want) in cases {
            assert_eq!(components(path).as_ref(), Err(want), "{path:?}");
        }
    }

    #[test]
    fn variation_selectors_stay_where_they_draw_something() {
        // Emoji in their colour form, and a CJK variant: real names.
        for name in [
            "\u{2764}\u{FE0F} notes.txt",
            "\u{1F600}\u{FE0F}.png",
            "\u{845B}\u{E0100}.txt",
            "\u{1820}\u{180B}.txt",
            // Persian with a non-joiner, Sinhala with a joiner.
            "\u{6A9}\u{62A}\u{627}\u{628}\u{200C}\u{647}\u{627}.docx",
            "\u{DC1}\u{DCA}\u{200D}\u{DBB}\u{DD3}",
            // A family, a rainbow flag, a keycap, a flag with tags.
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}.jpg",
            "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",
            "1\u{FE0F}\u{20E3} first",
        ] {
            assert_eq!(components(name), Ok(vec![name]), "{name:?}");
            assert_eq!(escape_for_display(name), name);
        }
        assert_eq!(
            escape_for_display("invoice\u{FE0F}.pdf"),
            "invoice\\u{fe0f}.pdf"
        );
        // After a letter that is not ASCII it still only hides.
        for name in [
            "caf\u{E9}\u{FE0F}.pdf",
            "r\u{E9}sum\u{E9}\u{E0100}.pdf",
            "\u{430}\u{FE0F}",
            "\u{845B}\u{180B}",
            // Joiners where nothing is joined, a lone keycap selector,
            // tags outside a flag.
            "invoice\u{200D}.pdf",
            "\u{6A9}\u{200C}",
            "\u{200D}\u{6A9}",
            "a\u{200C}b",
            "1\u{FE0F}x",
            "tag\u{E0067}",
            // Joiners in scripts that do not use them: look-alikes.
            "\u{41E}\u{442}\u{200D}\u{447}\u{451}\u{442}.pdf",
            "\u{5831}\u{544A}\u{200C}\u{66F8}.pdf",
            "caf\u{E9}\u{200D}\u{E9}",
            // Tags, even in a flag.
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
            "\u{1F3F4}\u{E0041}.txt",
        ] {
            assert_eq!(components(name), Err(NameError::Invisible), "{name:?}");
        }
    }

    #[test]
    fn length_limits_count_bytes() {
        let ok = "é".repeat(127); // 254 bytes
        assert!(components(&ok).is_ok());
        let long = "é".repeat(128); // 256 bytes
        assert_eq!(components(&long), Err(NameError::ComponentTooLong(256)));
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert_eq!(components(&deep), Err(NameError::TooDeep(MAX_DEPTH + 1)));
        let wide = vec!["x".repeat(200); 30].join("/");
        assert!(matches!(components(&wide), Err(NameError::PathTooLong(_))));
    }

    #[test]
    fn look_alike_names_become_one() {
        let decomposed = "cafe\u{301}.txt";
        let composed = "caf\u{e9}.txt";
        assert_ne!(decomposed, composed);
        assert_eq!(canonical(decomposed), composed);
        assert!(matches!(canonical(composed), Cow::Borrowed(_)));
    }

    #[test]
    fn windows_reserved_names_are_not_portable() {
        for bad in [
            "CON", "con.txt", "Nul", "COM1.log", "lpt9", "dot.", "space ", "a?b", "x|y",
        ] {
            assert!(check_portable(bad).is_err(), "{bad}");
        }
        for good in ["console.txt", "COM0", "COM10", "LPT", "nully", "a.b"] {
            assert!(check_portable(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn display_escaping_neutralises_terminal_controls() {
        assert_eq!(escape_for_display("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(escape_for_display("plain ä 'q' \\"), "plain ä 'q' \\");
        assert_eq!(escape_for_display("a\u{202E}b"), "a\\u{202e}b");
    }
}
