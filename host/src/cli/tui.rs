//! `repx tui`: the lab's runs, stages and jobs as a tree with their states, a filter, a log
//! view that follows the selected job, and re-running, forcing or cancelling from there.
//!
//! It reads as `repx list` does and refreshes twice a second; it changes nothing itself.
//! A job's state is the one [`JobState`] `repx list jobs` shows, decided by the rules
//! `repx run` acts on, except that a job whose logs are live reads `running`.
//! Running is a `repx run` it starts as a child process on the selected jobs (`r`, or `f`
//! forced), whose progress shows as the states change, and which `c` interrupts as Ctrl-C
//! would. Every label and log line is shown escaped: plugins write them.

use std::collections::BTreeSet;
use std::io;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph};

use super::error::CliError;
use super::escape::terminal;
use super::inspect::open;
use super::render::{label, short};
use super::{Cli, exit};
use crate::graph::JobGraph;
use crate::plan::Plan;
use crate::sched::explain::{JobState, states};
use crate::store::Store;

/// How often states and the log view are read again.
const REFRESH: Duration = Duration::from_millis(500);
/// Lines of a log the view shows.
const LOG_LINES: usize = 200;

struct JobRow {
    /// Index of the job in the plan's graph.
    index: usize,
    run: String,
    stage: String,
    id: Option<String>,
    label: String,
    state: &'static str,
}

struct App {
    jobs: Vec<JobRow>,
    filter: String,
    filtering: bool,
    /// Index into the visible jobs.
    cursor: usize,
    selected: BTreeSet<String>,
    log: bool,
    child: Option<(Child, String)>,
    message: String,
}

pub fn tui(cli: &Cli) -> Result<i32, CliError> {
    let (lab, store) = open(cli)?;
    let runs: Vec<&str> = lab.runs.keys().map(String::as_str).collect();
    let graph = JobGraph::expand(&lab, &runs, None);
    let plan = Plan::new(lab.clone(), graph, &store)?;
    let ids = plan.static_ids(&store);
    let mut jobs = Vec::new();
    for (run, indices) in &plan.graph.runs {
        let mut indices = indices.clone();
        indices.sort_by_key(|&i| (plan.graph.jobs[i].stage.clone(), i));
        for index in indices {
            let job = &plan.graph.jobs[index];
            jobs.push(JobRow {
                index,
                run: run.clone(),
                stage: job.stage.clone(),
                id: ids[index].clone(),
                label: label(&job.stage, &job.params),
                state: "todo",
            });
        }
    }
    let mut app = App {
        jobs,
        filter: String::new(),
        filtering: false,
        cursor: 0,
        selected: BTreeSet::new(),
        log: false,
        child: None,
        message:
            "j/k move · space select · r run · f force · c cancel · enter log · / filter · q quit"
                .into(),
    };
    let root = store.root().to_path_buf();
    drop(store);
    let mut terminal = ratatui::init();
    let result = (|| -> io::Result<()> {
        loop {
            let store = Store::open_reader(&root).map_err(io::Error::other)?;
            app.refresh(&plan, &store);
            let log = if app.log {
                app.log_text(&store)
            } else {
                Vec::new()
            };
            terminal.draw(|frame| app.draw(frame, &log))?;
            if event::poll(REFRESH)?
                && let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
                && !app.key(key.code, key.modifiers, cli)
            {
                return Ok(());
            }
        }
    })();
    ratatui::restore();
    if let Some((mut child, _)) = app.child.take() {
        interrupt(&child);
        let _ = child.wait();
    }
    result.map_err(|e| CliError::Failed(e.into()))?;
    Ok(exit::SUCCESS)
}

/// What the tree shows for a job in `state`: `running` while its logs are live.
fn shown(state: JobState, running: bool) -> &'static str {
    match running {
        true => "running",
        false => state.as_str(),
    }
}

/// Sends SIGINT to a `repx run` the interface started: it stops as on Ctrl-C.
fn interrupt(child: &Child) {
    // SAFETY: a signal to our own child, which has not been waited for, so its pid is its own.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
}

impl App {
    fn visible(&self) -> Vec<usize> {
        let filter = self.filter.to_lowercase();
        (0..self.jobs.len())
            .filter(|&i| {
                let job = &self.jobs[i];
                filter.is_empty()
                    || [
                        job.label.as_str(),
                        job.state,
                        job.run.as_str(),
                        job.id.as_deref().unwrap_or(""),
                    ]
                    .iter()
                    .any(|text| text.to_lowercase().contains(&filter))
            })
            .collect()
    }

    fn current(&self) -> Option<&JobRow> {
        self.visible().get(self.cursor).map(|&i| &self.jobs[i])
    }

    fn refresh(&mut self, plan: &Plan, store: &Store) {
        let states = states(plan, store);
        for job in &mut self.jobs {
            let running = job
                .id
                .as_ref()
                .is_some_and(|id| store.live_logs(id).is_dir());
            job.state = shown(states[job.index], running);
        }
        if let Some((child, what)) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.message = format!("`{what}` ended: {status}");
            self.child = None;
        }
    }

    /// The last lines of the current job's logs: live while it runs, else as kept.
    fn log_text(&self, store: &Store) -> Vec<String> {
        let Some(id) = self.current().and_then(|j| j.id.clone()) else {
            return vec!["(this job has no id yet: its upstream has not run)".into()];
        };
        let live = store.live_logs(&id);
        let dir = if live.is_dir() {
            live
        } else if store.done(&id).is_none() && store.failed_dir(&id).is_dir() {
            store.failed_dir(&id)
        } else {
            store.job_dir(&id)
        };
        let mut lines = Vec::new();
        for name in ["stdout", "stderr", "host.log"] {
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                lines.push(format!("==> {name} <=="));
                let text = String::from_utf8_lossy(&bytes);
                lines.extend(text.lines().map(|l| terminal(l).into_owned()));
            }
        }
        if lines.is_empty() {
            lines.push(format!("job {} has no logs (yet)", short(&id)));
        }
        let skip = lines.len().saturating_sub(LOG_LINES);
        lines.split_off(skip)
    }

    /// Handles a key; false to quit.
    fn key(&mut self, code: KeyCode, modifiers: KeyModifiers, cli: &Cli) -> bool {
        if self.filtering {
            match code {
                KeyCode::Enter | KeyCode::Esc => self.filtering = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.cursor = 0;
            return true;
        }
        let visible = self.visible().len();
        match code {
            KeyCode::Char('q') => return false,
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Down | KeyCode::Char('j') => {
                self.cursor = (self.cursor + 1).min(visible.saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Char('/') => self.filtering = true,
            KeyCode::Enter => self.log = !self.log,
            KeyCode::Char(' ') => {
                if let Some(id) = self.current().and_then(|j| j.id.clone())
                    && !self.selected.remove(&id)
                {
                    self.selected.insert(id);
                }
            }
            KeyCode::Char('r') => self.start(cli, false),
            KeyCode::Char('f') => self.start(cli, true),
            KeyCode::Char('c') => match &self.child {
                Some((child, what)) => {
                    interrupt(child);
                    self.message = format!("interrupting `{what}`");
                }
                None => self.message = "nothing started from here is running".into(),
            },
            _ => {}
        }
        true
    }

    /// Starts `repx run` on the selected jobs (or the current one), forced with `force`.
    fn start(&mut self, cli: &Cli, force: bool) {
        if self.child.is_some() {
            self.message = "a run started from here is still going: `c` cancels it".into();
            return;
        }
        let ids: Vec<String> = if self.selected.is_empty() {
            self.current()
                .and_then(|j| j.id.clone())
                .into_iter()
                .collect()
        } else {
            self.selected.iter().cloned().collect()
        };
        if ids.is_empty() {
            self.message = "no job with an id to run".into();
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            self.message = "cannot find the repx binary".into();
            return;
        };
        let mut command = Command::new(exe);
        command.arg("run").args(&ids).arg("--lab").arg(&cli.lab);
        if let Some(store) = &cli.store {
            command.arg("--store").arg(store);
        }
        if force {
            command.arg("--force");
        }
        let what = format!(
            "repx run {}{}",
            ids.iter().map(|id| short(id)).collect::<Vec<_>>().join(" "),
            if force { " --force" } else { "" }
        );
        match command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => {
                self.message = format!("started `{what}`");
                self.child = Some((child, what));
                self.selected.clear();
            }
            Err(e) => self.message = format!("starting repx run: {e}"),
        }
    }

    fn draw(&self, frame: &mut ratatui::Frame, log: &[String]) {
        let areas = Layout::vertical(if self.log {
            [
                Constraint::Percentage(55),
                Constraint::Min(3),
                Constraint::Length(2),
            ]
        } else {
            [
                Constraint::Min(3),
                Constraint::Length(0),
                Constraint::Length(2),
            ]
        })
        .split(frame.area());

        let visible = self.visible();
        let mut items = Vec::new();
        let mut cursor_item = None;
        let (mut run, mut stage) = (None, None);
        for (position, &i) in visible.iter().enumerate() {
            let job = &self.jobs[i];
            if run != Some(&job.run) {
                items.push(ListItem::new(Line::from(Span::styled(
                    format!("run {}", terminal(&job.run)),
                    Style::new().add_modifier(Modifier::BOLD),
                ))));
                run = Some(&job.run);
                stage = None;
            }
            if stage != Some(&job.stage) {
                let (done, all) = self
                    .jobs
                    .iter()
                    .filter(|j| j.run == job.run && j.stage == job.stage)
                    .fold((0, 0), |(d, a), j| {
                        (d + usize::from(j.state == "done"), a + 1)
                    });
                items.push(ListItem::new(format!(
                    "  stage {} ({done}/{all} done)",
                    terminal(&job.stage)
                )));
                stage = Some(&job.stage);
            }
            let mark = match &job.id {
                Some(id) if self.selected.contains(id) => "[x]",
                _ => "[ ]",
            };
            let colour = match job.state {
                "done" => Color::Green,
                "failed" => Color::Red,
                "interrupted" => Color::Magenta,
                "running" => Color::Yellow,
                _ => Color::Gray,
            };
            if position == self.cursor {
                cursor_item = Some(items.len());
            }
            items.push(ListItem::new(Line::from(vec![
                Span::raw(format!(
                    "    {mark} {}  ",
                    job.id.as_deref().map_or("(pending)   ", short)
                )),
                Span::styled(format!("{:<8}", job.state), Style::new().fg(colour)),
                Span::raw(job.label.clone()),
            ])));
        }
        let title = if self.filtering || !self.filter.is_empty() {
            format!(
                " jobs · filter: {}{} ",
                terminal(&self.filter),
                if self.filtering { "_" } else { "" }
            )
        } else {
            " jobs ".to_string()
        };
        let list = List::new(items)
            .block(Block::new().borders(Borders::ALL).title(title))
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .highlight_symbol("> ");
        let mut state = ListState::default().with_selected(cursor_item);
        frame.render_stateful_widget(list, areas[0], &mut state);

        if self.log {
            let title = match self.current() {
                Some(job) => format!(
                    " log of {} {} ",
                    job.id.as_deref().map_or("(pending)", short),
                    job.label
                ),
                None => " log ".into(),
            };
            let height = areas[1].height.saturating_sub(2) as usize;
            let shown = &log[log.len().saturating_sub(height)..];
            let text: Vec<Line> = shown.iter().map(|l| Line::raw(l.clone())).collect();
            frame.render_widget(
                Paragraph::new(text).block(Block::new().borders(Borders::ALL).title(title)),
                areas[1],
            );
        }
        let running = match &self.child {
            Some((_, what)) => format!("running `{what}` · "),
            None => String::new(),
        };
        frame.render_widget(
            Paragraph::new(format!("{running}{}", self.message)),
            areas[2],
        );
    }
}
