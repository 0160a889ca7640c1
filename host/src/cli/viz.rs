//! `repx viz`: the stage graph of a lab's runs, or with `--jobs` the job graph, as DOT
//! (for Graphviz and other tools) or as SVG laid out in-process by `layout-rs`, so no
//! Graphviz is needed.
//!
//! Both forms come from one [`Graph`], so they show the same nodes and edges: stages (or
//! jobs) and `path:` inputs as boxes, inputs as edges named after the input; gather
//! inputs (`stage[*]`) are dashed, and a fan-out's edge from the stage whose list it runs
//! over (`foreach`) is dotted, labelled `foreach FILE`. In the job graph a job's fill says
//! its state, and a fan-out's items are there once their list is in the store.

use crate::sched::explain::JobState;
use std::collections::BTreeMap;
use std::io::Write;

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::style::{LineStyleKind, StyleAttr};
use layout::std_shapes::render::get_shape_size;
use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
use layout::topo::layout::VisualGraph;

use super::error::CliError;
use super::inspect::open;
use super::render::short;
use super::results::pick_run;
use super::{Cli, VizFormat, exit};
use crate::graph::{JobGraph, JobInput};
use crate::lab::{Input, Lab, PluginRef};
use crate::plan::Plan;
use crate::store::Store;

/// Fills, by what a node is.
const STAGE_FILL: &str = "#dbe9f6";
const PATH_FILL: &str = "#eeeeee";
const DONE_FILL: &str = "#c7e9c0";
const FAILED_FILL: &str = "#fcbba1";
const TODO_FILL: &str = "#ffffff";

/// A drawable graph: boxes with (multi-line) labels and labelled arrows.
#[derive(Debug, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

#[derive(Debug)]
pub struct Node {
    /// Lines of the label, first one the name.
    pub label: Vec<String>,
    pub fill: &'static str,
    /// A project directory rather than a stage or job.
    pub path: bool,
}

#[derive(Debug)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub label: String,
    /// A gather input: every job of a swept stage.
    pub gather: bool,
    /// A fan-out's list: one job per item.
    pub fanout: bool,
}

impl Graph {
    fn node(&mut self, label: Vec<String>, fill: &'static str, path: bool) -> usize {
        self.nodes.push(Node { label, fill, path });
        self.nodes.len() - 1
    }

    /// The graph in Graphviz's DOT language.
    pub fn to_dot(&self) -> String {
        let mut dot = format!("digraph {} {{\n", quote(&self.name));
        dot.push_str("  rankdir=TB;\n");
        dot.push_str(
            "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=11];\n",
        );
        dot.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");
        for (i, node) in self.nodes.iter().enumerate() {
            let shape = if node.path { ", shape=folder" } else { "" };
            dot.push_str(&format!(
                "  n{i} [label={}, fillcolor=\"{}\"{shape}];\n",
                quote(&node.label.join("\n")),
                node.fill
            ));
        }
        for edge in &self.edges {
            let style = match (edge.gather, edge.fanout) {
                (_, true) => ", style=dotted",
                (true, _) => ", style=dashed",
                _ => "",
            };
            dot.push_str(&format!(
                "  n{} -> n{} [label={}{style}];\n",
                edge.from,
                edge.to,
                quote(&edge.label)
            ));
        }
        dot.push_str("}\n");
        dot
    }

    /// The graph laid out and drawn as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        if self.nodes.is_empty() {
            return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
                    <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>\n"
                .into();
        }
        let orientation = Orientation::TopToBottom;
        // As layout-rs's own DOT builder does: shapes are sized across the flow.
        let across = orientation.flip();
        let mut graph = VisualGraph::new(orientation);
        let handles: Vec<_> = self
            .nodes
            .iter()
            .map(|node| {
                let shape = ShapeKind::new_box(&node.label.join("\n"));
                let look = StyleAttr::new(
                    Color::fast("#444444"),
                    1,
                    Some(Color::fast(node.fill)),
                    if node.path { 0 } else { 8 },
                    13,
                );
                let size = get_shape_size(across, &shape, look.font_size, false);
                graph.add_node(Element::create(shape, look, across, size))
            })
            .collect();
        for edge in &self.edges {
            let look = StyleAttr::new(Color::fast("#555555"), 1, None, 0, 11);
            let style = match (edge.gather, edge.fanout) {
                (_, true) => LineStyleKind::Dotted,
                (true, _) => LineStyleKind::Dashed,
                _ => LineStyleKind::Normal,
            };
            let arrow = Arrow::new(
                LineEndKind::None,
                LineEndKind::Arrow,
                style,
                &edge.label,
                &look,
                &None,
                &None,
            );
            graph.add_edge(arrow, handles[edge.from], handles[edge.to]);
        }
        let mut svg = SVGWriter::new();
        graph.do_it(false, false, false, &mut svg);
        // The writer grows its canvas by each label's length, in both directions; the
        // laid-out shapes give the real extent.
        let (mut width, mut height) = (0f64, 0f64);
        for node in graph.iter_nodes() {
            let (_, bottom_right) = graph.pos(node).bbox(true);
            width = width.max(bottom_right.x);
            height = height.max(bottom_right.y);
        }
        let svg = svg.finalize().replace(
            "font-family: Times, serif",
            "font-family: Helvetica, Arial, sans-serif",
        );
        let (width, height) = (width.ceil() + 10.0, height.ceil() + 10.0);
        match (svg.find("<svg "), svg.find(" xmlns=")) {
            (Some(start), Some(end)) if start < end => format!(
                "{}<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"{}",
                &svg[..start],
                &svg[end..]
            ),
            _ => svg,
        }
    }
}

/// `text` as a DOT string literal; other control characters than newlines are shown as
/// escapes, since DOT goes to stdout, often a terminal.
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| super::escape::terminal(line).into_owned())
        .collect();
    for c in lines.join("\n").chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn plugin_name(plugin: &PluginRef) -> String {
    match plugin {
        PluginRef::Builtin(_) => plugin.to_string(),
        PluginRef::File(path) => path
            .file_name()
            .map_or_else(|| plugin.to_string(), |n| n.to_string_lossy().into()),
    }
}

/// The stages of `runs` (every run when empty) and their inputs.
pub fn stage_graph(lab: &Lab, runs: &[String]) -> Graph {
    let runs: Vec<&str> = if runs.is_empty() {
        lab.runs.keys().map(String::as_str).collect()
    } else {
        runs.iter().map(String::as_str).collect()
    };
    let jobs = JobGraph::expand(lab, &runs, None);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for job in &jobs.jobs {
        *counts.entry(job.stage.as_str()).or_default() += 1;
    }
    let mut graph = Graph {
        name: runs.join("+"),
        ..Graph::default()
    };
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut stages: Vec<&crate::lab::Stage> = Vec::new();
    for run in &runs {
        for stage in lab.run_stages(&lab.runs[*run]) {
            if !index.contains_key(&stage.name) {
                let n = counts.get(stage.name.as_str()).copied().unwrap_or(0);
                // Known only once a list is written.
                let jobs = if lab.follows_items(&stage.name) {
                    "a job per item".to_string()
                } else if n == 0 && after_fanout(lab, &stage.name) {
                    "jobs once its fan-out's list is written".to_string()
                } else {
                    format!("{n} job{}", if n == 1 { "" } else { "s" })
                };
                let lines = vec![
                    stage.name.clone(),
                    format!("{} · {}", plugin_name(&stage.plugin), stage.mode),
                    jobs,
                ];
                index.insert(stage.name.clone(), graph.node(lines, STAGE_FILL, false));
                stages.push(stage);
            }
        }
    }
    for stage in stages {
        let to = index[&stage.name];
        for (name, input) in &stage.inputs {
            let (from, gather) = match input {
                Input::Path(path) => {
                    let key = format!("path:{}", path.display());
                    let shown = path.strip_prefix(&lab.dir).unwrap_or(path);
                    let from = match index.get(&key) {
                        Some(from) => *from,
                        None => {
                            let node =
                                graph.node(vec![format!("{}/", shown.display())], PATH_FILL, true);
                            index.insert(key, node);
                            node
                        }
                    };
                    (from, false)
                }
                Input::Stage(up) => (index[up], false),
                Input::Gather(up) => (index[up], true),
            };
            let label = if gather {
                format!("{name} [*]")
            } else {
                name.clone()
            };
            graph.edges.push(Edge {
                from,
                to,
                label,
                gather,
                fanout: false,
            });
        }
        if let Some(foreach) = &stage.foreach {
            graph.edges.push(Edge {
                from: index[&foreach.stage],
                to,
                label: format!("foreach {}", foreach.file.display()),
                gather: false,
                fanout: true,
            });
        }
    }
    graph
}

/// Whether stage `name` reads a fan-out's items, itself or further up.
fn after_fanout(lab: &Lab, name: &str) -> bool {
    lab.stages.get(name).is_some_and(|stage| {
        stage.foreach.is_some() || stage.upstream().any(|up| after_fanout(lab, up))
    })
}

/// The jobs of `runs` (every run when empty), each filled by its state in `store`.
pub fn job_graph(lab: &Lab, store: &Store, runs: &[String]) -> Result<Graph, CliError> {
    let runs: Vec<&str> = if runs.is_empty() {
        lab.runs.keys().map(String::as_str).collect()
    } else {
        runs.iter().map(String::as_str).collect()
    };
    let jobs = JobGraph::expand(lab, &runs, None);
    let plan = Plan::new(lab.clone(), jobs, store)?;
    let ids = plan.static_ids(store);
    let states = crate::sched::explain::states(&plan, store);
    let mut graph = Graph {
        name: runs.join("+"),
        ..Graph::default()
    };
    let mut paths: BTreeMap<&std::path::Path, usize> = BTreeMap::new();
    for (index, job) in plan.graph.jobs.iter().enumerate() {
        let state = states[index];
        let fill = match state {
            JobState::Done => DONE_FILL,
            JobState::Failed | JobState::Interrupted => FAILED_FILL,
            JobState::Todo => TODO_FILL,
        };
        let state = state.as_str();
        let mut lines = vec![job.stage.clone()];
        if !job.params.is_empty() {
            let params: Vec<String> = job.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            lines.push(params.join(" "));
        }
        lines.push(format!(
            "{} · {state}",
            ids[index].as_deref().map_or("(pending)", short)
        ));
        graph.node(lines, fill, false);
    }
    for (splitter, item, file) in &plan.graph.listed {
        graph.edges.push(Edge {
            from: *splitter,
            to: *item,
            label: format!("foreach {}", file.display()),
            gather: false,
            fanout: true,
        });
    }
    // A fan-out whose list is not written yet: one box for its items to come.
    for waiting in &plan.graph.waiting {
        let lines = vec![
            waiting.stage.clone(),
            "a job per item, once its list is written".to_string(),
        ];
        let to = graph.node(lines, TODO_FILL, false);
        graph.edges.push(Edge {
            from: waiting.splitter,
            to,
            label: format!("foreach {}", waiting.file.display()),
            gather: false,
            fanout: true,
        });
    }
    for (to, job) in plan.graph.jobs.iter().enumerate() {
        for (name, input) in &job.inputs {
            match input {
                JobInput::Path(path) => {
                    let from = match paths.get(path.as_path()) {
                        Some(from) => *from,
                        None => {
                            let shown = path.strip_prefix(&lab.dir).unwrap_or(path);
                            let node =
                                graph.node(vec![format!("{}/", shown.display())], PATH_FILL, true);
                            paths.insert(path, node);
                            node
                        }
                    };
                    graph.edges.push(Edge {
                        from,
                        to,
                        label: name.clone(),
                        gather: false,
                        fanout: false,
                    });
                }
                JobInput::Job(up) => graph.edges.push(Edge {
                    from: *up,
                    to,
                    label: name.clone(),
                    gather: false,
                    fanout: false,
                }),
                JobInput::Gather(ups) => {
                    for up in ups {
                        graph.edges.push(Edge {
                            from: *up,
                            to,
                            label: format!("{name} [*]"),
                            gather: true,
                            fanout: false,
                        });
                    }
                }
            }
        }
    }
    Ok(graph)
}

pub fn viz(cli: &Cli, run: Option<&str>, jobs: bool, format: VizFormat) -> Result<i32, CliError> {
    let (lab, store) = open(cli)?;
    let runs = match run {
        Some(run) => vec![pick_run(&lab, Some(run))?],
        None => Vec::new(),
    };
    let graph = if jobs {
        job_graph(&lab, &store, &runs)?
    } else {
        stage_graph(&lab, &runs)
    };
    let text = match format {
        VizFormat::Dot => graph.to_dot(),
        VizFormat::Svg => graph.to_svg(),
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(exit::SUCCESS)
}
