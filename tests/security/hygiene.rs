//! Output hygiene: what a plugin or a lab controls reaches a terminal, a CSV file or the
//! report page only escaped, files the CLI writes never follow a link planted where they
//! go, and names given on the command line are checked as the lab's are.

use std::fs;

use crate::attack_lab;
use crate::common::repx;

/// The tags of an HTML page, each as its name and the names of its attributes; quoted
/// attribute values are skipped whole, as a browser reads them.
fn tags(page: &str) -> Vec<(String, Vec<String>)> {
    let mut tags = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        if !rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
            continue;
        }
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = &rest[name_end..];
        let mut attributes = Vec::new();
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
            if rest.is_empty() || rest.starts_with('>') {
                break;
            }
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '=' || c == '>')
                .unwrap_or(rest.len());
            attributes.push(rest[..end].to_ascii_lowercase());
            rest = &rest[end..];
            if let Some(value) = rest.strip_prefix('=') {
                rest = match value.chars().next() {
                    Some(quote @ ('"' | '\'')) => match value[1..].find(quote) {
                        Some(close) => &value[close + 2..],
                        None => "",
                    },
                    _ => value.trim_start_matches(|c: char| !c.is_whitespace() && c != '>'),
                };
            }
        }
        tags.push((name, attributes));
    }
    tags
}

#[test]
fn report_escapes_lab_parameters_in_attributes_and_text() {
    // A parameter named like the state column once became the cell's class attribute.
    let toml = r#"
[stages.gen]
plugin = "plugins/terminal-escapes.wasm"
params = { note = "", state = "\" onmouseover=\"alert(1)\" data-pwned=\"", id = "'><script>alert(2)</script>" }

[pipelines.main]
stages = ["gen"]

[runs.main]
pipelines = ["main"]
params = { note = ["\"><img src=x onerror=alert(3)>", "plain"] }
"#;
    let lab = attack_lab(toml, &["terminal-escapes"]);
    repx(lab.path(), &["run"]).expect_code(0);
    repx(lab.path(), &["report", "-o", "page.html"]).expect_code(0);
    let page = fs::read_to_string(lab.path().join("page.html")).unwrap();

    // The values are on the page, as text.
    for shown in [
        "&quot; onmouseover=&quot;alert(1)&quot;",
        "&lt;script&gt;alert(2)&lt;/script&gt;",
        "&lt;img src=x onerror=alert(3)&gt;",
    ] {
        assert!(page.contains(shown), "the page does not show {shown}");
    }
    let tags = tags(&page);
    let names: Vec<&str> = tags.iter().map(|(n, _)| n.as_str()).collect();
    for injected in ["script", "img"] {
        let allowed =
            usize::from(injected == "img") * names.iter().filter(|n| **n == "figure").count();
        let found = names.iter().filter(|n| **n == injected).count();
        assert_eq!(found, allowed, "<{injected}> elements on the page: {found}");
    }
    for (name, attributes) in &tags {
        for attribute in attributes {
            assert!(
                !attribute.starts_with("on") && attribute != "data-pwned",
                "<{name}> has an injected attribute `{attribute}`"
            );
        }
    }
}

#[test]
fn ad_hoc_input_names_are_checked_as_lab_input_names() {
    let lab = attack_lab("", &["generate"]);
    let before = crate::HostState::of(lab.path());
    for depth in 1..=6 {
        let spec = format!("{}PWNED-input-{depth}=data", "../".repeat(depth));
        let out = repx(
            lab.path(),
            &["run", "--plugin", "plugins/generate.wasm", "--input", &spec],
        );
        out.expect_code(2)
            .expect_stderr(&[&format!("--input {spec}"), "is not a valid input name"]);
    }
    for bad in ["", ".", "..", "a/b", "/abs", "new\nline"] {
        let spec = format!("{bad}=data");
        repx(
            lab.path(),
            &["run", "--plugin", "plugins/generate.wasm", "--input", &spec],
        )
        .expect_code(2)
        .expect_stderr(&["is not a valid input name"]);
    }
    // Nothing was made anywhere, not even a store.
    assert!(!lab.path().join(".repx").exists());
    crate::assert_untouched(lab.path(), &before);
    // A good name still works.
    repx(
        lab.path(),
        &[
            "run",
            "--plugin",
            "plugins/generate.wasm",
            "--input",
            "data.v2=data",
        ],
    )
    .expect_code(0);
}

/// Asserts that `text`, which `what` printed, holds nothing that drives a terminal: no
/// ESC, no C1 CSI, no carriage return, and no line forged to look like repx's own.
#[track_caller]
fn assert_inert(what: &str, text: &str) {
    for (bad, name) in [
        ('\u{1b}', "ESC"),
        ('\u{9b}', "C1 CSI"),
        ('\r', "carriage return"),
        ('\u{7}', "BEL"),
    ] {
        assert!(
            !text.contains(bad),
            "{what} printed a raw {name}:\n{}",
            text.escape_debug()
        );
    }
    for line in text.lines() {
        let forged = ["   ran forged-stage", "FAILED forged-stage", "  forged.txt"];
        assert!(
            !forged.iter().any(|f| line.starts_with(f)),
            "{what} printed a forged line {line:?}:\n{text}"
        );
    }
}

const ESCAPES_LAB: &str = r#"
[stages.ok]
plugin = "plugins/terminal-escapes.wasm"

[stages.bad]
plugin = "plugins/terminal-escapes.wasm"
params = { fail = "yes" }

[pipelines.main]
stages = ["ok", "bad"]

[runs.main]
pipelines = ["main"]
"#;

/// The full id of `stage`'s one job, from `repx list jobs`'s short id.
fn job_of(lab: &std::path::Path, stage: &str) -> String {
    let list = repx(lab, &["list", "jobs"]);
    list.expect_code(0);
    list.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(stage))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job of {stage} in:\n{}", list.stdout))
        .to_string()
}

#[test]
fn plugin_text_reaches_the_terminal_escaped() {
    let lab = attack_lab(ESCAPES_LAB, &["terminal-escapes"]);
    let run = repx(lab.path(), &["run", "--continue-on-failure"]);
    run.expect_code(1);
    assert_inert("repx run", &run.stderr);
    assert_inert("repx run", &run.stdout);
    // The failure is still shown, its tail escaped under the margin.
    run.expect_stderr(&["FAILED bad", "    | first line\\u{1b}]52;c;cHduZWQ=\\u{7}"]);

    let (ok, bad) = (job_of(lab.path(), "ok"), job_of(lab.path(), "bad"));
    for args in [
        vec!["results", "--stage", "ok"],
        vec!["results", "--stage", "ok", "--format", "csv"],
        vec!["show", "output", &ok],
        vec!["show", "job", &ok],
        vec!["show", "job", &bad],
        vec!["list", "jobs", "--output-paths"],
    ] {
        let out = repx(lab.path(), &args);
        out.expect_code(0);
        assert_inert(&args.join(" "), &out.stdout);
        assert_inert(&args.join(" "), &out.stderr);
    }
    // Four files: the listing has four lines under the directory, whatever their names.
    let listing = repx(lab.path(), &["show", "output", &ok]).stdout;
    assert_eq!(listing.lines().count(), 5, "{listing}");
    assert!(
        listing.contains("  a\\n  forged.txt  999 bytes  1 bytes"),
        "{listing}"
    );

    // `repx log` into a pipe: the bytes as the job wrote them; on a terminal: escaped.
    let piped = repx(lab.path(), &["log", &bad]);
    assert!(piped.stdout.contains("first line\u{1b}]52;c;cHduZWQ=\u{7}"));
    let on_terminal = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} log {bad}", env!("CARGO_BIN_EXE_repx")),
            "/dev/null",
        ])
        .current_dir(lab.path())
        .env("REPX_CACHE_DIR", crate::common::cache_dir())
        .env("XDG_CACHE_HOME", crate::common::cache_home(lab.path()))
        .output()
        .expect("running `script` (util-linux)");
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(shown.contains("first line\\u{1b}]52"), "{shown}");
    // The pty turns newlines into CR LF; no other carriage return may come through.
    assert_inert("repx log on a terminal", &shown.replace("\r\n", "\n"));
}

#[test]
fn csv_cells_cannot_become_spreadsheet_formulas() {
    let lab = attack_lab(ESCAPES_LAB, &["terminal-escapes"]);
    repx(lab.path(), &["run", "--continue-on-failure"]).expect_code(1);
    let csv = repx(lab.path(), &["results", "--stage", "ok", "--format", "csv"]);
    csv.expect_code(0);
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", csv.stdout);
    let cells: Vec<&str> = lines[1].split(',').collect();
    for neutralised in ["'+1+2", "'@SUM(A1)", "'-2+3", "'\tx"] {
        assert!(
            cells.contains(&neutralised),
            "no cell {neutralised:?} in {cells:?}"
        );
    }
    // A quoted field is neutralised inside its quotes; a negative number stays a number.
    assert!(lines[1].contains("\"'=HYPERLINK("), "{}", lines[1]);
    assert!(cells.contains(&"-1.5"), "{cells:?}");
    for cell in &cells {
        let cell = cell.trim_start_matches('"');
        assert!(
            !cell.starts_with(['=', '+', '@', '\t', '\r']),
            "a formula cell: {cell:?}"
        );
    }
}
