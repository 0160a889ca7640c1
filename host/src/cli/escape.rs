//! Text that a plugin (or a lab) controls, made safe for where the CLI puts it: a
//! terminal, an HTML page, a CSV file.
//!
//! A plugin chooses its log lines, failure messages, metric names and values, and the names
//! of the files it writes. Printed raw, such text drives the reader's terminal (`ESC ]52`
//! writes the clipboard, `ESC [` moves the cursor, `ESC ]8` makes links, a carriage return or
//! a newline forges lines of repx's own output), becomes markup in the report, or a formula
//! in a spreadsheet. Each function here is the one way such text reaches its destination:
//! - [`terminal`]: every control character, newlines included, and every bidirectional
//!   override written as a visible escape (`\u{1b}`, `\n`); tabs kept;
//! - [`terminal_lines`]: the same, keeping the newlines, for text shown as whole lines
//!   (a log on a terminal);
//! - [`html`]: for HTML text and quoted attribute values alike, controls escaped as for a
//!   terminal;
//! - [`csv_cell`]: a CSV field that a spreadsheet cannot take for a formula.
//!
//! Invariant: nothing a plugin wrote is printed, or written into a page or a table,
//! without going through one of these.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: C0 and C1 controls and DEL (which start
/// or end escape sequences, or move the cursor) and the bidirectional formatting characters
/// (which reorder what is shown). A tab only moves to the next tab stop, and stays.
fn unsafe_on_terminal(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_where(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| unsafe_on_terminal(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_on_terminal(c) && !keep(c) {
            // `\n`, `\r`, `\u{1b}`: what Rust would write, visible and inert.
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` as one inert piece of a line on a terminal: every control character (newlines
/// too) and bidirectional override escaped.
pub fn terminal(text: &str) -> Cow<'_, str> {
    escape_where(text, |_| false)
}

/// `text` as lines on a terminal: as [`terminal`], but newlines stay newlines.
pub fn terminal_lines(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c == '\n')
}

/// `text` as HTML: fit for element content and for attribute values in double or single
/// quotes.
pub fn html(text: &str) -> Cow<'_, str> {
    // Controls first, as on a terminal: a page may be read with `cat` too, and HTML has no
    // reference that makes ESC or BEL inert.
    let text = terminal_lines(text);
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `field` as one CSV field (RFC 4180: quoted when it holds a comma, a quote or a line
/// break). A field that a spreadsheet would read as a formula (starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) gets a leading `'`, as OWASP advises against CSV
/// injection; a number (`-1.5`, `+3e2`) is left as it is, since it is no formula.
pub fn csv_cell(field: &str) -> Cow<'_, str> {
    let formula = field.starts_with(['=', '+', '-', '@', '\t', '\r'])
        && !field.parse::<f64>().is_ok_and(f64::is_finite);
    let field: Cow<'_, str> = if formula {
        Cow::Owned(format!("'{field}"))
    } else {
        Cow::Borrowed(field)
    };
    if field.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_has_no_control_character_left() {
        let hostile = "a\u{1b}]52;c;cHduZWQ=\u{7}b\u{1b}[2Jc\rd\ne\u{9b}31mf\u{202e}g\u{7f}";
        let shown = terminal(hostile);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert_eq!(
            shown,
            "a\\u{1b}]52;c;cHduZWQ=\\u{7}b\\u{1b}[2Jc\\rd\\ne\\u{9b}31mf\\u{202e}g\\u{7f}"
        );
        assert_eq!(terminal("plain\ttext é"), "plain\ttext é");
        assert!(matches!(terminal("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_lines_keep_newlines_only() {
        assert_eq!(
            terminal_lines("one\r\ntwo\u{1b}[A\n"),
            "one\\r\ntwo\\u{1b}[A\n"
        );
    }

    #[test]
    fn html_escapes_markup_and_both_quotes() {
        assert_eq!(
            html("\" onmouseover='x' ><script>&"),
            "&quot; onmouseover=&#39;x&#39; &gt;&lt;script&gt;&amp;"
        );
        assert_eq!(html("plain"), "plain");
        assert_eq!(html("\u{1b}[31m<b>"), "\\u{1b}[31m&lt;b&gt;");
    }

    #[test]
    fn csv_formulas_are_neutralised_and_numbers_kept() {
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+cmd"), "'+cmd");
        assert_eq!(csv_cell("-2+3"), "'-2+3");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell("\rx"), "\"'\rx\"");
        assert_eq!(csv_cell("-1.5"), "-1.5");
        assert_eq!(csv_cell("+3e2"), "+3e2");
        assert_eq!(csv_cell("-inf"), "'-inf");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("plain"), "plain");
    }
}
