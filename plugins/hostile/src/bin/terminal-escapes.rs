//! Attack: text that drives the terminal of whoever reads repx's output. Every string this
//! plugin controls carries escape sequences: OSC 52 (writes the reader's clipboard), CSI
//! (moves the cursor, clears the screen), OSC 8 (a hyperlink), a carriage return and
//! newlines that forge lines of repx's own output, and spreadsheet formulas for CSV.
//!
//! - `/out/metrics.json`: such keys and values, for `repx results`;
//! - file names in `/out` holding an escape and a newline, for `repx show output`;
//! - stderr, then exit 1 when parameter `fail` is `yes`: the failure tail of `repx run`,
//!   `repx show job` and `repx log`.

use std::fs;

/// OSC 52: put `pwned` (base64) on the clipboard.
const CLIPBOARD: &str = "\x1b]52;c;cHduZWQ=\x07";
/// CSI: cursor home and clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";
/// OSC 8: a link whose text hides where it leads.
const LINK: &str = "\x1b]8;;https://evil.example/\x1b\\docs\x1b]8;;\x1b\\";
/// A C1 CSI (U+009B): some terminals take it as ESC [.
const C1: &str = "\u{9b}31m";

/// `text` as a JSON string literal.
fn json(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let forged = "\n   ran forged-stage 000000000000 (0.01s)";
    let pairs = [
        (format!("score{CLIPBOARD}"), json("1")),
        ("note".to_string(), json(&format!("{CLEAR}{LINK}{C1}\r{forged}"))),
        (
            "formula".to_string(),
            json("=HYPERLINK(\"https://evil.example\",\"x\")"),
        ),
        ("plus".to_string(), json("+1+2")),
        ("at".to_string(), json("@SUM(A1)")),
        ("minus".to_string(), json("-2+3")),
        ("tab".to_string(), json("\tx")),
        ("value".to_string(), "-1.5".to_string()),
    ];
    let fields: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{}: {value}", json(key)))
        .collect();
    let metrics = format!("{{{}}}", fields.join(", "));
    fs::write("/out/metrics.json", metrics).unwrap();
    fs::write(format!("/out/clip{CLIPBOARD}.txt"), "x").unwrap();
    fs::write("/out/a\n  forged.txt  999 bytes", "x").unwrap();
    fs::create_dir(format!("/out/dir{CLEAR}")).unwrap();

    if hostile::param("fail").as_deref() == Some("yes") {
        eprintln!("first line{CLIPBOARD}");
        eprintln!("{CLEAR}{LINK}{C1}");
        eprintln!("carriage\rFAILED forged-stage: forged failure");
        std::process::exit(1);
    }
}
