//! How `service create/update/scale/rollback` show convergence while they wait
//! (`service_cli::wait`).
//!
//! On a terminal, docker's block, redrawn in place: the overall line, a line per slot (or node)
//! with its newest task's state and docker's stage bar (new … running; `complete` for jobs), and a
//! `verify:` line last:
//!
//! ```text
//! overall progress: 2 out of 3 tasks running
//! 1/3: running   [==================================================>]
//! 2/3: running   [==================================================>]
//! 3/3: preparing [=================================>                 ]
//! verify: Waiting 5 seconds to verify that tasks are stable...
//! ```
//!
//! Like docker, the bars need a terminal wider than 110 columns; above [`MAX_BARS`] tasks only the
//! overall and `verify:` lines are drawn; every line is cut to the terminal's width so that none
//! wraps (wrapped lines would break the cursor arithmetic). Elsewhere (a pipe, a file, the tests)
//! plain lines, printed when they change and never rewritten. `-q` prints nothing.

use crate::service_cli::Assessment;
use shoal_types::TaskState;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

/// Docker draws a line per task up to this many tasks (`maxProgressBars`).
pub const MAX_BARS: u64 = 20;
/// The widest state a bar line shows (`preparing`), so that the bars line up.
const STATE_WIDTH: usize = 9;
/// Docker shows the bars only on terminals wider than this.
const BAR_MIN_WIDTH: usize = 110;
/// Cells of a bar between its brackets, besides the head.
const BAR_CELLS: u64 = 50;
/// When the terminal's width cannot be read.
const DEFAULT_WIDTH: usize = 80;

/// One slot's (or node's) newest task, for its line of the block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// `1/3`, or the node's name for a global service.
    pub label: String,
    /// The newest task's state; `None`: no task yet.
    pub state: Option<TaskState>,
    /// What the plain line says after the label: the state, then anything about it (`running
    /// (previous version)`, `pending: no suitable node ...`).
    pub text: String,
    /// A job's task: `complete` is its last stage, not an end.
    pub job: bool,
}

/// Docker's stage of a state and how many stages there are (`numberedStates`: new 1, pending 3,
/// ..., running 9; complete 10 of a job's 10). `None`: a state that has no bar (it ended).
fn stage(state: TaskState, job: bool) -> Option<(u64, u64)> {
    let total = if job { 10 } else { 9 };
    let n = match state {
        TaskState::New => 1,
        TaskState::Pending => 3,
        TaskState::Assigned => 4,
        TaskState::Accepted => 5,
        TaskState::Preparing => 6,
        TaskState::Starting => 8,
        TaskState::Running => 9,
        TaskState::Complete if job => 10,
        _ => return None,
    };
    Some((n, total))
}

/// `[=====>      ]`: docker's bar, 50 cells and a head.
fn bar(n: u64, total: u64) -> String {
    let filled = (n * 100 / total.max(1) / 2).min(BAR_CELLS);
    format!("[{}>{}]", "=".repeat(filled as usize), " ".repeat((BAR_CELLS - filled) as usize))
}

/// A row's line: `1/3: running   [====>]`, the note after the bar; a task that ended shows its
/// text (`failed: exited with code 3`); a slot with no task yet only its label.
fn row_line(r: &Row, width: usize) -> String {
    let Some(state) = r.state else { return format!("{}:", r.label) };
    match stage(state, r.job) {
        Some((n, total)) => {
            let note = r.text.strip_prefix(state.as_str()).unwrap_or(&r.text);
            let note = note.strip_prefix(':').unwrap_or(note).trim();
            let mut line = format!("{}: {:<STATE_WIDTH$}", r.label, state.as_str());
            if width > BAR_MIN_WIDTH {
                line.push(' ');
                line.push_str(&bar(n, total));
            }
            if !note.is_empty() {
                line.push(' ');
                line.push_str(note);
            }
            line.trim_end().to_string()
        }
        None => format!("{}: {}", r.label, r.text),
    }
}

/// At most `width - 1` characters (the last column would wrap on some terminals), `…` last when
/// cut; newlines become spaces.
fn fit(line: &str, width: usize) -> String {
    let max = width.saturating_sub(1).max(10);
    let line = line.replace(['\n', '\r'], " ");
    if line.chars().count() <= max {
        return line;
    }
    let mut out: String = line.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// What the block shows at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub overall: String,
    pub rows: Vec<Row>,
    /// How many tasks the spec asks for: the rows are drawn only up to [`MAX_BARS`].
    pub expected: u64,
    /// `Waiting 5 seconds to verify that tasks are stable...`, `Service converged`.
    pub verify: Option<String>,
}

impl Frame {
    /// The block's lines on a terminal `width` columns wide.
    pub fn render(&self, width: usize) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.overall.is_empty() {
            lines.push(fit(&self.overall, width));
        }
        if self.expected <= MAX_BARS {
            lines.extend(self.rows.iter().map(|r| fit(&row_line(r, width), width)));
        }
        if let Some(v) = &self.verify {
            lines.push(fit(&format!("verify: {v}"), width));
        }
        lines
    }
}

/// The lines on screen, and how to replace them.
#[derive(Debug, Default)]
struct Screen {
    drawn: Vec<String>,
}

impl Screen {
    /// The bytes that turn the block on screen into `lines` (the cursor sits on the line below the
    /// block before and after): back to the block's first line, each changed line cleared and
    /// written, unchanged ones stepped over, and whatever the old block had below the new one
    /// erased. `None`: nothing changed.
    fn redraw(&mut self, lines: Vec<String>) -> Option<String> {
        if lines == self.drawn {
            return None;
        }
        let mut out = String::new();
        if !self.drawn.is_empty() {
            out.push_str(&format!("\r\x1b[{}A", self.drawn.len()));
        }
        for (i, line) in lines.iter().enumerate() {
            if self.drawn.get(i) != Some(line) {
                out.push_str("\x1b[2K");
                out.push_str(line);
            }
            out.push('\n');
        }
        if lines.len() < self.drawn.len() {
            out.push_str("\x1b[J");
        }
        self.drawn = lines;
        Some(out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-q`: nothing.
    Quiet,
    /// Not a terminal: plain lines, each printed once when it changes.
    Lines,
    /// A terminal: the block, redrawn in place.
    Block,
}

/// Prints a wait's progress in its [`Mode`].
pub struct Printer<W: Write> {
    mode: Mode,
    out: W,
    /// The terminal's width; `None`: read it before each redraw.
    width: Option<usize>,
    // Lines: what was printed last, per line key.
    shown: BTreeMap<String, String>,
    shown_overall: String,
    // Block.
    frame: Frame,
    screen: Screen,
}

impl Printer<std::io::Stdout> {
    /// For the command's stdout: the block on a terminal, plain lines elsewhere, nothing with
    /// `-q`.
    pub fn stdout(quiet: bool) -> Self {
        let out = std::io::stdout();
        let mode = if quiet {
            Mode::Quiet
        } else if out.is_terminal() {
            Mode::Block
        } else {
            Mode::Lines
        };
        Printer::new(mode, out, None)
    }
}

/// The width of the terminal on stdout.
fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|w| usize::from(w.ws_col))
        .filter(|w| *w > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

impl<W: Write> Printer<W> {
    pub fn new(mode: Mode, out: W, width: Option<usize>) -> Self {
        Printer {
            mode,
            out,
            width,
            shown: BTreeMap::new(),
            shown_overall: String::new(),
            frame: Frame::default(),
            screen: Screen::default(),
        }
    }

    /// The service as [`crate::service_cli::assess`] saw it.
    pub fn show(&mut self, a: &Assessment) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => {
                if a.overall != self.shown_overall {
                    self.print(&a.overall);
                    self.shown_overall = a.overall.clone();
                }
                for (key, line) in &a.lines {
                    if self.shown.get(key) != Some(line) {
                        self.print(line);
                        self.shown.insert(key.clone(), line.clone());
                    }
                }
            }
            Mode::Block => {
                self.frame.overall = a.overall.clone();
                self.frame.rows = a.rows.clone();
                self.frame.expected = a.expected;
                self.draw();
            }
        }
    }

    /// A `verify:` step (`Waiting 5 seconds to verify ...`, `Service converged`, `Detected task
    /// failure`): a line of its own, or the block's last line.
    pub fn verify(&mut self, text: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => self.print(&format!("verify: {text}")),
            Mode::Block => {
                self.frame.verify = Some(text.to_string());
                self.draw();
            }
        }
    }

    /// The verification countdown (`Waiting 3 seconds ...`): the block's last line follows it;
    /// plain lines said it once, with [`Printer::verify`].
    pub fn countdown(&mut self, text: &str) {
        if self.mode == Mode::Block {
            self.verify(text);
        }
    }

    /// The tasks stopped matching the spec: the block's `verify:` line goes until they do again.
    pub fn unverified(&mut self) {
        if self.mode == Mode::Block && self.frame.verify.take().is_some() {
            self.draw();
        }
    }

    fn print(&mut self, line: &str) {
        // Progress is best effort: a closed pipe must not fail the command.
        let _ = writeln!(self.out, "{line}").and_then(|_| self.out.flush());
    }

    fn draw(&mut self) {
        let width = self.width.unwrap_or_else(terminal_width);
        if let Some(bytes) = self.screen.redraw(self.frame.render(width)) {
            let _ = self.out.write_all(bytes.as_bytes()).and_then(|_| self.out.flush());
        }
    }

    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, state: TaskState, text: &str) -> Row {
        Row { label: label.into(), state: Some(state), text: text.into(), job: false }
    }

    fn assessment(overall: &str, rows: Vec<Row>, expected: u64) -> Assessment {
        let lines = rows
            .iter()
            .filter(|r| r.state.is_some())
            .map(|r| (r.label.clone(), format!("{}: {}", r.label, r.text)))
            .collect();
        Assessment { overall: overall.into(), lines, rows, expected, ..Default::default() }
    }

    const FULL: &str = "[==================================================>]";

    #[test]
    fn rows_show_dockers_stage_bars_on_wide_terminals() {
        let f = Frame {
            overall: "overall progress: 1 out of 3 tasks running".into(),
            rows: vec![
                row("1/3", TaskState::Running, "running"),
                row("2/3", TaskState::Preparing, "preparing"),
                Row { label: "3/3".into(), ..Default::default() },
            ],
            expected: 3,
            verify: None,
        };
        assert_eq!(
            f.render(120),
            vec![
                "overall progress: 1 out of 3 tasks running".to_string(),
                format!("1/3: running   {FULL}"),
                format!("2/3: preparing [{}>{}]", "=".repeat(33), " ".repeat(17)),
                "3/3:".to_string(),
            ]
        );
        // Like docker, no bars on a narrower terminal.
        assert_eq!(f.render(100)[1], "1/3: running");
        assert_eq!(f.render(100)[2], "2/3: preparing");
    }

    #[test]
    fn notes_follow_the_bar_and_ended_tasks_show_their_text() {
        let rows = [
            row("1/2", TaskState::Running, "running (previous version)"),
            row("2/2", TaskState::Pending, "pending: no suitable node (1 node: not enough memory)"),
            row("web1", TaskState::Failed, "failed: task exited with code 3"),
            Row { job: true, ..row("1/1", TaskState::Complete, "complete") },
        ];
        let lines: Vec<String> = rows.iter().map(|r| row_line(r, 120)).collect();
        assert_eq!(lines[0], format!("1/2: running   {FULL} (previous version)"));
        assert!(
            lines[1].starts_with("2/2: pending   [================>")
                && lines[1].ends_with("] no suitable node (1 node: not enough memory)"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "web1: failed: task exited with code 3");
        assert_eq!(lines[3], format!("1/1: complete  {FULL}"), "a job's last stage");
        assert_eq!(row_line(&rows[1], 80), "2/2: pending   no suitable node (1 node: not enough memory)");
    }

    #[test]
    fn lines_never_wrap() {
        let f = Frame {
            overall: "overall progress: 0 out of 1 tasks running".into(),
            rows: vec![row("1/1", TaskState::Rejected, &format!("rejected: {}", "x".repeat(200)))],
            expected: 1,
            verify: None,
        };
        let lines = f.render(40);
        assert!(lines.iter().all(|l| l.chars().count() <= 39), "{lines:?}");
        assert!(lines[1].starts_with("1/1: rejected: xxx") && lines[1].ends_with('…'), "{lines:?}");
    }

    #[test]
    fn more_than_twenty_tasks_show_only_the_overall_and_verify_lines() {
        let rows: Vec<Row> =
            (1..=21).map(|i| row(&format!("{i}/21"), TaskState::Running, "running")).collect();
        let f = Frame {
            overall: "overall progress: 21 out of 21 tasks running".into(),
            rows: rows.clone(),
            expected: 21,
            verify: Some("Service converged".into()),
        };
        assert_eq!(
            f.render(120),
            vec!["overall progress: 21 out of 21 tasks running", "verify: Service converged"]
        );
        let f = Frame { rows: rows[..20].to_vec(), expected: 20, ..f };
        assert_eq!(f.render(120).len(), 22);
    }

    #[test]
    fn the_block_is_redrawn_in_place() {
        let mut p = Printer::new(Mode::Block, Vec::new(), Some(120));
        let pending = Row { label: "2/2".into(), ..Default::default() };
        p.show(&assessment(
            "overall progress: 0 out of 2 tasks running",
            vec![row("1/2", TaskState::Pending, "pending"), pending.clone()],
            2,
        ));
        let first = String::from_utf8(p.into_inner()).expect("utf-8");
        let bar3 = format!("[{}>{}]", "=".repeat(16), " ".repeat(34));
        assert_eq!(
            first,
            format!(
                "\x1b[2Koverall progress: 0 out of 2 tasks running\n\x1b[2K1/2: pending   {bar3}\n\x1b[2K2/2:\n"
            )
        );

        let mut p = Printer::new(Mode::Block, Vec::new(), Some(120));
        let a = assessment(
            "overall progress: 1 out of 2 tasks running",
            vec![row("1/2", TaskState::Running, "running"), pending],
            2,
        );
        p.show(&a);
        let before = p.out.len();
        p.show(&a);
        assert_eq!(p.out.len(), before, "nothing changed, nothing drawn");
        p.out.clear();
        // Slot 2 starts: back up three lines, step over the two that did not change.
        p.show(&assessment(
            "overall progress: 1 out of 2 tasks running",
            vec![row("1/2", TaskState::Running, "running"), row("2/2", TaskState::Starting, "starting")],
            2,
        ));
        let bar8 = format!("[{}>{}]", "=".repeat(44), " ".repeat(6));
        assert_eq!(String::from_utf8_lossy(&p.out), format!("\r\x1b[3A\n\n\x1b[2K2/2: starting  {bar8}\n"));
        p.out.clear();
        p.verify("Waiting 5 seconds to verify that tasks are stable...");
        assert_eq!(
            String::from_utf8_lossy(&p.out),
            "\r\x1b[3A\n\n\n\x1b[2Kverify: Waiting 5 seconds to verify that tasks are stable...\n"
        );
        p.out.clear();
        p.countdown("Waiting 4 seconds to verify that tasks are stable...");
        assert!(String::from_utf8_lossy(&p.out)
            .ends_with("\x1b[2Kverify: Waiting 4 seconds to verify that tasks are stable...\n"));
        p.out.clear();
        // A task went away: the verify line is erased.
        p.unverified();
        assert_eq!(String::from_utf8_lossy(&p.out), "\r\x1b[4A\n\n\n\x1b[J");
    }

    #[test]
    fn plain_lines_are_printed_once_when_they_change() {
        let mut p = Printer::new(Mode::Lines, Vec::new(), None);
        let a = assessment(
            "overall progress: 0 out of 2 tasks running",
            vec![
                row("1/2", TaskState::Pending, "pending"),
                Row { label: "2/2".into(), ..Default::default() },
            ],
            2,
        );
        p.show(&a);
        p.show(&a);
        p.show(&assessment(
            "overall progress: 1 out of 2 tasks running",
            vec![row("1/2", TaskState::Running, "running"), row("2/2", TaskState::Running, "running")],
            2,
        ));
        p.countdown("Waiting 4 seconds to verify that tasks are stable...");
        p.unverified();
        p.verify("Service converged");
        assert_eq!(
            String::from_utf8_lossy(&p.into_inner()),
            "overall progress: 0 out of 2 tasks running\n1/2: pending\n\
             overall progress: 1 out of 2 tasks running\n1/2: running\n2/2: running\n\
             verify: Service converged\n"
        );
        let mut q = Printer::new(Mode::Quiet, Vec::new(), Some(120));
        q.show(&a);
        q.verify("Service converged");
        assert!(q.into_inner().is_empty(), "-q prints nothing");
    }
}
