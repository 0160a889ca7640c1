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

#[test]
fn files_the_cli_writes_replace_a_planted_link_instead_of_following_it() {
    // The project lies in `project/`; the victims beside it, outside.
    let dir = crate::common::TempDir::new();
    let (project, outside) = (dir.path().join("project"), dir.path().join("outside"));
    fs::create_dir_all(project.join("plugins")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::copy(
        crate::hostile("plant-work-link"),
        project.join("plugins/plant-work-link.wasm"),
    )
    .unwrap();
    for victim in ["victim.txt", "victim-pin.txt"] {
        fs::write(outside.join(victim), "the host's own file\n").unwrap();
    }
    // An impure stage plants a link where `repx report` writes by default, and one where
    // `repx plugin pin` once wrote the lab file aside.
    fs::write(
        project.join("repx.toml"),
        r#"
[stages.plant]
plugin = "plugins/plant-work-link.wasm"
mode = "impure"
params = { link = "main-report.html", target = "../outside/victim.txt" }

[stages.plant-pin]
plugin = "plugins/plant-work-link.wasm"
mode = "impure"
params = { link = "repx.toml.pinning", target = "../outside/victim-pin.txt" }

[pipelines.main]
stages = ["plant", "plant-pin"]

[runs.main]
pipelines = ["main"]
"#,
    )
    .unwrap();
    repx(&project, &["run"]).expect_code(0);
    for link in ["main-report.html", "repx.toml.pinning"] {
        let planted = fs::symlink_metadata(project.join(link)).unwrap();
        assert!(planted.is_symlink(), "the attack did not plant {link}");
    }

    repx(&project, &["report"]).expect_code(0);
    repx(&project, &["plugin", "pin"]).expect_code(0);

    for victim in ["victim.txt", "victim-pin.txt"] {
        assert_eq!(
            fs::read_to_string(outside.join(victim)).unwrap(),
            "the host's own file\n",
            "{victim} was written through the planted link"
        );
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 2);
    // The report took the link's place, as a file of its own.
    let report = project.join("main-report.html");
    assert!(fs::symlink_metadata(&report).unwrap().is_file());
    assert!(
        fs::read_to_string(&report)
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );
    assert!(
        fs::read_to_string(project.join("repx.toml"))
            .unwrap()
            .contains("sha256 = ")
    );
}

/// Whether `path` holds a whole report page.
fn complete_page(path: &std::path::Path) -> Result<(), String> {
    let page = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if page.starts_with("<!DOCTYPE html>") && page.ends_with("</body></html>\n") {
        Ok(())
    } else {
        Err(format!("a partial page of {} bytes", page.len()))
    }
}

#[test]
fn a_kill_during_report_leaves_the_old_page_or_the_new_one() {
    use std::os::unix::fs::MetadataExt;
    use std::time::Instant;

    // A large page: a sweep of many jobs, none run, each a row of two tables.
    let values: Vec<String> = (0..4000).map(|i| i.to_string()).collect();
    let toml = format!(
        r#"
[stages.gen]
plugin = "plugins/generate.wasm"
params = {{ n = 1 }}

[pipelines.main]
stages = ["gen"]

[runs.main]
pipelines = ["main"]
params = {{ n = [{}] }}
"#,
        values.join(", ")
    );
    let lab = attack_lab(&toml, &["generate"]);
    let page = lab.path().join("page.html");
    let started = Instant::now();
    repx(lab.path(), &["report", "-o", "page.html"]).expect_code(0);
    let whole = started.elapsed();
    complete_page(&page).unwrap();
    let size = fs::metadata(&page).unwrap().len();
    assert!(size > 1 << 20, "the page is only {size} bytes");

    // Killed at moments spread over a whole report, and at the first sign of a write to
    // the page (its file replaced, or its size changed).
    let moments = 12;
    for moment in 0..=moments {
        let before = fs::metadata(&page).unwrap();
        let mut child = crate::common::repx_command(lab.path(), &["report", "-o", "page.html"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + whole * moment / moments;
        loop {
            let now = fs::metadata(&page).ok();
            let touched = now.is_none_or(|m| m.ino() != before.ino() || m.len() != before.len());
            if touched || Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
                break;
            }
            std::hint::spin_loop();
        }
        let _ = child.kill();
        let _ = child.wait();
        if let Err(e) = complete_page(&page) {
            panic!("killed at moment {moment}/{moments}: {e}");
        }
    }
}
