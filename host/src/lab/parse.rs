//! Parsing and validating `repx.toml`: raw TOML first, then one pass that checks every
//! name and path and collects all problems.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use super::suggest::{closest, fields};
use super::{
    Input, Lab, LabError, Limits, Mode, Pipeline, PluginRef, Problem, Run, Stage, did_you_mean,
    locate, sweep,
};
use crate::wasm::builtin;

#[derive(Deserialize, Default)]
struct RawLab {
    #[serde(default)]
    lab: RawLabTable,
    #[serde(default)]
    stages: BTreeMap<String, Spanned<RawStage>>,
    #[serde(default)]
    pipelines: BTreeMap<String, Spanned<RawPipeline>>,
    #[serde(default)]
    runs: BTreeMap<String, Spanned<RawRun>>,
    slurm: Option<Spanned<super::SlurmSettings>>,
}

#[derive(Deserialize, Default)]
struct RawLabTable {
    name: Option<String>,
    /// The most jobs one run may expand to; see [`super::sweep`].
    max_jobs: Option<Spanned<u64>>,
    /// The project directory, when it is not the lab file's (a lab that Nix built into
    /// its store names the checkout it is about).
    project: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawStage {
    plugin: Option<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    outputs: Vec<Spanned<String>>,
    #[serde(default)]
    tools: Vec<Spanned<String>>,
    #[serde(default)]
    sources: Vec<Spanned<String>>,
    #[serde(default)]
    limits: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    resources: BTreeMap<String, Spanned<toml::Value>>,
    /// `STAGE:FILE`: one job per item of the list in FILE, an output of STAGE.
    foreach: Option<Spanned<String>>,
    /// The most items that list may have.
    max_items: Option<Spanned<u64>>,
    retries: Option<Spanned<u32>>,
    #[serde(default)]
    escalate: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
struct RawPipeline {
    #[serde(default)]
    stages: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawRun {
    #[serde(default)]
    pipelines: Vec<Spanned<String>>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    zip: Vec<Vec<Spanned<String>>>,
}

/// Collects problems with their line numbers.
struct Problems<'a> {
    text: &'a str,
    list: Vec<Problem>,
    /// The keys no struct took, as paths: a missing key may be one of them misspelt.
    unknown: &'a [Vec<String>],
}

impl Problems<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, key: impl Into<String>, message: String) {
        self.list.push(Problem {
            line: Some(locate::line(self.text, span.start)),
            key: key.into(),
            message,
        });
    }

    /// Whether an unknown key of the table at `table` is `key` misspelt: its own problem
    /// (unknown key, did you mean) then says what is wrong, and "has no `key`" would say it
    /// twice.
    fn misspelt(&self, table: &[&str], key: &str) -> bool {
        self.unknown
            .iter()
            .filter_map(|path| path.split_last())
            .any(|(name, parent)| parent == table && closest(name, [key]).is_some())
    }
}

/// Parses and validates the TOML lab `text`, read from or made for `file`. Every problem
/// and warning passes through `for_user`, which may rename it (a lab in JSON has no
/// lines worth showing).
pub(super) fn parse(
    file: &Path,
    text: &str,
    for_user: impl Fn(Problem) -> Problem,
) -> Result<Lab, LabError> {
    let invalid = |problems: Vec<Problem>| LabError::Invalid {
        path: file.to_path_buf(),
        problems: problems.into_iter().map(&for_user).collect(),
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    // The first syntax error only: what the parser makes of the text after it (an
    // unclosed string swallows the next lines) is mostly errors of its own making. On a
    // table's header the key it would name is the next table's, so the line says where.
    if let Some(first) = syntax
        .iter()
        .map(|e| toml_problem(text, root.get_ref(), e))
        .min_by_key(|p| p.line)
    {
        let header = first
            .line
            .and_then(|n| text.lines().nth(n.saturating_sub(1)))
            .is_some_and(|line| line.trim_start().starts_with('['));
        let key = if header {
            String::new()
        } else {
            first.key.clone()
        };
        return Err(invalid(vec![Problem { key, ..first }]));
    }
    let mut unknown = Vec::new();
    let deserializer = toml::Deserializer::from(root.clone());
    let raw: RawLab =
        serde_ignored::deserialize(deserializer, |path| unknown.push(segments(&path)))
            .map_err(|e| invalid(vec![toml_problem(text, root.get_ref(), &e)]))?;

    let lab_dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut problems = Problems {
        text,
        list: Vec::new(),
        unknown: &unknown,
    };
    // A key nobody reads is a mistake more often than not (`inptus`, `[run.x]`), and
    // ignoring it silently runs something other than what the file says.
    for path in &unknown {
        problems.list.push(unknown_key(root.get_ref(), text, path));
    }
    let dir = project(&raw.lab.project, &lab_dir, &mut problems);
    let stage_names: BTreeSet<&str> = raw.stages.keys().map(String::as_str).collect();

    let mut stages = BTreeMap::new();
    for (name, raw_stage) in &raw.stages {
        let dirs = Dirs {
            lab: &lab_dir,
            project: &dir,
        };
        if let Some(stage) = stage(name, raw_stage, dirs, &stage_names, &mut problems) {
            stages.insert(name.clone(), stage);
        }
    }
    check_cycles(&raw, &stages, &mut problems);
    check_fanouts(&raw, &stages, &mut problems);

    let mut pipelines = BTreeMap::new();
    for (name, raw_pipeline) in &raw.pipelines {
        pipelines.insert(
            name.clone(),
            pipeline(name, raw_pipeline, &raw, &mut problems),
        );
    }
    let mut runs = BTreeMap::new();
    for (name, raw_run) in &raw.runs {
        runs.insert(name.clone(), run(name, raw_run, &raw, &mut problems));
    }

    check_sweep_sizes(&raw, &runs, &pipelines, &mut problems);
    if raw.runs.is_empty() && !problems.misspelt(&[], "runs") {
        problems.list.push(Problem {
            line: None,
            key: "runs".into(),
            message: "this lab has no runs, so nothing would run: add one, like \
                      `[runs.main]` with `pipelines = [\"main\"]`"
                .into(),
        });
    }

    let slurm = match &raw.slurm {
        Some(table) => {
            for problem in table.get_ref().problems() {
                problems.at(table.span(), "slurm", problem);
            }
            table.get_ref().clone()
        }
        None => Default::default(),
    };

    if !problems.list.is_empty() {
        // In file order, those without a line last; the sort is stable, so an unknown key
        // comes before what its absence caused on the same line.
        problems.list.sort_by_key(|p| (p.line.is_none(), p.line));
        return Err(invalid(problems.list));
    }
    let name = raw.lab.name.clone().unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let warnings = unused(&raw)
        .into_iter()
        .map(|(path, message)| {
            let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            let warning = for_user(Problem {
                line: locate::line_of(root.get_ref(), text, &path),
                key: path.join("."),
                message,
            });
            match warning.line {
                Some(line) => format!("{}:{line}: {}", file.display(), warning.message),
                None => format!("{}: {}", file.display(), warning.message),
            }
        })
        .collect();
    Ok(Lab {
        name,
        file: file.to_path_buf(),
        dir,
        stages,
        pipelines,
        runs,
        slurm,
        warnings,
        evaluated: None,
    })
}

/// An ignored key's path as the user wrote it: serde_ignored also names the layers of
/// `Spanned` and `Option` that the lab's structs wrap tables in.
fn segments(path: &serde_ignored::Path) -> Vec<String> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Map { parent, key } => {
            let mut segments = segments(parent);
            if !key.starts_with("$__serde_spanned_private") {
                segments.push(key.clone());
            }
            segments
        }
        Path::Seq { parent, index } => {
            let mut segments = segments(parent);
            match segments.last_mut() {
                Some(last) => last.push_str(&format!("[{index}]")),
                None => segments.push(format!("[{index}]")),
            }
            segments
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    }
}

/// The problem of a key no part of the lab reads: its line, and the key it may be.
fn unknown_key(root: &DeTable, text: &str, path: &[String]) -> Problem {
    let (key, table) = path.split_last().expect("an ignored key has a name");
    let known = known_keys(table);
    let hint = did_you_mean(key, known.iter().copied());
    let takes = match known {
        _ if !hint.is_empty() => String::new(),
        [] => String::new(),
        keys => format!(
            "; {} takes {}",
            if table.is_empty() {
                "a lab file".to_string()
            } else {
                format!("`{}`", table.join("."))
            },
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Problem {
        line: locate::line_of(root, text, path),
        key: path.join("."),
        message: format!("unknown key{hint}{takes}"),
    }
}

/// What is declared but used by no run: odd, not wrong (a stage kept for later).
fn unused(raw: &RawLab) -> Vec<(Vec<&str>, String)> {
    let mut warnings = Vec::new();
    let in_pipelines: BTreeSet<&str> = raw
        .pipelines
        .values()
        .flat_map(|p| p.get_ref().stages.iter().map(|s| s.get_ref().as_str()))
        .collect();
    for name in raw.stages.keys() {
        if !in_pipelines.contains(name.as_str()) {
            warnings.push((
                vec!["stages", name],
                format!("stage `{name}` is in no pipeline, so it never runs"),
            ));
        }
    }
    let in_runs: BTreeSet<&str> = raw
        .runs
        .values()
        .flat_map(|r| r.get_ref().pipelines.iter().map(|p| p.get_ref().as_str()))
        .collect();
    for name in raw.pipelines.keys() {
        if !in_runs.contains(name.as_str()) {
            warnings.push((
                vec!["pipelines", name],
                format!("pipeline `{name}` is in no run, so it never runs"),
            ));
        }
    }
    warnings
}

/// Every key a lab file takes, dotted, with `NAME` for a name the lab chooses (a stage's,
/// a parameter's): what `docs/lab-reference.md` documents, one entry each.
pub fn keys() -> Vec<String> {
    let mut keys = Vec::new();
    for (table, fields) in [
        ("lab", fields::<RawLabTable>()),
        ("stages.NAME", fields::<RawStage>()),
        ("pipelines.NAME", fields::<RawPipeline>()),
        ("runs.NAME", fields::<RawRun>()),
        ("slurm", fields::<super::SlurmSettings>()),
    ] {
        for field in fields {
            keys.push(format!("{table}.{field}"));
        }
    }
    let tables: [(&str, &[&str]); 3] = [
        ("stages.NAME.limits", &super::limits::NAMES),
        ("stages.NAME.resources", &super::cluster::RESOURCE_NAMES),
        ("stages.NAME.escalate", &super::limits::ESCALATE_NAMES),
    ];
    for (table, names) in tables {
        keys.extend(names.iter().map(|name| format!("{table}.{name}")));
    }
    keys
}

/// The keys the table at `path` takes.
fn known_keys(path: &[String]) -> &'static [&'static str] {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match path.as_slice() {
        [] => fields::<RawLab>(),
        ["lab"] => fields::<RawLabTable>(),
        ["stages", _] => fields::<RawStage>(),
        ["pipelines", _] => fields::<RawPipeline>(),
        ["runs", _] => fields::<RawRun>(),
        ["slurm"] => fields::<super::SlurmSettings>(),
        _ => &[],
    }
}

/// A syntax or type error of toml, named by the key at its position.
fn toml_problem(text: &str, root: &DeTable, error: &toml::de::Error) -> Problem {
    let Some(span) = error.span() else {
        return Problem {
            line: None,
            key: String::new(),
            message: error.message().to_string(),
        };
    };
    let path = locate::key_at(root, text, span.start);
    // serde says what it expected in Rust's words (`a sequence`, `struct RawStage`).
    let message = match error.message().rsplit_once(", expected ") {
        Some((found, rust)) if found.starts_with("invalid type: ") => {
            format!("{found}, expected {}", expected(&path).unwrap_or(rust))
        }
        // toml reads a bare word by its first letter: `t…` as a boolean gone wrong,
        // `n…` as `nan`; the user meant a string.
        _ if [
            "invalid boolean",
            "invalid float",
            "string values must be quoted",
        ]
        .iter()
        .any(|m| error.message().starts_with(m))
            && bare_word(text, span.start).is_some() =>
        {
            let word = bare_word(text, span.start).unwrap_or_default();
            format!(
                "`{word}` is not a value: quote a string (\"{word}\"), or write `true` or `false`"
            )
        }
        _ => error.message().to_string(),
    };
    Problem {
        line: Some(locate::line(text, span.start)),
        key: path.join("."),
        message,
    }
}

/// The unquoted word at byte `offset` of `text`, when a value there is one (`mode = impure`).
fn bare_word(text: &str, offset: usize) -> Option<&str> {
    let rest = text.get(offset..)?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || "-_.:/".contains(c)))
        .unwrap_or(rest.len());
    let word = &rest[..end];
    let is_literal = ["true", "false", "inf", "nan"].contains(&word);
    (word.starts_with(|c: char| c.is_alphabetic()) && !is_literal).then_some(word)
}

/// What the key at `path` takes, in the words of the lab file.
fn expected(path: &[String]) -> Option<&'static str> {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    Some(match path.as_slice() {
        ["lab" | "stages" | "pipelines" | "runs" | "slurm"]
        | ["stages" | "pipelines" | "runs", _]
        | ["stages", _, "limits" | "resources" | "escalate"] => "a table",
        ["lab", "name"] | ["stages", _, "sha256"] => "a string",
        ["lab", "max_jobs"] => "a positive integer: the most jobs one run may expand to",
        ["stages", _, "retries"] => {
            "a whole number: how many times a failed job runs again, like `retries = 2`"
        }
        ["lab", "project"] => {
            "a string: the project directory, absolute or relative to the lab file"
        }
        ["stages", _, "plugin"] => "a string: a .wasm file or `builtin:NAME`",
        ["stages", _, "mode"] => "a string: `pure`, `impure` or `hermetic`",
        ["stages", _, "inputs"] => "a table of input names to `STAGE`, `STAGE[*]` or `path:DIR`",
        ["stages", _, "inputs", _] => "a string: `STAGE`, `STAGE[*]` or `path:DIR`",
        ["stages", _, "params"] => "a table of parameter names to their defaults",
        ["stages", _, "outputs"] => "a list of relative paths, like `[\"data.csv\"]`",
        ["stages", _, "tools"] => "a list of command names, like `[\"make\", \"cc\"]`",
        ["stages", _, "sources"] => "a list of globs, like `[\"src/**\"]`",
        ["stages", _, "foreach"] => {
            "a string: `STAGE:FILE`, a list that a declared output of STAGE holds"
        }
        ["stages", _, "max_items"] => "a positive integer: the most items its list may have",
        ["pipelines", _, "stages"] => "a list of stage names",
        ["runs", _, "pipelines"] => "a list of pipeline names",
        ["runs", _, "params"] => "a table of parameter names to values (a list is an axis)",
        ["runs", _, "zip"] => "a list of lists of axis names, like `[[\"a\", \"b\"]]`",
        _ => return None,
    })
}

/// Where a stage's paths are relative to: plugin files to the lab file, `path:` inputs to
/// the project.
#[derive(Clone, Copy)]
struct Dirs<'a> {
    lab: &'a Path,
    project: &'a Path,
}

/// The project directory: `[lab] project` (absolute, or relative to the lab file), which
/// must be a directory, else the lab file's directory.
fn project(raw: &Option<Spanned<String>>, lab_dir: &Path, problems: &mut Problems) -> PathBuf {
    let Some(project) = raw else {
        return lab_dir.to_path_buf();
    };
    let path = lab_dir.join(project.get_ref());
    if !path.is_dir() {
        problems.at(
            project.span(),
            "lab.project",
            format!(
                "{} is not a directory: name the project directory, absolute or relative to \
                 the lab file",
                path.display()
            ),
        );
        return lab_dir.to_path_buf();
    }
    std::path::absolute(&path).unwrap_or(path)
}

fn stage(
    name: &str,
    raw: &Spanned<RawStage>,
    dirs: Dirs,
    stage_names: &BTreeSet<&str>,
    problems: &mut Problems,
) -> Option<Stage> {
    let key = format!("stages.{name}");
    let start = problems.list.len();
    check_name(name, raw.span(), &key, problems);
    let raw_stage = raw.get_ref();

    let plugin = match &raw_stage.plugin {
        None => {
            if !problems.misspelt(&["stages", name], "plugin") {
                problems.at(
                    raw.span(),
                    &key,
                    "has no `plugin`: name a .wasm file or `builtin:make`".into(),
                );
            }
            None
        }
        Some(p) => plugin(p, dirs.lab, &format!("{key}.plugin"), problems),
    };
    if let Some(sha) = &raw_stage.sha256 {
        let s = sha.get_ref();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.at(
                sha.span(),
                format!("{key}.sha256"),
                format!("`{s}` is not a hex SHA-256 digest (64 hex digits)"),
            );
        }
    }
    let mode = match raw_stage
        .mode
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span()))
    {
        None | Some(("pure", _)) => Mode::Pure,
        Some(("impure", _)) => Mode::Impure,
        Some(("hermetic", _)) => Mode::Hermetic,
        Some((other, span)) => {
            problems.at(
                span,
                format!("{key}.mode"),
                format!("unknown mode `{other}`: use `pure`, `impure` or `hermetic`"),
            );
            Mode::Pure
        }
    };

    let mut inputs = BTreeMap::new();
    for (input_name, value) in &raw_stage.inputs {
        let input_key = format!("{key}.inputs.{input_name}");
        check_name(input_name, value.span(), &input_key, problems);
        if let Some(input) = input(name, value, dirs.project, stage_names, &input_key, problems) {
            inputs.insert(input_name.clone(), input);
        }
    }

    let params = raw_stage
        .params
        .iter()
        .map(|(k, v)| (k.clone(), toml_to_json(v)))
        .collect();
    for (param, value) in &raw_stage.params {
        if let Some(problem) = not_json(value) {
            problems.at(raw.span(), format!("{key}.params.{param}"), problem);
        }
        if param.starts_with(super::ITEM_PREFIX) {
            problems.at(
                raw.span(),
                format!("{key}.params"),
                format!(
                    "parameter `{param}`: names starting with `{}` are the fields of a fan-out's items; rename it",
                    super::ITEM_PREFIX
                ),
            );
        }
    }
    let foreach = foreach(name, raw_stage, stage_names, &key, problems);

    let mut outputs = Vec::new();
    for output in &raw_stage.outputs {
        match relative_path(output.get_ref()) {
            Some(path) => outputs.push(path),
            None => problems.at(
                output.span(),
                format!("{key}.outputs"),
                format!("`{}` is not a relative path inside /out: write it like `bin/tool` or `data.csv`", output.get_ref()),
            ),
        }
    }
    let tools = unique(&raw_stage.tools, &format!("{key}.tools"), problems);
    for tool in &raw_stage.tools {
        if tool.get_ref().is_empty() || tool.get_ref().contains(char::is_whitespace) {
            problems.at(
                tool.span(),
                format!("{key}.tools"),
                format!("`{}` is not a command name", tool.get_ref()),
            );
        }
    }
    let sources: Vec<String> = raw_stage
        .sources
        .iter()
        .map(|s| s.get_ref().clone())
        .collect();
    for source in &raw_stage.sources {
        if let Err(e) = globset::Glob::new(source.get_ref()) {
            problems.at(
                source.span(),
                format!("{key}.sources"),
                format!("bad glob: {e}"),
            );
        }
    }

    let limits = limits(&raw_stage.limits, &format!("{key}.limits"), problems);
    let (resources, resource_problems) =
        super::cluster::resources(&raw_stage.resources, &format!("{key}.resources"));
    for (span, at, message) in resource_problems {
        problems.at(span, at, message);
    }

    let escalate = escalation(&raw_stage.escalate, &format!("{key}.escalate"), problems);
    let retries = raw_stage.retries.as_ref().map_or(0, |r| *r.get_ref());

    if problems.list.len() > start {
        return None;
    }
    Some(Stage {
        name: name.to_string(),
        plugin: plugin?,
        sha256: raw_stage
            .sha256
            .as_ref()
            .map(|s| s.get_ref().to_ascii_lowercase()),
        mode,
        inputs,
        params,
        outputs,
        tools,
        sources,
        limits,
        retries,
        escalate,
        resources,
        foreach,
    })
}

/// A stage's `foreach = "STAGE:FILE"` and `max_items`; that FILE is a declared output of
/// STAGE is checked once every stage is read ([`check_fanouts`]).
fn foreach(
    name: &str,
    raw: &RawStage,
    stage_names: &BTreeSet<&str>,
    key: &str,
    problems: &mut Problems,
) -> Option<super::Foreach> {
    let max_items = match &raw.max_items {
        Some(max) if *max.get_ref() == 0 => {
            problems.at(
                max.span(),
                format!("{key}.max_items"),
                "must be at least 1".into(),
            );
            None
        }
        Some(max) if raw.foreach.is_none() => {
            problems.at(
                max.span(),
                format!("{key}.max_items"),
                "bounds the list of `foreach`, which this stage does not have: add `foreach = \"STAGE:FILE\"` or remove it".into(),
            );
            None
        }
        Some(max) => Some(usize::try_from(*max.get_ref()).unwrap_or(usize::MAX)),
        None => None,
    };
    let raw_foreach = raw.foreach.as_ref()?;
    let at = format!("{key}.foreach");
    let value = raw_foreach.get_ref();
    let Some((upstream, file)) = value.split_once(':') else {
        problems.at(
            raw_foreach.span(),
            at,
            format!("`{value}` is not `STAGE:FILE`, like `split:items.json`"),
        );
        return None;
    };
    if !stage_names.contains(upstream) {
        let hint = did_you_mean(upstream, stage_names.iter().copied());
        problems.at(
            raw_foreach.span(),
            at,
            format!("unknown stage `{upstream}`{hint}; `foreach` is `STAGE:FILE`"),
        );
        return None;
    }
    if upstream == name {
        problems.at(
            raw_foreach.span(),
            at,
            format!("stage `{name}` cannot run over a list of its own"),
        );
        return None;
    }
    let Some(file) = relative_path(file) else {
        problems.at(
            raw_foreach.span(),
            at,
            format!("`{file}` is not a relative path inside the output of `{upstream}`"),
        );
        return None;
    };
    Some(super::Foreach {
        stage: upstream.to_string(),
        file,
        max_items: max_items.unwrap_or(super::MAX_ITEMS),
    })
}

/// What a fan-out needs of the stages around it: its list is a declared output of its
/// stage, and a stage reads at most one stage with items one to one (two lists of items
/// have no order in common to pair them by).
fn check_fanouts(raw: &RawLab, stages: &BTreeMap<String, Stage>, problems: &mut Problems) {
    for (name, stage) in stages {
        let Some(foreach) = &stage.foreach else {
            continue;
        };
        let Some(upstream) = stages.get(&foreach.stage) else {
            continue;
        };
        if !upstream.outputs.contains(&foreach.file) {
            let span = raw.stages[name]
                .get_ref()
                .foreach
                .as_ref()
                .map(|f| f.span());
            problems.at(
                span.unwrap_or_else(|| raw.stages[name].span()),
                format!("stages.{name}.foreach"),
                format!(
                    "`{}` is not a declared output of stage `{}`: add it to its `outputs`",
                    foreach.file.display(),
                    foreach.stage
                ),
            );
        }
    }
    for (name, stage) in stages {
        let mut lineages: BTreeSet<&str> = BTreeSet::new();
        for input in stage.inputs.values() {
            if let Input::Stage(up) = input {
                lineages.extend(fanout_of(up, stages, 0));
            }
        }
        if stage.foreach.is_some() && !lineages.is_empty() {
            let names: Vec<String> = lineages.iter().map(|s| format!("`{s}`")).collect();
            problems.at(
                raw.stages[name].span(),
                format!("stages.{name}"),
                format!(
                    "runs over a list (`foreach`) and also reads the items of {} one to one, which cannot be paired; gather them (`STAGE[*]`)",
                    names.join(" and ")
                ),
            );
        } else if lineages.len() > 1 {
            let names: Vec<String> = lineages.iter().map(|s| format!("`{s}`")).collect();
            problems.at(
                raw.stages[name].span(),
                format!("stages.{name}"),
                format!(
                    "reads the items of fan-outs {} one to one, which cannot be paired; gather all but one (`STAGE[*]`)",
                    names.join(" and ")
                ),
            );
        }
    }
}

/// The fan-out stage whose items the jobs of `stage` follow one to one, if any.
fn fanout_of<'a>(
    stage: &'a str,
    stages: &'a BTreeMap<String, Stage>,
    depth: usize,
) -> Option<&'a str> {
    let def = stages.get(stage)?;
    // Cycles are reported on their own; stop where one would loop.
    if depth > stages.len() {
        return None;
    }
    if def.foreach.is_some() {
        return Some(stage);
    }
    def.inputs.values().find_map(|input| match input {
        Input::Stage(up) => fanout_of(up, stages, depth + 1),
        _ => None,
    })
}

/// Reads a stage's `escalate = { memory = 2, time = 1.5 }`: a factor per retry for each
/// limit, from 1 (the limit stays) to [`super::limits::MAX_FACTOR`].
fn escalation(
    raw: &BTreeMap<String, Spanned<toml::Value>>,
    key: &str,
    problems: &mut Problems,
) -> super::Escalation {
    use super::limits::{ESCALATE_NAMES, MAX_FACTOR};
    let mut escalate = super::Escalation::default();
    for (name, value) in raw {
        let factor = match value.get_ref() {
            toml::Value::Integer(i) => Some(*i as f64),
            toml::Value::Float(f) => Some(*f),
            _ => None,
        }
        .filter(|f| (1.0..=MAX_FACTOR).contains(f));
        let slot = match name.as_str() {
            "memory" => &mut escalate.memory,
            "time" => &mut escalate.time,
            other => {
                let hint = did_you_mean(other, ESCALATE_NAMES);
                problems.at(
                    value.span(),
                    format!("{key}.{other}"),
                    format!("unknown limit to escalate{hint}; escalate takes memory and time"),
                );
                continue;
            }
        };
        match factor {
            Some(factor) => *slot = factor,
            None => problems.at(
                value.span(),
                format!("{key}.{name}"),
                format!(
                    "`{}` is not a factor: write a number from 1 (the limit stays) to \
                     {MAX_FACTOR}, like `{name} = 2` (twice the limit with each retry)",
                    value.get_ref()
                ),
            ),
        }
    }
    escalate
}

fn limits(
    raw: &BTreeMap<String, Spanned<toml::Value>>,
    key: &str,
    problems: &mut Problems,
) -> Limits {
    use super::limits::{MAX_MEMORY, parse_bytes, parse_duration};
    let mut limits = Limits::default();
    for (name, value) in raw {
        let text = match value.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) if *i >= 0 => i.to_string(),
            _ => String::new(),
        };
        let ok = match name.as_str() {
            "memory" => parse_bytes(&text)
                .filter(|m| *m <= MAX_MEMORY)
                .map(|m| limits.memory = m),
            "output" => parse_bytes(&text).map(|o| limits.output = o),
            "log" => parse_bytes(&text).map(|l| limits.log = l),
            "time" => parse_duration(&text).map(|t| limits.time = t),
            "files" => text
                .parse()
                .ok()
                .filter(|f| *f > 0)
                .map(|f| limits.files = f),
            other => {
                let hint = did_you_mean(other, super::limits::NAMES);
                problems.at(
                    value.span(),
                    format!("{key}.{other}"),
                    format!("unknown limit{hint}; limits are memory, time, output, log and files"),
                );
                continue;
            }
        };
        if ok.is_none() {
            let example = if name == "time" {
                "`30s`, `10m` or `2h`"
            } else if name == "files" {
                "a positive number"
            } else {
                "`64K`, `16M` or `1G` (memory at most 4G)"
            };
            problems.at(
                value.span(),
                format!("{key}.{name}"),
                format!("`{text}` is not a valid {name} limit: write it like {example}"),
            );
        }
    }
    limits
}

fn plugin(
    raw: &Spanned<String>,
    dir: &Path,
    key: &str,
    problems: &mut Problems,
) -> Option<PluginRef> {
    let value = raw.get_ref();
    if let Some(name) = value.strip_prefix("builtin:") {
        if builtin::bytes(name).is_none() {
            let hint = did_you_mean(name, builtin::NAMES.iter().copied());
            problems.at(
                raw.span(),
                key,
                format!(
                    "no built-in plugin `{name}`{hint}; built-ins are {}",
                    builtin::NAMES.join(", ")
                ),
            );
            return None;
        }
        return Some(PluginRef::Builtin(name.to_string()));
    }
    let path = dir.join(value);
    if !path.is_file() {
        problems.at(
            raw.span(),
            key,
            format!("plugin file {} does not exist: build it, or fix the path (relative to the lab file)", path.display()),
        );
        return None;
    }
    Some(PluginRef::File(path))
}

fn input(
    stage: &str,
    raw: &Spanned<String>,
    dir: &Path,
    stage_names: &BTreeSet<&str>,
    key: &str,
    problems: &mut Problems,
) -> Option<Input> {
    let value = raw.get_ref();
    if let Some(path) = value.strip_prefix("path:") {
        let Some(relative) = relative_path(path) else {
            problems.at(
                raw.span(),
                key,
                format!("`{path}` must be a relative path inside the project directory"),
            );
            return None;
        };
        let absolute = dir.join(relative);
        if !absolute.exists() {
            problems.at(
                raw.span(),
                key,
                format!("{} does not exist", absolute.display()),
            );
            return None;
        }
        return Some(Input::Path(absolute));
    }
    let (upstream, gather) = match value.strip_suffix("[*]") {
        Some(upstream) => (upstream, true),
        None => (value.as_str(), false),
    };
    if !stage_names.contains(upstream) {
        let hint = did_you_mean(upstream, stage_names.iter().copied());
        problems.at(
            raw.span(),
            key,
            format!(
                "unknown stage `{upstream}`{hint}; an input is `path:DIR`, `STAGE` or `STAGE[*]`"
            ),
        );
        return None;
    }
    if upstream == stage {
        problems.at(
            raw.span(),
            key,
            format!("stage `{stage}` cannot read its own output"),
        );
        return None;
    }
    Some(if gather {
        Input::Gather(upstream.into())
    } else {
        Input::Stage(upstream.into())
    })
}

fn pipeline(
    name: &str,
    raw: &Spanned<RawPipeline>,
    lab: &RawLab,
    problems: &mut Problems,
) -> Pipeline {
    let key = format!("pipelines.{name}.stages");
    check_name(name, raw.span(), &format!("pipelines.{name}"), problems);
    if raw.get_ref().stages.is_empty() && !problems.misspelt(&["pipelines", name], "stages") {
        problems.at(
            raw.span(),
            &key,
            "is empty: list the stages of this pipeline".into(),
        );
    }
    let stages = unique(&raw.get_ref().stages, &key, problems);
    for stage in &raw.get_ref().stages {
        let Some(def) = lab.stages.get(stage.get_ref()) else {
            let hint = did_you_mean(stage.get_ref(), lab.stages.keys().map(String::as_str));
            problems.at(
                stage.span(),
                &key,
                format!("unknown stage `{}`{hint}", stage.get_ref()),
            );
            continue;
        };
        for (input, value) in &def.get_ref().inputs {
            let upstream = value
                .get_ref()
                .strip_suffix("[*]")
                .unwrap_or(value.get_ref());
            if lab.stages.contains_key(upstream) && !stages.iter().any(|s| s == upstream) {
                problems.at(
                    stage.span(),
                    &key,
                    format!("stage `{}` reads `{upstream}` (input `{input}`), which is not in this pipeline: add it", stage.get_ref()),
                );
            }
        }
        if let Some(foreach) = &def.get_ref().foreach
            && let Some((upstream, _)) = foreach.get_ref().split_once(':')
            && lab.stages.contains_key(upstream)
            && !stages.iter().any(|s| s == upstream)
        {
            problems.at(
                stage.span(),
                &key,
                format!("stage `{}` runs over a list of `{upstream}` (`foreach`), which is not in this pipeline: add it", stage.get_ref()),
            );
        }
    }
    Pipeline {
        name: name.to_string(),
        stages,
    }
}

fn run(name: &str, raw: &Spanned<RawRun>, lab: &RawLab, problems: &mut Problems) -> Run {
    let key = format!("runs.{name}");
    check_name(name, raw.span(), &key, problems);
    let raw_run = raw.get_ref();
    if raw_run.pipelines.is_empty() && !problems.misspelt(&["runs", name], "pipelines") {
        problems.at(
            raw.span(),
            format!("{key}.pipelines"),
            "is empty: name the pipelines this run runs".into(),
        );
    }
    let pipelines = unique(&raw_run.pipelines, &format!("{key}.pipelines"), problems);
    let mut declared = BTreeSet::new();
    for pipeline in &raw_run.pipelines {
        match lab.pipelines.get(pipeline.get_ref()) {
            Some(p) => {
                for stage in &p.get_ref().stages {
                    if let Some(s) = lab.stages.get(stage.get_ref()) {
                        declared.extend(s.get_ref().params.keys().map(String::as_str));
                    }
                }
            }
            None => {
                let hint =
                    did_you_mean(pipeline.get_ref(), lab.pipelines.keys().map(String::as_str));
                problems.at(
                    pipeline.span(),
                    format!("{key}.pipelines"),
                    format!("unknown pipeline `{}`{hint}", pipeline.get_ref()),
                );
            }
        }
    }

    let mut params = BTreeMap::new();
    for (param, value) in &raw_run.params {
        let param_key = format!("{key}.params.{param}");
        if !declared.contains(param.as_str()) {
            let hint = did_you_mean(param, declared.iter().copied());
            problems.at(
                value.span(),
                &param_key,
                format!("no stage of this run declares parameter `{param}`{hint}; declare it with a default in the stage's `params`"),
            );
        }
        if matches!(value.get_ref(), toml::Value::Array(a) if a.is_empty()) {
            problems.at(
                value.span(),
                &param_key,
                "is an empty axis: give at least one value".into(),
            );
        }
        if let Some(problem) = not_json(value.get_ref()) {
            problems.at(value.span(), &param_key, problem);
        }
        params.insert(param.clone(), toml_to_json(value.get_ref()));
    }

    let mut zipped = BTreeSet::new();
    let mut zip = Vec::new();
    for group in &raw_run.zip {
        let mut names = Vec::new();
        let mut length = None;
        for axis in group {
            let axis_name = axis.get_ref();
            let zip_key = format!("{key}.zip");
            match raw_run.params.get(axis_name).map(|v| v.get_ref()) {
                Some(toml::Value::Array(values)) => {
                    if *length.get_or_insert(values.len()) != values.len() {
                        problems.at(axis.span(), &zip_key, format!("axis `{axis_name}` has {} values, but the others in its zip group have {}: zipped axes advance together and need equal lengths", values.len(), length.unwrap_or_default()));
                    }
                }
                _ => problems.at(
                    axis.span(),
                    &zip_key,
                    format!(
                        "`{axis_name}` is not a list in `{key}.params`, so it is not an axis to zip"
                    ),
                ),
            }
            if !zipped.insert(axis_name.clone()) {
                problems.at(
                    axis.span(),
                    &zip_key,
                    format!("axis `{axis_name}` is in more than one zip group"),
                );
            }
            names.push(axis_name.clone());
        }
        zip.push(names);
    }
    Run {
        name: name.to_string(),
        pipelines,
        params,
        zip,
    }
}

/// Refuses a run whose sweep expands to more jobs than `max_jobs` (see [`super::sweep`]),
/// counted without expanding it.
fn check_sweep_sizes(
    raw: &RawLab,
    runs: &BTreeMap<String, Run>,
    pipelines: &BTreeMap<String, Pipeline>,
    problems: &mut Problems,
) {
    let max = match &raw.lab.max_jobs {
        Some(max) if *max.get_ref() == 0 => {
            problems.at(
                max.span(),
                "lab.max_jobs",
                "is 0: give the most jobs one run may expand to, at least 1".into(),
            );
            return;
        }
        Some(max) => *max.get_ref(),
        None => sweep::DEFAULT_MAX_JOBS,
    };
    for (name, run) in runs {
        let size = sweep::Size::of(run, |p| pipelines.get(p));
        if size.jobs.is_some_and(|jobs| jobs <= max) {
            continue;
        }
        let count = match size.jobs {
            Some(jobs) => sweep::thousands(jobs),
            None => "more than 18 billion billion".into(),
        };
        problems.at(
            raw.runs[name].span(),
            format!("runs.{name}"),
            format!(
                "the sweep expands to {count} jobs ({}), more than the {} one run may have: \
                 make the sweep smaller, or raise `max_jobs` in `[lab]`",
                size.describe(),
                sweep::thousands(max)
            ),
        );
    }
}

fn check_cycles(raw: &RawLab, stages: &BTreeMap<String, Stage>, problems: &mut Problems) {
    // Depth-first search; `on_path` holds the stages being visited.
    fn visit<'a>(
        stage: &'a str,
        stages: &'a BTreeMap<String, Stage>,
        on_path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(pos) = on_path.iter().position(|s| *s == stage) {
            let mut cycle = on_path[pos..].to_vec();
            cycle.push(stage);
            return Some(cycle);
        }
        if !done.insert(stage) {
            return None;
        }
        on_path.push(stage);
        for up in stages.get(stage).into_iter().flat_map(|s| s.upstream()) {
            if let Some(cycle) = visit(up, stages, on_path, done) {
                return Some(cycle);
            }
        }
        on_path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for name in stages.keys() {
        if let Some(cycle) = visit(name, stages, &mut Vec::new(), &mut done) {
            let span = raw.stages[cycle[0]].span();
            problems.at(
                span,
                format!("stages.{}", cycle[0]),
                format!("inputs form a cycle: {}", cycle.join(" -> ")),
            );
            return;
        }
    }
}

/// Whether `name` may name a stage, an input, a pipeline or a run: these become directory
/// and key names (`/in/<input>`), so one path component, never `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name != "."
        && name != ".."
}

/// What to do about a name that is not [`valid_name`].
pub const VALID_NAME_HINT: &str = "use letters, digits, `-`, `_` and `.`";

fn check_name(name: &str, span: std::ops::Range<usize>, key: &str, problems: &mut Problems) {
    if !valid_name(name) {
        problems.at(
            span,
            key,
            format!("`{name}` is not a valid name: {VALID_NAME_HINT}"),
        );
    }
}

fn unique(list: &[Spanned<String>], key: &str, problems: &mut Problems) -> Vec<String> {
    let mut seen = BTreeSet::new();
    for item in list {
        if !seen.insert(item.get_ref().as_str()) {
            problems.at(
                item.span(),
                key,
                format!("`{}` is listed twice", item.get_ref()),
            );
        }
    }
    list.iter().map(|i| i.get_ref().clone()).collect()
}

/// A path that stays inside its base directory: relative, no `..`, not empty.
pub(crate) fn relative_path(raw: &str) -> Option<PathBuf> {
    let path = Path::new(raw);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!clean.as_os_str().is_empty()).then_some(clean)
}

/// What is wrong with a parameter's value that JSON cannot hold: a float `inf` or `nan`,
/// which [`toml_to_json`] could only make `null`, so that a sweep over `[inf, nan]` would
/// be one job, of a value the lab does not say.
fn not_json(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::Float(f) if !f.is_finite() => Some(format!(
            "`{f}` is no number a plugin can read (its parameters are JSON): write a finite number, or a string (\"{f}\")"
        )),
        toml::Value::Array(a) => a.iter().find_map(not_json),
        toml::Value::Table(t) => t.values().find_map(not_json),
        _ => None,
    }
}

fn toml_to_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => s.clone().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(a) => a.iter().map(toml_to_json).collect(),
        toml::Value::Table(t) => t
            .iter()
            .map(|(k, v)| (k.clone(), toml_to_json(v)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        match parse(Path::new("/nonexistent/repx.toml"), text, |p| p) {
            Err(LabError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(relative_path("bin/x"), Some(PathBuf::from("bin/x")));
        assert_eq!(relative_path("./a"), Some(PathBuf::from("a")));
        assert_eq!(relative_path("../a"), None);
        assert_eq!(relative_path("/etc/passwd"), None);
        assert_eq!(relative_path(""), None);
    }

    #[test]
    fn every_problem_is_collected_with_its_line() {
        let found = problems(
            "[stages.a]\nplugin = \"builtin:exec\"\ninputs = { x = \"bb\" }\noutputs = [\"../up\"]\n\
             [pipelines.main]\nstages = [\"a\"]\n[runs.r]\npipelines = [\"main\"]\nparams = { seed = [] }\n",
        );
        let keys: Vec<_> = found.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            keys,
            [
                (Some(3), "stages.a.inputs.x"),
                (Some(4), "stages.a.outputs"),
                (Some(9), "runs.r.params.seed"),
                (Some(9), "runs.r.params.seed"),
            ]
        );
    }

    #[test]
    fn cycles_are_named() {
        let found = problems(
            "[stages.a]\nplugin = \"builtin:exec\"\ninputs = { x = \"b\" }\n\
             [stages.b]\nplugin = \"builtin:exec\"\ninputs = { y = \"a\" }\n",
        );
        assert!(
            found
                .iter()
                .any(|p| p.message.contains("cycle: a -> b -> a")),
            "{found:?}"
        );
    }

    #[test]
    fn retries_and_escalation_are_read_and_bad_ones_named() {
        let lab = "[stages.a]\nplugin = \"builtin:exec\"\nretries = 2\n\
                   escalate = { memory = 1.5, time = 2 }\n[pipelines.main]\nstages = [\"a\"]\n\
                   [runs.r]\npipelines = [\"main\"]\n";
        let parsed = parse(Path::new("/nonexistent/repx.toml"), lab, |p| p).unwrap();
        let stage = &parsed.stages["a"];
        assert_eq!(stage.retries, 2);
        assert_eq!((stage.escalate.memory, stage.escalate.time), (1.5, 2.0));
        let found = problems(
            "[stages.a]\nplugin = \"builtin:exec\"\nretries = -1\n\
             escalate = { memory = 0.5, tme = 2 }\n",
        );
        let keys: Vec<_> = found.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(keys, [(Some(3), "stages.a.retries")], "{found:?}");
        let found = problems(
            "[stages.a]\nplugin = \"builtin:exec\"\nescalate = { memory = 0.5, tme = 2 }\n",
        );
        let named: Vec<_> = found
            .iter()
            .map(|p| (p.key.as_str(), p.message.as_str()))
            .collect();
        assert!(
            named[0].0 == "stages.a.escalate.memory" && named[0].1.contains("from 1"),
            "{named:?}"
        );
        assert!(
            named[1].0 == "stages.a.escalate.tme" && named[1].1.contains("did you mean `time`"),
            "{named:?}"
        );
    }
}
