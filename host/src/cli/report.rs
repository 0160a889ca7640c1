//! `repx report`: one self-contained HTML page about a run: its stage graph (and job
//! graph when small), the results table, the plots its jobs wrote (every `.svg` and `.png`
//! in their outputs) and how long each job took.
//!
//! The page loads nothing from elsewhere. Plots are embedded as `<img>` data URIs; SVG
//! files too, not as inline markup, so whatever a plugin writes cannot script the page.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::error::CliError;
use super::escape::html;
use super::inspect::open;
use super::render::{label, short};
use super::results::{self, pick_run};
use super::viz::{job_graph, stage_graph};
use super::{Cli, exit};
use crate::graph::JobGraph;
use crate::plan::Plan;

/// Job graphs with more jobs than this are left out: they would not be readable.
const MAX_JOB_GRAPH: usize = 40;
/// Plots larger than this are listed, not embedded.
const MAX_PLOT_BYTES: u64 = 4 << 20;
/// At most this many plots are embedded.
const MAX_PLOTS: usize = 200;

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
.sub { color: #59636e; margin-top: 0; }
.counts span { display: inline-block; margin-right: 1rem; padding: .2rem .6rem; border-radius: 1rem;
               background: #eef2f6; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e6e9ed; text-align: left; }
th { background: #f4f6f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.id { font-family: ui-monospace, monospace; }
.done { color: #1a7f37; } .failed { color: #cf222e; } .todo { color: #59636e; }
.bar { background: #54aeff; height: .8rem; border-radius: 2px; min-width: 1px; }
.graph { overflow-x: auto; border: 1px solid #e6e9ed; border-radius: 6px; padding: .5rem; }
.graph svg { max-width: 100%; height: auto; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1rem; }
figure { margin: 0; border: 1px solid #e6e9ed; border-radius: 6px; padding: .5rem; }
figure img { width: 100%; height: auto; }
figcaption { font-size: .8rem; color: #59636e; margin-top: .3rem; word-break: break-all; }
"#;

/// `stage`: only that stage's jobs in the counts, results, plots and timings; the graphs
/// stay the run's.
pub fn report(
    cli: &Cli,
    run: Option<&str>,
    stage: Option<&str>,
    output: Option<&Path>,
) -> Result<i32, CliError> {
    let (lab, store) = open(cli)?;
    let run = pick_run(&lab, run)?;
    let results = results::collect(&lab, &store, &run, stage)?;
    let graph = JobGraph::expand(&lab, &[run.as_str()], None);
    let plan = Plan::new(lab.clone(), graph, &store)?;
    let ids = plan.static_ids(&store);
    let states = crate::sched::explain::states(&plan, &store);
    let jobs = &plan.graph.runs[&run];

    // Every job of the run with its state and record.
    struct Job {
        label: String,
        stage: String,
        id: Option<String>,
        state: &'static str,
        duration_ms: Option<u64>,
        usage: Option<crate::store::Usage>,
        output: Option<PathBuf>,
    }
    let all: Vec<Job> = jobs
        .iter()
        .filter(|&&index| stage.is_none_or(|s| plan.graph.jobs[index].stage == s))
        .map(|&index| {
            let job = &plan.graph.jobs[index];
            let id = ids[index].clone();
            let record = id.as_deref().and_then(|id| store.done(id));
            let state = states[index].as_str();
            Job {
                label: label(&job.stage, &job.params),
                stage: job.stage.clone(),
                output: record.as_ref().map(|r| store.output_dir(&r.id)),
                duration_ms: record.as_ref().map(|r| r.duration_ms),
                usage: record.as_ref().and_then(|r| r.usage),
                id,
                state,
            }
        })
        .collect();

    let mut page = String::new();
    let title = format!("{} · {run}", lab.name);
    let _ = writeln!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        html(&title)
    );
    let _ = writeln!(
        page,
        "<h1>{}</h1><p class=\"sub\">lab {} · store {}</p>",
        html(&title),
        html(&lab.file.display().to_string()),
        html(&store.root().display().to_string())
    );
    let count = |state: &str| all.iter().filter(|j| j.state == state).count();
    let _ = writeln!(
        page,
        "<p class=\"counts\"><span>{} jobs</span><span class=\"done\">{} done</span>\
         <span class=\"failed\">{} failed</span><span class=\"todo\">{} to do</span></p>",
        all.len(),
        count("done"),
        count("failed"),
        count("todo")
    );

    page.push_str("<h2>Stages</h2>\n<div class=\"graph\">");
    page.push_str(&inline_svg(
        &stage_graph(&lab, std::slice::from_ref(&run)).to_svg(),
        "stages-",
    ));
    page.push_str("</div>\n");
    if all.len() <= MAX_JOB_GRAPH {
        page.push_str("<h2>Jobs</h2>\n<div class=\"graph\">");
        page.push_str(&inline_svg(
            &job_graph(&lab, &store, std::slice::from_ref(&run))?.to_svg(),
            "jobs-",
        ));
        page.push_str("</div>\n");
    }

    page.push_str("<h2>Results</h2>\n");
    let header = results.header();
    let cells = results.cells();
    page.push_str("<table><thead><tr>");
    for column in &header {
        let _ = write!(page, "<th>{}</th>", html(column));
    }
    page.push_str("</tr></thead><tbody>\n");
    for row in &cells {
        page.push_str("<tr>");
        for (c, cell) in row.iter().enumerate() {
            // By position, not by name: a parameter may be called `state` or `id`, and its
            // value is no class name.
            let class = match c {
                results::ID_COLUMN => "id",
                results::STATE_COLUMN => cell.as_str(),
                _ if cell.parse::<f64>().is_ok() => "num",
                _ => "",
            };
            let _ = write!(page, "<td class=\"{}\">{}</td>", html(class), html(cell));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody></table>\n");

    page.push_str("<h2>Plots</h2>\n");
    let mut plots = 0;
    let mut listed = Vec::new();
    let mut figures = String::new();
    for job in &all {
        let Some(output) = &job.output else { continue };
        for (file, media_type) in plot_files(output) {
            let relative = file
                .strip_prefix(output)
                .unwrap_or(&file)
                .display()
                .to_string();
            let caption = format!("{} · {}", job.label, relative);
            let size = std::fs::metadata(&file)
                .map(|m| m.len())
                .unwrap_or(u64::MAX);
            if plots >= MAX_PLOTS || size > MAX_PLOT_BYTES {
                listed.push(format!("{} ({size} bytes)", file.display()));
                continue;
            }
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            plots += 1;
            let _ = writeln!(
                figures,
                "<figure><img alt=\"{0}\" src=\"data:{media_type};base64,{1}\"><figcaption>{0}</figcaption></figure>",
                html(&caption),
                base64(&bytes)
            );
        }
    }
    if plots == 0 && listed.is_empty() {
        page.push_str(
            "<p class=\"todo\">No job of this run wrote an .svg or .png file (yet).</p>\n",
        );
    } else {
        let _ = writeln!(page, "<div class=\"plots\">{figures}</div>");
        if !listed.is_empty() {
            page.push_str("<p>Not embedded (too large or too many):</p><ul>");
            for item in &listed {
                let _ = write!(page, "<li>{}</li>", html(item));
            }
            page.push_str("</ul>\n");
        }
    }

    page.push_str(
        "<h2>Timings</h2>\n<table><thead><tr><th>job</th><th>id</th><th>state</th>\
                   <th>seconds</th><th>CPU s</th><th>memory MiB</th><th>tools CPU s</th>\
                   <th>tools RSS MiB</th><th style=\"width:30%\"></th></tr></thead><tbody>\n",
    );
    let longest = all
        .iter()
        .filter_map(|j| j.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let mut by_time: Vec<&Job> = all.iter().collect();
    by_time.sort_by_key(|j| (std::cmp::Reverse(j.duration_ms), j.stage.clone()));
    for job in by_time {
        let seconds = job
            .duration_ms
            .map(|ms| format!("{:.3}", ms as f64 / 1000.0))
            .unwrap_or_default();
        let width = job
            .duration_ms
            .map_or(0.0, |ms| ms as f64 * 100.0 / longest as f64);
        // What the job used, as measured while it ran (none for a hermetic job).
        let used: String = match job.usage {
            Some(u) => [
                format!("{:.3}", u.cpu_us as f64 / 1e6),
                format!("{:.1}", u.mem as f64 / f64::from(1 << 20)),
                format!("{:.3}", u.tools_cpu_us as f64 / 1e6),
                format!("{:.1}", u.tools_rss as f64 / f64::from(1 << 20)),
            ]
            .map(|cell| format!("<td class=\"num\">{cell}</td>"))
            .concat(),
            None => "<td></td>".repeat(4),
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td class=\"id\">{}</td><td class=\"{2}\">{2}</td><td class=\"num\">{3}</td>\
             {used}<td><div class=\"bar\" style=\"width:{width:.1}%\"></div></td></tr>",
            html(&job.label),
            html(job.id.as_deref().map_or("-", short)),
            html(job.state),
            seconds
        );
    }
    page.push_str("</tbody></table>\n</body></html>\n");

    let path = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{run}-report.html")));
    // Replaced whole, never written through a link planted at the name.
    super::atomic::write(&path, page.as_bytes())
        .map_err(|e| CliError::Failed(anyhow::anyhow!("writing {}: {e}", path.display())))?;
    outln!("{}", path.display());
    Ok(exit::SUCCESS)
}

/// Every plot under `dir` (an `.svg` or `.png` file) with its media type, sorted.
fn plot_files(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let media_type = match e.path().extension()?.to_str()? {
                "svg" => "image/svg+xml",
                "png" => "image/png",
                _ => return None,
            };
            Some((e.into_path(), media_type))
        })
        .collect()
}

/// An SVG document as markup to place inside HTML: without its XML declaration, and with
/// its element ids prefixed so that two drawings on one page do not share them.
fn inline_svg(svg: &str, prefix: &str) -> String {
    let Some(start) = svg.find("<svg") else {
        return String::new();
    };
    svg[start..]
        .replace("id=\"", &format!("id=\"{prefix}"))
        .replace("href=\"#", &format!("href=\"#{prefix}"))
        .replace("url(#", &format!("url(#{prefix}"))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }
}
