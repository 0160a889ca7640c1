//! End-to-end tests of the real `repx` binary for day-to-day use: progress on a terminal,
//! `--json` events, results tables, graphs and the report page, garbage collection,
//! scaffolding, completions and the job views.
//!
//! Needs the plugins: `scripts/build-plugins`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{cache_dir, copy_example, repx};

/// The lines of `text` parsed as JSON objects.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
        })
        .collect()
}

fn count(events: &[serde_json::Value], name: &str) -> usize {
    events.iter().filter(|e| e["event"] == name).count()
}

/// Checks what every job event carries: the job's id (a full one), stage and parameters;
/// and by kind, its duration and output directory. Returns the events of kind `name`.
fn job_events<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    let found: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == name).collect();
    for e in &found {
        let id = e["id"].as_str().unwrap_or_else(|| panic!("no id: {e}"));
        assert!(
            id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{e}"
        );
        assert!(e["stage"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
        assert!(e["params"].is_object(), "{e}");
        if matches!(name, "job_finished" | "job_failed") {
            assert!(e["duration_s"].as_f64().is_some_and(|d| d >= 0.0), "{e}");
        }
        if matches!(name, "job_finished" | "job_cached") {
            let output = e["output"]
                .as_str()
                .unwrap_or_else(|| panic!("no output: {e}"));
            assert!(std::path::Path::new(output).is_dir(), "{e}");
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// Progress and events

#[test]
fn json_events_parse_and_count_the_jobs() {
    let lab = copy_example("param-sweep");
    let out = repx(lab.path(), &["run", "--json"]);
    out.expect_code(0);
    let events = json_lines(&out.stdout);
    assert_eq!(events.first().unwrap()["event"], "run_started");
    assert_eq!(events[0]["jobs"], 7);
    assert_eq!(
        job_events(&events, "job_started").len(),
        7,
        "{}",
        out.stdout
    );
    assert_eq!(
        job_events(&events, "job_finished").len(),
        7,
        "{}",
        out.stdout
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run_finished");
    assert_eq!(last["ran"], 7);
    assert_eq!(last["failed"], 0);

    let points: BTreeSet<(i64, i64)> = events
        .iter()
        .filter(|e| e["event"] == "job_finished" && e["stage"] == "point")
        .map(|e| {
            let output = std::path::Path::new(e["output"].as_str().unwrap());
            assert!(output.join("metrics.json").is_file(), "{e}");
            (
                e["params"]["slope"].as_i64().unwrap(),
                e["params"]["intercept"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: BTreeSet<(i64, i64)> = [1, 2, 5]
        .into_iter()
        .flat_map(|s| [0, 10].map(|i| (s, i)))
        .collect();
    assert_eq!(points, expected);

    let again = repx(lab.path(), &["run", "--json"]);
    again.expect_code(0);
    let events = json_lines(&again.stdout);
    assert_eq!(
        job_events(&events, "job_cached").len(),
        7,
        "{}",
        again.stdout
    );
    assert_eq!(count(&events, "job_started"), 0, "{}", again.stdout);
}

#[test]
fn a_failure_has_a_kind_in_json() {
    let lab = common::lab_dir(
        r#"
[stages.exit]
plugin = "plugins/test-fail.wasm"
[stages.trap]
plugin = "plugins/test-trap.wasm"
[stages.memory]
plugin = "plugins/memory-bomb.wasm"
limits = { memory = "64M" }
[stages.missing]
plugin = "plugins/generate.wasm"
outputs = ["nothing-here.txt"]
[stages.refused]
plugin = "plugins/test-tool.wasm"
params = { tool = "sh" }
[pipelines.p]
stages = ["exit", "trap", "memory", "missing", "refused"]
[runs.r]
pipelines = ["p"]
"#,
        &["test-fail", "test-trap", "memory-bomb", "test-tool"],
    );
    let out = repx(lab.path(), &["run", "--json", "--continue-on-failure"]);
    out.expect_code(1);
    let events = json_lines(&out.stdout);
    let kinds: std::collections::BTreeMap<&str, (&str, Option<&str>)> =
        job_events(&events, "job_failed")
            .iter()
            .map(|e| {
                (
                    e["stage"].as_str().unwrap(),
                    (e["kind"].as_str().unwrap(), e["limit"].as_str()),
                )
            })
            .collect();
    assert_eq!(
        kinds,
        std::collections::BTreeMap::from([
            ("exit", ("exit_status", None)),
            ("trap", ("trap", None)),
            ("memory", ("limit", Some("memory"))),
            ("missing", ("missing_output", None)),
            ("refused", ("tool_refused", None)),
        ]),
        "{}",
        out.stdout
    );
}

/// A lab where `fail` fails in `mode` and the two stages after it are skipped.
fn failing_chain(mode: &str) -> common::TempDir {
    common::lab_dir(
        &format!(
            r#"
[stages.fail]
plugin = "plugins/test-fail.wasm"
mode = "{mode}"
[stages.after]
plugin = "plugins/sum.wasm"
inputs = {{ data = "fail" }}
[stages.last]
plugin = "plugins/plot.wasm"
inputs = {{ data = "after" }}
[pipelines.p]
stages = ["fail", "after", "last"]
[runs.r]
pipelines = ["p"]
"#
        ),
        &["test-fail"],
    )
}

#[test]
fn a_failed_job_is_a_json_event_with_its_error_and_log_command() {
    let lab = failing_chain("pure");
    let out = repx(lab.path(), &["run", "--json"]);
    out.expect_code(1);
    let events = json_lines(&out.stdout);
    let failed = job_events(&events, "job_failed");
    assert_eq!(failed.len(), 1, "{}", out.stdout);
    assert_eq!(failed[0]["stage"], "fail");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("exit status"),
        "{}",
        failed[0]
    );
    assert!(
        failed[0]["log"].as_str().unwrap().starts_with("repx log "),
        "{}",
        failed[0]
    );
    assert_eq!(events.last().unwrap()["failed"], 1);

    // The jobs after it are skipped, each with the id `repx results` knows it by.
    let skipped = job_events(&events, "job_skipped");
    let stages: BTreeSet<&str> = skipped
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, BTreeSet::from(["after", "last"]), "{}", out.stdout);
    let results = repx(lab.path(), &["results", "--format", "json"]);
    let results: serde_json::Value = serde_json::from_str(&results.stdout).unwrap();
    for e in skipped {
        let row = results["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["stage"] == e["stage"])
            .unwrap();
        assert_eq!(row["id"], e["id"], "{e}");
    }

    // After an impure job fails there is no output for the ids downstream to depend on.
    let lab = failing_chain("impure");
    let out = repx(lab.path(), &["run", "--json"]);
    out.expect_code(1);
    let events = json_lines(&out.stdout);
    assert_eq!(job_events(&events, "job_failed").len(), 1, "{}", out.stdout);
    let skipped: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "job_skipped")
        .collect();
    assert_eq!(skipped.len(), 2, "{}", out.stdout);
    for e in skipped {
        assert!(e["id"].is_null() && e["params"].is_object(), "{e}");
    }
}

/// Runs `repx ARGS` in `dir` on a pseudo-terminal `columns` wide; returns what it drew
/// and its exit code.
fn on_terminal(dir: &std::path::Path, columns: u16, args: &str) -> (String, i32) {
    let command = format!(
        "stty cols {columns} rows 12; {} {args}; echo \"exit=$?\"",
        env!("CARGO_BIN_EXE_repx")
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env("REPX_CACHE_DIR", cache_dir())
        .env("TERM", "xterm-256color")
        .output()
        .expect("running `script` (util-linux)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let code = text
        .rsplit("exit=")
        .next()
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("no exit code in:\n{text}"));
    (text, code)
}

/// A lab of three `demo-train` jobs, each reporting its progress ten times as it works,
/// so that every running job has a bar of its own.
fn training_lab() -> common::TempDir {
    common::lab_dir(
        r#"
[stages.train]
plugin = "plugins/demo-train.wasm"
params = { seed = 1, steps = 10, work = 15000000 }
outputs = ["metrics.json"]
[pipelines.main]
stages = ["train"]
[runs.grid]
pipelines = ["main"]
params = { seed = [1, 2, 3] }
"#,
        &["demo-train"],
    )
}

#[test]
fn progress_bars_on_narrow_and_wide_terminals_do_not_panic() {
    for columns in [1, 8, 20, 120] {
        // Quick jobs that report no progress, then slower ones that do.
        for (lab, summary, finished) in [
            (
                copy_example("param-sweep"),
                "7 jobs: 7 ran, 0 cached, 0 failed, 0 skipped",
                "ran point [intercept=0 slope=1]",
            ),
            (
                training_lab(),
                "3 jobs: 3 ran, 0 cached, 0 failed, 0 skipped",
                // The swept seed whatever the width; the rest where there is room.
                "ran train [seed=2 ",
            ),
        ] {
            let (screen, code) = on_terminal(lab.path(), columns, "run");
            let context = format!("{columns} columns:\n{screen}");
            assert_eq!(code, 0, "{context}");
            assert!(!screen.contains("panicked"), "{context}");
            assert!(screen.contains(summary), "{context}");
            assert!(screen.contains(finished), "{context}");
            // The bars are drawn with cursor movements; plain lines are not.
            assert!(screen.contains("\x1b["), "no bars drawn: {context}");
        }
    }
}

#[test]
fn plain_lines_when_not_on_a_terminal() {
    let lab = copy_example("param-sweep");
    let out = repx(lab.path(), &["run"]);
    out.expect_code(0);
    assert!(!out.stderr.contains('\x1b'), "{}", out.stderr);
    assert_eq!(out.ran().len(), 7, "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------
// Results

/// A CSV document as its header and rows (no quoted fields expected here).
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect::<Vec<_>>())
        .collect();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "ragged CSV:\n{text}");
    }
    (header, rows)
}

#[test]
fn results_of_the_sweep_are_a_row_per_job_with_metrics() {
    let lab = copy_example("param-sweep");
    repx(lab.path(), &["run"]).expect_code(0);
    let out = repx(lab.path(), &["results", "sweep", "--format", "csv"]);
    out.expect_code(0);
    let (header, rows) = parse_csv(&out.stdout);
    for column in [
        "id",
        "stage",
        "state",
        "slope",
        "intercept",
        "mean_y",
        "max_y",
    ] {
        assert!(
            header.iter().any(|h| h == column),
            "no column {column}: {header:?}"
        );
    }
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    // Every job is a row: the six points, and the job gathering them with its own metric.
    assert_eq!(rows.len(), 7, "{}", out.stdout);
    let (combine, points_rows): (Vec<_>, Vec<_>) =
        rows.iter().partition(|r| r[col("stage")] == "combine");
    assert_eq!(combine.len(), 1, "{}", out.stdout);
    assert_eq!(combine[0][col("state")], "done");
    assert_eq!(combine[0][col("points")], "6");
    for empty in ["slope", "intercept", "mean_y", "max_y"] {
        assert_eq!(combine[0][col(empty)], "", "{empty}: {}", out.stdout);
    }
    let mut points = BTreeSet::new();
    for row in points_rows {
        assert_eq!(row[col("stage")], "point");
        assert_eq!(row[col("state")], "done");
        assert_eq!(row[col("points")], "", "{}", out.stdout);
        let slope: f64 = row[col("slope")].parse().unwrap();
        let intercept: f64 = row[col("intercept")].parse().unwrap();
        let mean: f64 = row[col("mean_y")].parse().unwrap();
        let max: f64 = row[col("max_y")].parse().unwrap();
        // y = slope·x + intercept for x in 0..=10.
        assert!((mean - (5.0 * slope + intercept)).abs() < 1e-9, "{row:?}");
        assert!((max - (10.0 * slope + intercept)).abs() < 1e-9, "{row:?}");
        points.insert((slope as i64, intercept as i64));
    }
    assert_eq!(points.len(), 6);

    let json = repx(lab.path(), &["results", "--format", "json"]);
    json.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["jobs"].as_array().unwrap().len(), 7);
    let only_points = repx(
        lab.path(),
        &["results", "--stage", "point", "--format", "csv"],
    );
    assert_eq!(
        parse_csv(&only_points.stdout).1.len(),
        6,
        "{}",
        only_points.stdout
    );

    let table = repx(lab.path(), &["results", "--stage", "combine"]);
    table.expect_code(0);
    assert_eq!(table.stdout.lines().count(), 2, "{}", table.stdout);
}

#[test]
fn results_before_running_show_jobs_to_do() {
    let lab = copy_example("param-sweep");
    let out = repx(
        lab.path(),
        &["results", "--format", "csv", "--stage", "point"],
    );
    out.expect_code(0);
    let (header, rows) = parse_csv(&out.stdout);
    let state = header.iter().position(|h| h == "state").unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r[state] == "todo"), "{}", out.stdout);
}

/// A parameter wider than a format width may be (65,535 characters) is padded like any
/// other cell: the table is printed, not a panic.
#[test]
fn results_show_a_parameter_of_70000_characters() {
    let note = "a".repeat(70_000);
    let lab = common::lab_dir(
        &format!(
            r#"
[stages.g]
plugin = "plugins/generate.wasm"
params = {{ note = "{note}" }}
outputs = ["data.csv"]
[pipelines.p]
stages = ["g"]
[runs.r]
pipelines = ["p"]
"#
        ),
        &[],
    );
    let table = repx(lab.path(), &["results"]);
    table.expect_code(0);
    let row = table.stdout.lines().nth(1).unwrap_or_default();
    assert!(row.contains(&note) && row.contains("todo"), "{row:.200}");
}

#[test]
fn results_suggest_close_run_and_stage_names() {
    let lab = copy_example("param-sweep");
    repx(lab.path(), &["results", "swep"])
        .expect_code(2)
        .expect_stderr(&["no run `swep`", "did you mean `sweep`?"]);
    repx(lab.path(), &["results", "--stage", "pint"])
        .expect_code(2)
        .expect_stderr(&["no stage `pint`", "did you mean `point`?"]);
}

// ---------------------------------------------------------------------------------------
// Graphs and the report page

/// Node labels (by DOT id) and edges (from, to, label) of a DOT document, parsed with
/// layout-rs's DOT parser.
type Dot = (
    std::collections::BTreeMap<String, String>,
    Vec<(String, String, String)>,
);

fn parse_dot(text: &str) -> Dot {
    use layout::gv::parser::ast::Stmt;
    let mut parser = layout::gv::DotParser::new(text);
    let graph = parser
        .process()
        .unwrap_or_else(|e| panic!("not DOT: {e}\n{text}"));
    let attr = |list: &layout::gv::parser::ast::AttributeList, key: &str| {
        list.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut nodes = std::collections::BTreeMap::new();
    let mut edges = Vec::new();
    for stmt in &graph.list.list {
        match stmt {
            Stmt::Node(node) => {
                nodes.insert(node.id.name.clone(), attr(&node.list, "label"));
            }
            Stmt::Edge(edge) => {
                assert_eq!(edge.to.len(), 1, "one edge per statement");
                edges.push((
                    edge.from.name.clone(),
                    edge.to[0].0.name.clone(),
                    attr(&edge.list, "label"),
                ));
            }
            _ => {}
        }
    }
    for (from, to, _) in &edges {
        assert!(
            nodes.contains_key(from) && nodes.contains_key(to),
            "dangling edge in\n{text}"
        );
    }
    (nodes, edges)
}

/// The DOT id of the one node whose label starts with `first_line`.
fn node_named(nodes: &std::collections::BTreeMap<String, String>, first_line: &str) -> String {
    let found: Vec<&String> = nodes
        .iter()
        .filter(|(_, label)| label.split(['\n', '\\']).next() == Some(first_line))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(found.len(), 1, "nodes named {first_line}: {nodes:?}");
    found[0].clone()
}

#[test]
fn viz_draws_the_stage_graph_as_dot() {
    let lab = copy_example("simple");
    let out = repx(lab.path(), &["viz"]);
    out.expect_code(0);
    let (nodes, edges) = parse_dot(&out.stdout);
    assert_eq!(nodes.len(), 3, "{}", out.stdout);
    let (generate, sum, plot) = (
        node_named(&nodes, "generate"),
        node_named(&nodes, "sum"),
        node_named(&nodes, "plot"),
    );
    let mut expected = vec![
        (generate.clone(), sum, "data".to_string()),
        (generate, plot, "data".to_string()),
    ];
    let mut edges = edges;
    edges.sort();
    expected.sort();
    assert_eq!(edges, expected);

    let sweep = copy_example("param-sweep");
    let out = repx(sweep.path(), &["viz", "sweep"]);
    out.expect_code(0);
    let (nodes, edges) = parse_dot(&out.stdout);
    assert!(
        nodes[&node_named(&nodes, "point")].contains("6 jobs"),
        "{nodes:?}"
    );
    assert_eq!(
        edges,
        [(
            node_named(&nodes, "point"),
            node_named(&nodes, "combine"),
            "points [*]".to_string()
        )]
    );
}

#[test]
fn viz_jobs_draws_one_node_per_job_with_its_state() {
    let lab = copy_example("param-sweep");
    let before = repx(lab.path(), &["viz", "--jobs"]);
    before.expect_code(0);
    let (nodes, edges) = parse_dot(&before.stdout);
    assert_eq!(nodes.len(), 7, "{}", before.stdout);
    assert_eq!(edges.len(), 6, "{}", before.stdout);
    assert!(nodes.values().all(|l| l.contains("todo")), "{nodes:?}");

    repx(lab.path(), &["run"]).expect_code(0);
    let after = repx(lab.path(), &["viz", "--jobs"]);
    let (nodes, _) = parse_dot(&after.stdout);
    assert!(nodes.values().all(|l| l.contains("done")), "{nodes:?}");
    let combine = node_named(&nodes, "combine");
    assert_eq!(edges_into(&after.stdout, &combine), 6);
}

fn edges_into(dot: &str, node: &str) -> usize {
    parse_dot(dot)
        .1
        .iter()
        .filter(|(_, to, _)| to == node)
        .count()
}

#[test]
fn viz_svg_is_well_formed_and_draws_every_node() {
    for (example, args, names) in [
        (
            "simple",
            &["viz", "--format", "svg"][..],
            &["generate", "sum", "plot"][..],
        ),
        (
            "param-sweep",
            &["viz", "--jobs", "--format", "svg"][..],
            &["point", "combine"][..],
        ),
    ] {
        let lab = copy_example(example);
        let out = repx(lab.path(), args);
        out.expect_code(0);
        let doc = roxmltree::Document::parse(&out.stdout)
            .unwrap_or_else(|e| panic!("{example}: not XML: {e}\n{}", out.stdout));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        let width: f64 = root.attribute("width").unwrap().parse().unwrap();
        assert!(width > 50.0, "{example}: width {width}");
        let text: String = doc
            .descendants()
            .filter(|n| n.is_text())
            .map(|n| n.text().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ");
        for name in names {
            assert!(
                text.contains(name),
                "{example}: no {name} in the drawing: {text}"
            );
        }
        let boxes = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
        let (nodes, _) = parse_dot(&repx(lab.path(), &args[..args.len() - 2]).stdout);
        assert!(
            boxes >= nodes.len(),
            "{example}: {boxes} boxes for {} nodes",
            nodes.len()
        );
    }
}

/// The headless Chromium on this machine, run on `page` with `args` after the usual
/// flags (`--no-sandbox`: tests may run as root) and a fresh profile.
fn chromium(page: &std::path::Path, args: &[String]) -> std::process::Output {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("no chromium: install it (scripts/setup does)");
    let profile = common::TempDir::new();
    Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium")
}

/// What a page did as it loaded in Chromium.
#[derive(Debug)]
struct Loaded {
    /// Each `<img>`: its alt text, and its natural size if it loaded and decoded.
    images: Vec<(String, Option<(u64, u64)>)>,
    /// Resources that failed to load and script errors, as the page saw them.
    errors: Vec<String>,
    /// Messages Chromium logged to the page's console (blocked loads, policy violations).
    console: Vec<String>,
}

/// Records, in the page itself, every load or script error (listening from the start, in
/// the capture phase where failed images report), and once the page has loaded, whether
/// each image decoded; as JSON in `<pre id="repx-probe">` for `--dump-dom` to show.
const PROBE: &str = r#"<script>
var repxErrors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  repxErrors.push(t && t.tagName ? "failed to load " + t.tagName + " " + String(t.src || t.href).slice(0, 80)
                                 : "script error: " + e.message);
}, true);
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return { alt: img.alt, ok: img.complete && img.naturalWidth > 0,
             width: img.naturalWidth, height: img.naturalHeight };
  });
  var out = document.createElement("pre");
  out.id = "repx-probe";
  out.textContent = JSON.stringify({ images: images, errors: repxErrors });
  document.body.appendChild(out);
});
</script>"#;

/// Loads `page` in headless Chromium, with [`PROBE`] added at the top of a copy of it
/// beside it (the page has no script of its own: the report writes none).
fn load_in_chromium(page: &std::path::Path) -> Loaded {
    let html = std::fs::read_to_string(page).unwrap();
    assert!(html.contains("<head>"), "no <head> in the page");
    let probe = page.with_file_name("probe.html");
    std::fs::write(
        &probe,
        html.replacen("<head>", &format!("<head>{PROBE}"), 1),
    )
    .unwrap();
    let out = chromium(
        &probe,
        &["--enable-logging=stderr", "--v=0", "--dump-dom"].map(String::from),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let start = dom.find("<pre id=\"repx-probe\">").unwrap_or_else(|| {
        panic!("the page never finished loading (no probe in the DOM):\n{dom}\n{stderr}")
    });
    let text = &dom[start..];
    let text = &text[text.find('>').unwrap() + 1..text.find("</pre>").unwrap()];
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let images = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|img| {
            let size = (img["ok"] == true).then(|| {
                (
                    img["width"].as_u64().unwrap(),
                    img["height"].as_u64().unwrap(),
                )
            });
            (img["alt"].as_str().unwrap().to_string(), size)
        })
        .collect();
    let errors = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    Loaded {
        images,
        errors,
        console,
    }
}

/// Takes a screenshot of `page` in headless Chromium; returns its pixels as RGB.
fn screenshot(page: &std::path::Path, width: u32, height: u32) -> Vec<[u8; 3]> {
    let dir = common::TempDir::new();
    let png = dir.path().join("shot.png");
    let out = chromium(
        page,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
        ],
    );
    assert!(
        png.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    assert_eq!(info.width, width);
    let channels = info.color_type.samples();
    pixels
        .chunks(channels)
        .map(|p| match channels {
            3 | 4 => [p[0], p[1], p[2]],
            _ => [p[0]; 3],
        })
        .collect()
}

/// The colour of a plot's first line (`plugins/xy`, which the sweep's plugins draw with).
const PLOT_LINE: [u8; 3] = [0x1f, 0x77, 0xb4];

/// Whether `pixel` is `colour` drawn over white at some coverage of at least a third: a
/// line thinner than a pixel is never its exact colour on screen.
fn is_drawn_in(pixel: [u8; 3], colour: [u8; 3]) -> bool {
    let ink = |c: usize| 255.0 - f64::from(colour[c]);
    let strongest = (0..3).max_by(|a, b| ink(*a).total_cmp(&ink(*b))).unwrap();
    let coverage = (255.0 - f64::from(pixel[strongest])) / ink(strongest);
    coverage >= 0.35
        && (0..3).all(|c| (255.0 - coverage * ink(c) - f64::from(pixel[c])).abs() <= 8.0)
}

#[test]
fn report_page_is_self_contained_and_renders() {
    let lab = copy_example("param-sweep");
    repx(lab.path(), &["run"]).expect_code(0);
    let page = lab.path().join("report.html");
    let out = repx(lab.path(), &["report", "sweep", "-o", "report.html"]);
    out.expect_code(0);
    let html = std::fs::read_to_string(&page).unwrap();
    for needle in [
        "<svg",
        "slope",
        "mean_y",
        "data:image/svg+xml;base64,",
        "Timings",
    ] {
        assert!(html.contains(needle), "the page lacks {needle}");
    }
    for remote in ["src=\"http", "href=\"http", "@import", "<script"] {
        assert!(
            !html.contains(remote),
            "the page loads something ({remote})"
        );
    }

    // It loads without errors, and every plot (one per sweep point plus the combined one)
    // is an image that decoded.
    let loaded = load_in_chromium(&page);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    assert!(loaded.console.is_empty(), "{:#?}", loaded.console);
    assert_eq!(loaded.images.len(), 7, "{:#?}", loaded.images);
    for (alt, size) in &loaded.images {
        assert!(alt.ends_with(".svg"), "{alt}");
        assert_eq!(*size, Some((640, 400)), "plot {alt} did not load");
    }
    assert_eq!(
        loaded
            .images
            .iter()
            .filter(|(alt, _)| alt.starts_with("point ["))
            .count(),
        6
    );

    // And it shows them: the plots' line colour is on screen (the graphs and tables have
    // none of it).
    let pixels = screenshot(&page, 1200, 1600);
    let colours: BTreeSet<[u8; 3]> = pixels.iter().copied().collect();
    assert!(colours.len() > 50, "{} colours: blank page?", colours.len());
    let line = pixels
        .iter()
        .filter(|p| is_drawn_in(**p, PLOT_LINE))
        .count();
    assert!(
        line >= 500,
        "only {line} pixels of the plots' line colour: plots not drawn?"
    );
}

#[test]
fn report_embeds_png_plots() {
    // A job whose output is a PNG image: `cp` copies it from a directory of the lab.
    let lab = common::lab_dir(
        r#"
[stages.draw]
plugin = "plugins/test-tool.wasm"
inputs = { pics = "path:pics" }
tools = ["cp"]
params = { tool = "cp", args = ["/in/pics/heatmap.png", "/out/heatmap.png"] }
outputs = ["heatmap.png"]
[pipelines.p]
stages = ["draw"]
[runs.r]
pipelines = ["p"]
"#,
        &["test-tool"],
    );
    let pics = lab.path().join("pics");
    std::fs::create_dir(&pics).unwrap();
    let (width, height) = (40u32, 30u32);
    let mut image = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut image, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer
            .write_image_data(&[0xd0, 0x30, 0xa0].repeat((width * height) as usize))
            .unwrap();
    }
    std::fs::write(pics.join("heatmap.png"), &image).unwrap();
    repx(lab.path(), &["run"]).expect_code(0);

    let page = lab.path().join("report.html");
    repx(lab.path(), &["report", "-o", "report.html"]).expect_code(0);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("data:image/png;base64,"), "{html}");
    let loaded = load_in_chromium(&page);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    assert_eq!(loaded.images.len(), 1, "{:#?}", loaded.images);
    let (alt, size) = &loaded.images[0];
    assert!(alt.ends_with("heatmap.png"), "{alt}");
    assert_eq!(*size, Some((u64::from(width), u64::from(height))));
}

// ---------------------------------------------------------------------------------------
// Garbage collection

/// The job ids committed in `store`.
fn stored_jobs(store: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(store.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn gc_with_two_labs_on_one_store_deletes_nothing_live() {
    let root = common::TempDir::new();
    let (a, b) = (copy_example("simple"), copy_example("param-sweep"));
    let store = root.path().join("shared-store");
    let store_arg = store.to_str().unwrap();
    let (lab_a, lab_b) = (a.path().to_str().unwrap(), b.path().to_str().unwrap());
    let run = |lab: &str| repx(root.path(), &["--lab", lab, "--store", store_arg, "run"]);
    let gc = |lab: &str, dry: bool| {
        let mut args = vec!["--lab", lab, "--store", store_arg, "gc"];
        if dry {
            args.push("--dry-run");
        }
        repx(root.path(), &args)
    };
    run(lab_a).expect_code(0);
    run(lab_b).expect_code(0);
    let all = stored_jobs(&store);
    assert_eq!(all.len(), 10);

    // Both labs are roots, whichever lab gc is run from.
    for lab in [lab_a, lab_b] {
        let out = gc(lab, false);
        out.expect_code(0);
        assert_eq!(
            stored_jobs(&store),
            all,
            "gc from {lab} removed live jobs:\n{}",
            out.stdout
        );
    }
    assert_eq!(
        run(lab_a).summary(),
        "3 jobs: 0 ran, 3 cached, 0 failed, 0 skipped"
    );
    assert_eq!(
        run(lab_b).summary(),
        "7 jobs: 0 ran, 7 cached, 0 failed, 0 skipped"
    );

    // Narrowing b's sweep leaves two points and the old gather unreachable.
    let toml = b.path().join("repx.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("slope = [1, 2, 5]", "slope = [1, 2]")).unwrap();
    let dry = gc(lab_a, true);
    dry.expect_code(0);
    assert_eq!(
        dry.stdout
            .lines()
            .filter(|l| l.starts_with("would remove job"))
            .count(),
        3,
        "{}",
        dry.stdout
    );
    assert!(dry.stderr.contains("would free"), "{}", dry.stderr);
    assert_eq!(stored_jobs(&store), all, "--dry-run removed something");
    gc(lab_a, false).expect_code(0);
    assert_eq!(stored_jobs(&store).len(), 7);
    assert_eq!(
        run(lab_a).summary(),
        "3 jobs: 0 ran, 3 cached, 0 failed, 0 skipped"
    );
    // The new gather job is the only one to run.
    assert_eq!(
        run(lab_b).summary(),
        "5 jobs: 1 ran, 4 cached, 0 failed, 0 skipped"
    );

    // A lab whose file is gone is a dead root: its jobs go, the other lab's stay.
    std::fs::remove_file(a.path().join("repx.toml")).unwrap();
    let out = gc(lab_b, false);
    out.expect_code(0);
    assert!(
        out.stdout.contains("(the lab file is gone)"),
        "{}",
        out.stdout
    );
    assert_eq!(stored_jobs(&store).len(), 5, "{}", out.stdout);
    assert_eq!(
        run(lab_b).summary(),
        "5 jobs: 0 ran, 5 cached, 0 failed, 0 skipped"
    );
    assert!(std::fs::read_dir(store.join("roots")).unwrap().count() == 1);
}

#[test]
fn gc_keeps_jobs_of_a_mode_override_and_refuses_when_a_lab_does_not_load() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    repx(lab.path(), &["run", "--impure"]).expect_code(0);
    let store = lab.path().join(".repx");
    let before = stored_jobs(&store);
    assert_eq!(before.len(), 6);
    repx(lab.path(), &["gc"]).expect_code(0);
    assert_eq!(stored_jobs(&store), before);
    assert_eq!(
        repx(lab.path(), &["run", "--impure"]).summary(),
        "3 jobs: 0 ran, 3 cached, 0 failed, 0 skipped"
    );

    // A root lab that no longer parses: what it uses is unknown, so nothing goes.
    let other = copy_example("param-sweep");
    let store_arg = store.to_str().unwrap();
    repx(other.path(), &["--store", store_arg, "run"]).expect_code(0);
    std::fs::write(other.path().join("repx.toml"), "[stages.x]\nplugin = 3\n").unwrap();
    let out = repx(lab.path(), &["gc"]);
    out.expect_code(2)
        .expect_stderr(&["cannot tell what lab", "nothing was removed"]);
    assert_eq!(stored_jobs(&store).len(), 13);
}

// ---------------------------------------------------------------------------------------
// Scaffolding: init, plugin new, plugin inspect

#[test]
fn init_makes_a_lab_that_runs_for_each_template() {
    for (template, jobs) in [("simple", 3), ("sweep", 7), ("impure", 2)] {
        let dir = common::TempDir::new();
        let out = repx(dir.path(), &["init", "new-lab", "--template", template]);
        out.expect_code(0);
        let lab = dir.path().join("new-lab");
        assert!(
            lab.join("repx.toml").is_file(),
            "{template}: {}",
            out.stdout
        );
        let run = repx(&lab, &["run"]);
        run.expect_code(0);
        assert_eq!(
            run.summary(),
            format!("{jobs} jobs: {jobs} ran, 0 cached, 0 failed, 0 skipped"),
            "{template}:\n{}",
            run.stderr
        );
        assert_eq!(
            repx(&lab, &["run"]).summary(),
            format!("{jobs} jobs: 0 ran, {jobs} cached, 0 failed, 0 skipped"),
        );
        match template {
            "impure" => assert_eq!(common::read_output(&lab, "run.log"), "hello, world\n"),
            "sweep" => {
                let results = repx(&lab, &["results", "--format", "csv"]);
                assert_eq!(results.stdout.lines().count(), 1 + 7, "{}", results.stdout);
            }
            _ => assert!(common::read_output(&lab, "plot.svg").contains("<svg")),
        }
    }
}

#[test]
fn init_does_not_overwrite_a_lab() {
    let lab = copy_example("simple");
    let before = std::fs::read_to_string(lab.path().join("repx.toml")).unwrap();
    repx(lab.path(), &["init"])
        .expect_code(2)
        .expect_stderr(&["already has repx.toml"]);
    assert_eq!(
        std::fs::read_to_string(lab.path().join("repx.toml")).unwrap(),
        before
    );
}

#[test]
fn plugin_new_builds_for_wasm_and_runs_in_its_lab() {
    let dir = common::TempDir::new();
    repx(dir.path(), &["plugin", "new", "squares"]).expect_code(0);
    let krate = dir.path().join("squares");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    // The SDK goes with the crate: no path into this checkout.
    assert!(
        manifest.contains("repx-guest = { path = \"repx-guest\" }"),
        "{manifest}"
    );
    assert!(krate.join("repx-guest/wit/stage.wit").is_file());
    // A target directory kept between test runs, so that only the crate itself compiles;
    // `repx plugin build` finds the component there through CARGO_TARGET_DIR.
    let target = common::repo_root().join("target").join("plugin-new-test");
    let build = common::repx_with_env(
        &krate,
        &["plugin", "build"],
        &[("CARGO_TARGET_DIR", target.to_str().unwrap())],
    );
    build.expect_code(0);
    let expected = krate.join("plugin.wasm");
    assert!(expected.is_file(), "{}", build.stdout);

    let run = repx(&krate, &["run"]);
    run.expect_code(0);
    assert_eq!(
        run.summary(),
        "2 jobs: 2 ran, 0 cached, 0 failed, 0 skipped"
    );
    let results = repx(&krate, &["results", "--format", "csv"]);
    let (header, rows) = parse_csv(&results.stdout);
    let (n, sum) = (
        header.iter().position(|h| h == "n").unwrap(),
        header.iter().position(|h| h == "sum").unwrap(),
    );
    let mut sums: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r[n].clone(), r[sum].clone()))
        .collect();
    sums.sort();
    assert_eq!(
        sums,
        // Squares plus 12, the sum of the numbers in the input data/data.txt.
        [("10".into(), "405".into()), ("100".into(), "329550".into())]
    );

    let inspect = repx(&krate, &["plugin", "inspect", expected.to_str().unwrap()]);
    inspect.expect_code(0);
    for needle in [
        "component",
        "plugin:   yes",
        "wasi:cli/run",
        "repx:stage/host",
    ] {
        assert!(
            inspect.stdout.contains(needle),
            "no {needle}:\n{}",
            inspect.stdout
        );
    }
}

#[test]
fn plugin_inspect_tells_components_modules_and_non_plugins_apart() {
    let dir = common::TempDir::new();
    let component = repx(
        dir.path(),
        &[
            "plugin",
            "inspect",
            common::plugin_wasm("test-tool").to_str().unwrap(),
        ],
    );
    component.expect_code(0);
    for needle in [
        "kind:     component",
        "repx:stage/host",
        "tools = [",
        "sha256:",
        "blake3:",
    ] {
        assert!(
            component.stdout.contains(needle),
            "no {needle}:\n{}",
            component.stdout
        );
    }
    let module = repx(
        dir.path(),
        &[
            "plugin",
            "inspect",
            common::plugin_wasm_p1("contract-check").to_str().unwrap(),
        ],
    );
    module.expect_code(0);
    assert!(
        module.stdout.contains("kind:     core module"),
        "{}",
        module.stdout
    );
    assert!(module.stdout.contains("_start"), "{}", module.stdout);
    assert!(
        !module.stdout.contains("repx:stage/host"),
        "{}",
        module.stdout
    );

    // A core module without `_start` is not a plugin; a text file is not WebAssembly.
    let lib = dir.path().join("lib.wasm");
    std::fs::write(&lib, b"\0asm\x01\0\0\0").unwrap();
    let out = repx(dir.path(), &["plugin", "inspect", "lib.wasm"]);
    out.expect_code(1);
    assert!(out.stdout.contains("plugin:   no"), "{}", out.stdout);
    std::fs::write(dir.path().join("notes.wasm"), "hello").unwrap();
    repx(dir.path(), &["plugin", "inspect", "notes.wasm"])
        .expect_code(2)
        .expect_stderr(&["not WebAssembly"]);
}

// ---------------------------------------------------------------------------------------
// Completions, man page, job views

#[test]
fn completions_and_man_page_come_from_the_command_line() {
    let dir = common::TempDir::new();
    let bash = repx(dir.path(), &["completions", "bash"]);
    bash.expect_code(0);
    for command in ["results", "viz", "report", "gc", "init", "inspect"] {
        assert!(
            bash.stdout.contains(command),
            "bash completions lack {command}"
        );
    }
    let script = dir.path().join("repx.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = repx(dir.path(), &["completions", shell]);
        out.expect_code(0);
        assert!(out.stdout.contains("repx"), "{shell}");
    }
    let man = repx(dir.path(), &["man"]);
    man.expect_code(0);
    assert!(man.stdout.contains("\n.TH repx 1 "), "{}", man.stdout);
    assert!(man.stdout.contains("repx\\-results(1)"), "{}", man.stdout);

    // One page per command, named as `man repx-run` looks it up, with that command's
    // options as the reader sees them (roff escapes each `-` as `\-`).
    let pages = dir.path().join("man1");
    let out = repx(dir.path(), &["man", "--dir", pages.to_str().unwrap()]);
    out.expect_code(0);
    let page = |name: &str| {
        let path = pages.join(format!("{name}.1"));
        assert!(
            out.stdout.lines().any(|l| l == path.to_str().unwrap()),
            "{}",
            out.stdout
        );
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .replace("\\-", "-")
    };
    assert_eq!(page("repx"), man.stdout.replace("\\-", "-"));
    for (command, flags) in [
        (
            "repx-run",
            &["--continue-on-failure", "--json", "--scheduler"][..],
        ),
        ("repx-verify", &["--repair"][..]),
        ("repx-results", &["--stage", "--format"][..]),
        ("repx-gc", &["--dry-run"][..]),
        ("repx-plugin-inspect", &[][..]),
    ] {
        let text = page(command);
        assert!(text.contains(&format!("\n.TH {command} 1 ")), "{text}");
        for flag in flags {
            assert!(text.contains(flag), "{command}.1 lacks {flag}:\n{text}");
        }
    }
    for hidden in ["repx-help.1", "repx-exec-job.1"] {
        assert!(!pages.join(hidden).exists(), "{hidden} was written");
    }
}

#[test]
fn list_jobs_with_output_paths() {
    let lab = copy_example("simple");
    repx(lab.path(), &["run"]).expect_code(0);
    let out = repx(lab.path(), &["list", "jobs", "--output-paths"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    for line in out.stdout.lines() {
        let path = std::path::Path::new(line.split_whitespace().last().unwrap());
        assert!(path.is_dir() && path.ends_with("out"), "{line}");
    }
}

#[test]
fn show_job_has_params_inputs_state_timings_and_log_tail() {
    let lab = copy_example("param-sweep");
    let out = repx(lab.path(), &["run", "--json"]);
    let events = json_lines(&out.stdout);
    let combine = events
        .iter()
        .find(|e| e["event"] == "job_finished" && e["stage"] == "combine")
        .unwrap();
    let id = combine["id"].as_str().unwrap();
    let show = repx(lab.path(), &["show", "job", &id[..8]]);
    show.expect_code(0);
    for needle in [
        "stage:    combine",
        "state:    done",
        "points <- every job of point (6)",
        "started:",
        "finished:",
        "duration:",
        "output:",
        "whole log: repx log",
    ] {
        assert!(
            show.stdout.contains(needle),
            "no {needle:?}:\n{}",
            show.stdout
        );
    }
    let point = events
        .iter()
        .find(|e| e["event"] == "job_finished" && e["params"]["slope"] == 5)
        .unwrap();
    let show = repx(lab.path(), &["show", "job", point["id"].as_str().unwrap()]);
    assert!(show.stdout.contains("slope=5"), "{}", show.stdout);

    let failing = common::lab_dir(
        r#"
[stages.fail]
plugin = "plugins/test-fail.wasm"
[pipelines.p]
stages = ["fail"]
[runs.r]
pipelines = ["p"]
"#,
        &["test-fail"],
    );
    let run = repx(failing.path(), &["run"]);
    let id = common::failed_id(&run.stderr, "fail");
    let show = repx(failing.path(), &["show", "job", &id]);
    show.expect_code(0);
    assert!(show.stdout.contains("state:    failed"), "{}", show.stdout);
    assert!(
        show.stdout.contains("stderr (last lines):"),
        "{}",
        show.stdout
    );
}

/// A lab for the explain matrix: `gen` → `sum`, a `tool` stage granted `tools/mytool`
/// (outside the project), an impure `imp` whose sources are `src/**`, and `flaky`, which
/// always fails.
fn explain_lab() -> (common::TempDir, std::path::PathBuf) {
    let tools = common::TempDir::new();
    let tool = tools.path().join("mytool");
    std::fs::copy("/bin/true", &tool).unwrap();
    let lab = common::lab_dir(
        &format!(
            r#"
[stages.gen]
plugin = "plugins/generate.wasm"
params = {{ n = 10 }}
outputs = ["data.csv"]
[stages.sum]
plugin = "plugins/sum.wasm"
inputs = {{ data = "gen" }}
[stages.tool]
plugin = "plugins/test-tool.wasm"
tools = ["{tool}"]
params = {{ tool = "{tool}" }}
[stages.imp]
plugin = "plugins/generate.wasm"
mode = "impure"
sources = ["src/**"]
params = {{ n = 3 }}
[stages.flaky]
plugin = "plugins/test-fail.wasm"
[pipelines.p]
stages = ["gen", "sum", "tool", "imp", "flaky"]
[runs.r]
pipelines = ["p"]
"#,
            tool = tool.display()
        ),
        &["test-tool", "test-fail"],
    );
    std::fs::create_dir_all(lab.path().join("src")).unwrap();
    std::fs::write(lab.path().join("src/a.txt"), "one\n").unwrap();
    // The tools' directory lives as long as the lab.
    std::mem::forget(tools);
    (lab, tool)
}

/// Stage → reason kind of each job `repx run --dry-run` says would run, and of each job
/// `repx run --json` started (with `args`); both exit as expected.
fn reasons(
    lab: &std::path::Path,
    args: &[&str],
) -> (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeMap<String, String>,
) {
    let mut dry_args = vec!["run", "--dry-run"];
    dry_args.extend(args);
    let dry = repx(lab, &dry_args);
    dry.expect_code(0);
    let dry: std::collections::BTreeMap<String, String> = dry
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("would run "))
        .map(|l| {
            let stage = l.split_whitespace().next().unwrap().to_string();
            let kind = l.split(": ").nth(1).unwrap().to_string();
            (stage, kind)
        })
        .collect();
    let mut run_args = vec!["run", "--json", "--continue-on-failure"];
    run_args.extend(args);
    let run = repx(lab, &run_args);
    let events = json_lines(&run.stdout);
    let ran: std::collections::BTreeMap<String, String> = job_events(&events, "job_started")
        .iter()
        .map(|e| {
            (
                e["stage"].as_str().unwrap().to_string(),
                e["reason"]["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for e in job_events(&events, "job_finished") {
        assert!(e["reason"]["detail"].is_string(), "{e}");
    }
    (dry, ran)
}

fn kinds(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(s, k)| (s.to_string(), k.to_string()))
        .collect()
}

#[test]
fn each_reason_to_run_comes_from_a_real_edit_in_dry_run_and_json() {
    let (lab, tool) = explain_lab();
    let lab = lab.path();
    let edit = |from: &str, to: &str| {
        let toml = std::fs::read_to_string(lab.join("repx.toml")).unwrap();
        assert!(toml.contains(from), "{from}");
        std::fs::write(lab.join("repx.toml"), toml.replacen(from, to, 1)).unwrap();
    };
    let step = |what: &str, args: &[&str], expected: &[(&str, &str)]| {
        let (dry, ran) = reasons(lab, args);
        let expected = kinds(expected);
        assert_eq!(dry, expected, "{what}: --dry-run");
        assert_eq!(ran, expected, "{what}: --json");
    };
    let flaky = ("flaky", "failed_last_time");

    step(
        "first run",
        &[],
        &[
            ("gen", "never_run"),
            ("sum", "never_run"),
            ("tool", "never_run"),
            ("imp", "never_run"),
            ("flaky", "never_run"),
        ],
    );
    step("nothing changed", &[], &[flaky]);

    edit("n = 10", "n = 20");
    step(
        "a parameter",
        &[],
        &[("gen", "param_changed"), ("sum", "upstream_changed"), flaky],
    );
    // Named with both values.
    let dry = repx(lab, &["run", "--dry-run"]);
    assert!(!dry.stdout.contains("would run gen"), "{}", dry.stdout);
    edit("n = 20", "n = 30");
    let dry = repx(lab, &["run", "--dry-run"]);
    assert!(dry.stdout.contains("n: 20 -> 30"), "{}", dry.stdout);
    repx(lab, &["run", "--continue-on-failure"]);

    // The plugin's bytes change: a custom section appended (still valid wasm).
    let plugin = lab.join("plugins/sum.wasm");
    let mut bytes = std::fs::read(&plugin).unwrap();
    bytes.extend_from_slice(b"\x00\x04\x03abc");
    std::fs::write(&plugin, bytes).unwrap();
    step("the plugin", &[], &[("sum", "plugin_changed"), flaky]);

    std::fs::copy("/bin/false", &tool).unwrap();
    step("a tool", &[], &[("tool", "tools_changed"), flaky]);

    std::fs::write(lab.join("src/a.txt"), "two\n").unwrap();
    step("a source", &[], &[("imp", "sources_changed"), flaky]);

    let listed = repx(lab, &["list", "jobs", "--output-paths"]);
    let out = listed
        .stdout
        .lines()
        .find(|l| l.contains(" gen "))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();
    std::fs::remove_file(std::path::Path::new(&out).join("data.csv")).unwrap();
    step("an output", &[], &[("gen", "output_changed"), flaky]);

    step("forced", &["--force", "tool"], &[("tool", "forced"), flaky]);

    // Every stage impure: gen's last job was pure.
    let (dry, ran) = reasons(lab, &["--impure"]);
    assert_eq!(dry["gen"], "mode_changed", "{dry:?}");
    assert_eq!(ran["gen"], "mode_changed", "{ran:?}");
}

/// Every file, directory and link under `root`, with contents and link targets, hashed.
fn tree_digest(root: &std::path::Path) -> String {
    let mut entries = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let what = if meta.is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                let bytes = std::fs::read(&path).unwrap();
                format!("file {}", fnv_hex(&bytes))
            };
            entries.push(format!("{name} {what}"));
        }
    }
    entries.sort();
    entries.join("\n")
}

/// A cheap digest for [`tree_digest`]: FNV-1a, 64 bits, of the bytes and their length.
fn fnv_hex(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016x}-{}", bytes.len())
}

#[test]
fn read_only_commands_leave_the_store_byte_identical() {
    let (lab, _) = explain_lab();
    let lab = lab.path();
    repx(lab, &["run", "--continue-on-failure"]);
    // An edit makes the impure stage out of date, and a parameter a job to run.
    std::fs::write(lab.join("src/a.txt"), "two\n").unwrap();
    let toml = std::fs::read_to_string(lab.join("repx.toml")).unwrap();
    std::fs::write(lab.join("repx.toml"), toml.replace("n = 10", "n = 11")).unwrap();
    let store = common::default_store(lab);
    let listed = repx(lab, &["list", "jobs"]);
    let id = listed
        .stdout
        .lines()
        .find(|l| l.contains(" done ") && l.contains(" tool "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let report = common::TempDir::new();
    let report = report.path().join("r.html");
    let report = report.to_str().unwrap();
    for command in [
        &["list", "jobs"][..],
        &["list", "runs"],
        &["list", "deps"],
        &["show", "job", &id],
        &["show", "stage", "imp"],
        &["log", &id],
        &["results"],
        &["report", "--output", report],
        &["viz"],
        &["viz", "--jobs"],
        &["gc", "--dry-run"],
        &["run", "--dry-run"],
    ] {
        let before = tree_digest(&store);
        let out = repx(lab, command);
        assert!(out.code == 0 || out.code == 1, "{command:?}: {out:?}");
        let after = tree_digest(&store);
        assert!(
            before == after,
            "{command:?} changed the store:\n--- before\n{before}\n--- after\n{after}"
        );
    }
}

#[test]
fn a_job_over_its_memory_limit_succeeds_on_a_retry_with_twice_the_memory() {
    let lab = common::lab_dir(
        r#"
[stages.big]
plugin = "plugins/bench-kernel.wasm"
params = { mib = 40 }
limits = { memory = "32M" }
retries = 1
outputs = ["result.json"]
[pipelines.p]
stages = ["big"]
[runs.r]
pipelines = ["p"]
"#,
        &["bench-kernel"],
    );
    // `--retries 0` stands in for the stage's `retries`: the memory limit fails it.
    let out = repx(lab.path(), &["run", "--json", "--retries", "0"]);
    out.expect_code(1);
    let events = json_lines(&out.stdout);
    let failed = job_events(&events, "job_failed");
    assert_eq!(
        (failed[0]["kind"].as_str(), failed[0]["limit"].as_str()),
        (Some("limit"), Some("memory")),
        "{}",
        failed[0]
    );

    // The stage's one retry, with 64M: attempt 1 fails on memory, attempt 2 succeeds.
    let out = repx(lab.path(), &["run", "--json"]);
    out.expect_code(0);
    let events = json_lines(&out.stdout);
    let retried = job_events(&events, "job_retried");
    assert_eq!(retried.len(), 1, "{}", out.stdout);
    assert_eq!(retried[0]["attempt"], 1);
    assert_eq!(retried[0]["limit"], "memory");
    assert_eq!(retried[0]["limits"]["memory"], 32 << 20, "{}", retried[0]);
    let finished = job_events(&events, "job_finished");
    assert_eq!(finished[0]["attempt"], 2, "{}", finished[0]);
    assert_eq!(finished[0]["limits"]["memory"], 64 << 20, "{}", finished[0]);
    let id = finished[0]["id"].as_str().unwrap();

    // The record lists both attempts, and `show job` too.
    let records = std::fs::read_to_string(lab.path().join(".repx/records.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(records.lines().last().unwrap()).unwrap();
    let attempts = record["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{record}");
    assert_eq!(
        (
            attempts[0]["failure"].as_str(),
            attempts[0]["limit"].as_str()
        ),
        (Some("limit"), Some("memory"))
    );
    assert_eq!(
        (attempts[1]["memory"].as_u64(), &attempts[1]["failure"]),
        (Some(64 << 20), &serde_json::Value::Null)
    );
    let shown = repx(lab.path(), &["show", "job", id]);
    shown.expect_code(0);
    assert!(shown.stdout.contains("attempt:  2 "), "{}", shown.stdout);
    let listed: Vec<&str> = shown
        .stdout
        .lines()
        .skip_while(|l| *l != "attempts:")
        .skip(1)
        .take(2)
        .collect();
    assert!(
        listed[0].contains("failed: limit (memory)") && listed[0].contains("memory 32M"),
        "{}",
        shown.stdout
    );
    assert!(
        listed[1].contains("succeeded") && listed[1].contains("memory 64M"),
        "{}",
        shown.stdout
    );

    // Each attempt's logs are kept: the first's say why it failed; the failed output is
    // not in the job's directory.
    let first = repx(lab.path(), &["log", id, "--attempt", "1"]);
    first.expect_code(0);
    assert!(first.stdout.contains("memory"), "{}", first.stdout);
    let second = repx(lab.path(), &["log", id, "--attempt", "2"]);
    second.expect_code(0);
    assert_ne!(first.stdout, second.stdout);
    let attempt_dir = lab.path().join(".repx/jobs").join(id).join("attempts/1");
    assert!(attempt_dir.join("failure.json").is_file());
    assert!(!attempt_dir.join("out").exists());
    repx(lab.path(), &["log", id, "--attempt", "3"])
        .expect_code(2)
        .expect_stderr(&["has no attempt 3", "its attempts are 1, 2"]);

    // The human lines say so too.
    let lines = repx(lab.path(), &["run", "--force"]);
    lines
        .expect_code(0)
        .expect_stderr(&[" retry big [mib=40]", "attempt 1 failed (limit)"]);
}

/// Each record's stage and when its job ran, in milliseconds: [start, end).
fn spans(lab: &std::path::Path) -> Vec<(String, u64, u64)> {
    std::fs::read_to_string(lab.join(".repx/records.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| {
            let end = r["finished_ms"].as_u64().unwrap();
            let start = end - r["duration_ms"].as_u64().unwrap();
            (r["stage"].as_str().unwrap().to_string(), start, end)
        })
        .collect()
}

#[test]
fn jobs_over_the_memory_budget_never_overlap_and_small_ones_run_beside_a_big_one() {
    let lab = common::lab_dir(
        r#"
[stages.big]
plugin = "plugins/bench-kernel.wasm"
params = { kernel = "nbody", steps = 3000000, i = 0 }
resources = { mem = "60M" }
outputs = ["result.json"]
[stages.small]
plugin = "plugins/bench-kernel.wasm"
params = { mib = 1, k = 0 }
resources = { mem = "30M" }
outputs = ["result.json"]
[pipelines.bigs]
stages = ["big"]
[pipelines.smalls]
stages = ["small"]
[runs.a]
pipelines = ["bigs"]
params = { i = [1, 2, 3] }
[runs.b]
pipelines = ["smalls"]
params = { k = [1, 2, 3, 4, 5, 6] }
"#,
        &["bench-kernel"],
    );
    // Two big jobs (120M) do not fit in 100M; a big and a small one (90M) do.
    repx(lab.path(), &["run", "-j", "2", "--mem", "100M"]).expect_code(0);
    let spans = spans(lab.path());
    assert_eq!(spans.len(), 9, "{spans:?}");
    let bigs: Vec<_> = spans.iter().filter(|s| s.0 == "big").collect();
    // Milliseconds are truncated: a job that started as another ended may seem to overlap
    // it by one.
    for (n, a) in bigs.iter().enumerate() {
        for b in &bigs[n + 1..] {
            assert!(a.1 + 1 >= b.2 || b.1 + 1 >= a.2, "{a:?} and {b:?} overlap");
        }
    }
    let beside = spans
        .iter()
        .filter(|s| s.0 == "small")
        .any(|s| bigs.iter().any(|b| s.1 + 1 < b.2 && b.1 + 1 < s.2));
    assert!(beside, "no small job ran beside a big one: {spans:?}");

    // A job larger than the whole budget fails before it starts, naming its stage, its
    // request and the budget.
    let out = repx(
        lab.path(),
        &["run", "--force", "--json", "-j", "2", "--mem", "50M"],
    );
    out.expect_code(1);
    let events = json_lines(&out.stdout);
    // It never started: no duration (which `job_events` asks of a failed job).
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "job_failed")
        .collect();
    assert_eq!(failed[0]["kind"], "over_budget", "{}", failed[0]);
    assert!(failed[0]["duration_s"].is_null(), "{}", failed[0]);
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("`big`") && error.contains("60M") && error.contains("50M"),
        "{error}"
    );
    assert!(
        job_events(&events, "job_started")
            .iter()
            .all(|e| e["stage"] != "big")
    );
}

#[test]
fn a_job_record_says_what_its_plugin_and_its_tools_used() {
    let lab = common::lab_dir(
        r#"
[stages.alloc]
plugin = "plugins/bench-kernel.wasm"
params = { mib = 100 }
outputs = ["result.json"]
[stages.tool]
plugin = "plugins/test-tool.wasm"
mode = "impure"
tools = ["dd"]
params = { tool = "dd", args = ["if=/dev/zero", "of=/dev/null", "bs=100M", "count=4"] }
outputs = ["status.txt"]
[stages.sandboxed]
plugin = "plugins/test-tool.wasm"
tools = ["dd"]
params = { tool = "dd", args = ["if=/dev/zero", "of=/dev/null", "bs=100M", "count=4"] }
outputs = ["status.txt"]
[pipelines.p]
stages = ["alloc", "tool", "sandboxed"]
[runs.r]
pipelines = ["p"]
"#,
        &["bench-kernel", "test-tool"],
    );
    repx(lab.path(), &["run"]).expect_code(0);
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(lab.path().join(".repx/records.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let usage = |stage: &str| {
        let record = records.iter().find(|r| r["stage"] == stage).unwrap();
        record["usage"].clone()
    };
    // The plugin that allocates 100 MiB shows at least that, and some CPU time.
    let alloc = usage("alloc");
    assert!(alloc["mem"].as_u64().unwrap() >= 100 << 20, "{alloc}");
    assert!(alloc["cpu_us"].as_u64().unwrap() > 0, "{alloc}");
    assert!(alloc.get("tools_rss").is_none(), "it ran no tool: {alloc}");
    // `dd` with a 100 MiB buffer, under its reaper on the host: its peak RSS, through the
    // reaper.
    let tool = usage("tool");
    assert!(tool["tools_rss"].as_u64().unwrap() >= 100 << 20, "{tool}");
    let host_cpu = tool["tools_cpu_us"].as_u64().unwrap();
    assert!(host_cpu > 0, "{tool}");
    // The same `dd` in bubblewrap's sandbox (pure mode): what the tool used, not what
    // bubblewrap did around it; its CPU time is of the same order as on the host.
    let sandboxed = usage("sandboxed");
    assert!(
        sandboxed["tools_rss"].as_u64().unwrap() >= 100 << 20,
        "{sandboxed}"
    );
    let sandboxed_cpu = sandboxed["tools_cpu_us"].as_u64().unwrap();
    assert!(sandboxed_cpu >= host_cpu / 4, "{sandboxed} against {tool}");

    // `results` has them as columns, `show job` and the report show them.
    let csv = repx(lab.path(), &["results", "--format", "csv"]);
    csv.expect_code(0);
    let mut lines = csv.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row: Vec<&str> = lines
        .find(|l| l.contains(",alloc,"))
        .unwrap()
        .split(',')
        .collect();
    let mem: f64 = row[column("mem_mib")].parse().unwrap();
    assert!(mem >= 100.0, "{}", csv.stdout);
    let id = records.iter().find(|r| r["stage"] == "alloc").unwrap()["id"]
        .as_str()
        .unwrap();
    let shown = repx(lab.path(), &["show", "job", id]);
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.starts_with("memory:") && l.contains("plugin (peak linear memory)")),
        "{}",
        shown.stdout
    );
    repx(lab.path(), &["report", "-o", "report.html"]).expect_code(0);
    let html = std::fs::read_to_string(lab.path().join("report.html")).unwrap();
    assert!(html.contains("<th>memory MiB</th>"), "{html}");
}

#[test]
fn list_results_report_and_viz_give_each_job_the_state_repx_run_acts_on() {
    let (lab, _) = explain_lab();
    let lab = lab.path();
    repx(lab, &["run", "--continue-on-failure"]).expect_code(1);
    // The impure stage's output is still in the store, but a run would build it again.
    std::fs::write(lab.join("src/a.txt"), "two\n").unwrap();
    let expected = [("gen", "done"), ("imp", "todo"), ("flaky", "failed")];

    let listed = repx(lab, &["list", "jobs"]);
    listed.expect_code(0);
    let results = repx(lab, &["results", "--stage", "imp", "--format", "json"]);
    results.expect_code(0);
    let viz = repx(lab, &["viz", "--jobs"]);
    viz.expect_code(0);
    let report = common::TempDir::new();
    let page = report.path().join("r.html");
    repx(lab, &["report", "-o", page.to_str().unwrap()]).expect_code(0);
    let page = std::fs::read_to_string(&page).unwrap();
    for (stage, state) in expected {
        let line = listed
            .stdout
            .lines()
            .find(|l| l.contains(&format!(" {stage}")))
            .unwrap_or_else(|| panic!("{stage}: {}", listed.stdout));
        assert!(line.contains(&format!(" {state} ")), "{line}");
        // The graph's node of the job says the same.
        let node = viz
            .stdout
            .lines()
            .find(|l| l.contains("label=") && l.contains(&format!("\"{stage}")))
            .unwrap_or_else(|| panic!("{stage}: {}", viz.stdout));
        assert!(node.contains(state), "{node}");
    }
    let rows: serde_json::Value = serde_json::from_str(&results.stdout).unwrap();
    assert_eq!(rows["jobs"][0]["state"], "todo", "{}", results.stdout);
    // So does the job's own page.
    let imp_id = listed
        .stdout
        .lines()
        .find(|l| l.contains(" imp"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    let show = repx(lab, &["show", "job", imp_id]);
    show.expect_code(0);
    let state = show
        .stdout
        .lines()
        .find(|l| l.starts_with("state:"))
        .unwrap();
    assert!(state.contains("todo"), "{}", show.stdout);
    // The report's timings list the edited impure job as to do, not done.
    let imp = page
        .lines()
        .find(|l| l.contains("<td>imp"))
        .unwrap_or_else(|| panic!("{page}"));
    assert!(imp.contains("todo"), "{imp}");
}
