//! Check-run request bodies, field for field as GitHub's REST API description
//! has them, and the builders that turn an execution's [`Outcome`] into them.
//!
//! GitHub answers 422 to a body that breaks one of its rules (a summary over
//! 65535 characters, a 51st annotation, a 21-character action label), and a
//! check that cannot be completed stays yellow forever. So every limit is
//! enforced here, in the builders, before a request is made
//! ([`CreateCheckRun::enforce_limits`], [`UpdateCheckRun::enforce_limits`]),
//! and [`rule_violations`] checks a JSON body against the same rules for the
//! fake GitHub of the tests.
//!
//! The one check run per notebook goes `queued` ([`queued`]) -> `in_progress`
//! ([`in_progress`]) -> `completed` ([`completed`]); an infrastructure error is
//! a `failure` whose title says so, never a silent green.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::notebook::strip_ansi;
use crate::domain::outcome::{Outcome, Status};
use crate::util::time::{format_rfc3339, parse_rfc3339};

/// Prefix of every check run nbci creates; the rest is the notebook's path.
pub const CHECK_NAME_PREFIX: &str = "nbci / ";
/// The identifier of the "Re-run" button, sent back in `check_run.requested_action`.
pub const RERUN_ACTION: &str = "rerun";

/// `output.summary` and `output.text`: "Maximum length: 65535 characters".
/// Enforced in bytes, which is stricter for any text and exact for ASCII.
pub const MAX_OUTPUT_TEXT: usize = 65_535;
/// "The Checks API limits the number of annotations to a maximum of 50 per API request."
pub const MAX_ANNOTATIONS: usize = 50;
/// `annotations[].title`: "The maximum size is 255 characters."
pub const MAX_ANNOTATION_TITLE_CHARS: usize = 255;
/// `annotations[].message` and `raw_details`: "The maximum size is 64 KB."
/// 64 000 bytes satisfies both readings of "KB".
pub const MAX_ANNOTATION_BLOB_BYTES: usize = 64_000;
/// `actions`: "A maximum of three actions is accepted."
pub const MAX_ACTIONS: usize = 3;
/// `actions[].label`: "The maximum size is 20 characters."
pub const MAX_ACTION_LABEL_CHARS: usize = 20;
/// `actions[].description`: "The maximum size is 40 characters."
pub const MAX_ACTION_DESCRIPTION_CHARS: usize = 40;
/// `actions[].identifier`: "The maximum size is 20 characters."
pub const MAX_ACTION_IDENTIFIER_CHARS: usize = 20;
/// `output.title` has no documented limit; GitHub shows it on one line, and
/// nbci keeps it to the annotation title's 255 characters.
pub const MAX_OUTPUT_TITLE_CHARS: usize = 255;

/// Longest parameter value shown in the summary's table, so that one huge
/// parameter cannot push the rest of the summary past the limit.
const MAX_PARAMETER_CHARS: usize = 200;

/// `status` of a check run. GitHub's enum also has `waiting`, `requested` and
/// `pending`, which only GitHub Actions may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Created, not started: the notebook waits for an executor.
    Queued,
    /// The notebook is running.
    InProgress,
    /// Finished; a conclusion is required.
    Completed,
}

/// `conclusion` of a completed check run. `stale` is left out: only GitHub sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    /// Someone must act (shows the `details_url` as the action).
    ActionRequired,
    /// The run was cancelled.
    Cancelled,
    /// The notebook failed, or the infrastructure did (the title says which).
    Failure,
    /// Neither pass nor fail.
    Neutral,
    /// Every cell ran without an unexpected error.
    Success,
    /// Not run.
    Skipped,
    /// The notebook outlived its timeout.
    TimedOut,
}

/// `annotation_level` of an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnotationLevel {
    /// Informational.
    Notice,
    /// Worth a look.
    Warning,
    /// What made the check fail.
    Failure,
}

/// One annotation: a message shown on lines of a file in the pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    /// Path of the file in the repository, such as `notebooks/train.ipynb`.
    pub path: String,
    /// First line (1-based).
    pub start_line: u32,
    /// Last line (1-based, at least `start_line`).
    pub end_line: u32,
    /// First column; only allowed when `start_line == end_line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_column: Option<u32>,
    /// Last column; only allowed when `start_line == end_line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_column: Option<u32>,
    /// How serious it is.
    pub annotation_level: AnnotationLevel,
    /// The message; required and non-empty (at most 64 KB).
    pub message: String,
    /// A title above the message (at most 255 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Details shown on demand, such as a traceback (at most 64 KB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_details: Option<String>,
}

impl Annotation {
    /// Cuts every field to GitHub's limits and repairs what it would refuse
    /// (an empty message, lines below 1, columns across lines).
    pub fn enforce_limits(&mut self) {
        self.start_line = self.start_line.max(1);
        self.end_line = self.end_line.max(self.start_line);
        if self.start_line != self.end_line {
            self.start_column = None;
            self.end_column = None;
        }
        if let Some(title) = &mut self.title {
            cut_chars(title, MAX_ANNOTATION_TITLE_CHARS);
        }
        if self.message.trim().is_empty() {
            self.message = self
                .title
                .clone()
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| "(no message)".into());
        }
        cut_bytes_with_note(&mut self.message, MAX_ANNOTATION_BLOB_BYTES, CUT_NOTE);
        if let Some(details) = &mut self.raw_details {
            cut_bytes_with_note(details, MAX_ANNOTATION_BLOB_BYTES, CUT_NOTE);
        }
    }
}

/// A button on the check run; a click sends `check_run.requested_action`
/// with its `identifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAction {
    /// Text of the button (at most 20 characters).
    pub label: String,
    /// What it does (at most 40 characters).
    pub description: String,
    /// What comes back in the webhook (at most 20 characters).
    pub identifier: String,
}

impl CheckAction {
    /// The "Re-run" button: runs this one notebook again.
    pub fn rerun() -> Self {
        Self {
            label: "Re-run".into(),
            description: "Run this notebook again".into(),
            identifier: RERUN_ACTION.into(),
        }
    }

    /// Cuts every field to GitHub's limits.
    pub fn enforce_limits(&mut self) {
        cut_chars(&mut self.label, MAX_ACTION_LABEL_CHARS);
        cut_chars(&mut self.description, MAX_ACTION_DESCRIPTION_CHARS);
        cut_chars(&mut self.identifier, MAX_ACTION_IDENTIFIER_CHARS);
    }
}

/// `output`: what the check run page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutput {
    /// One line, such as "Failed at cell 5 of 12: AssertionError". Required.
    pub title: String,
    /// Markdown summary (at most 65535 characters). Required.
    pub summary: String,
    /// Markdown details (at most 65535 characters): the traceback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// At most 50 per request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
}

impl CheckOutput {
    /// Cuts every field to GitHub's limits (keeping the first 50 annotations).
    pub fn enforce_limits(&mut self) {
        if self.title.trim().is_empty() {
            self.title = "nbci".into();
        }
        cut_chars(&mut self.title, MAX_OUTPUT_TITLE_CHARS);
        cut_bytes_with_note(&mut self.summary, MAX_OUTPUT_TEXT, CUT_NOTE);
        if let Some(text) = &mut self.text {
            cut_bytes_with_note(text, MAX_OUTPUT_TEXT, CUT_NOTE);
        }
        self.annotations.truncate(MAX_ANNOTATIONS);
        self.annotations
            .iter_mut()
            .for_each(Annotation::enforce_limits);
    }
}

/// Body of `POST /repos/{owner}/{repo}/check-runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCheckRun {
    /// `nbci / <notebook path>`. Required.
    pub name: String,
    /// The commit the check belongs to. Required.
    pub head_sha: String,
    /// Where "Details" links: the executed notebook rendered as HTML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    /// nbci's run key, so a webhook about this check finds the run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Current status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckStatus>,
    /// When the run began (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Required with `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<Conclusion>,
    /// When the run ended (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// What the check page shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<CheckOutput>,
    /// Buttons (at most 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<CheckAction>,
}

impl CreateCheckRun {
    /// Cuts every field to GitHub's limits.
    pub fn enforce_limits(&mut self) {
        if let Some(output) = &mut self.output {
            output.enforce_limits();
        }
        enforce_action_limits(&mut self.actions);
    }
}

/// Body of `PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}`: every
/// field optional, only the ones set are changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateCheckRun {
    /// A new name (nbci keeps the one it created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where "Details" links: the executed notebook rendered as HTML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    /// nbci's run key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// When the run began (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// New status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckStatus>,
    /// Required with `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<Conclusion>,
    /// When the run ended (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// What the check page shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<CheckOutput>,
    /// Buttons (at most 3); replaces the previous set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<CheckAction>,
}

impl UpdateCheckRun {
    /// Cuts every field to GitHub's limits.
    pub fn enforce_limits(&mut self) {
        if let Some(output) = &mut self.output {
            output.enforce_limits();
        }
        enforce_action_limits(&mut self.actions);
    }
}

fn enforce_action_limits(actions: &mut Vec<CheckAction>) {
    actions.truncate(MAX_ACTIONS);
    actions.iter_mut().for_each(CheckAction::enforce_limits);
}

/// The check run's name for a notebook: `nbci / <path>`.
pub fn check_run_name(notebook_path: &str) -> String {
    format!("{CHECK_NAME_PREFIX}{notebook_path}")
}

/// The notebook path of a check run nbci named, or `None` for another app's check.
pub fn notebook_path_of(check_run_name: &str) -> Option<&str> {
    check_run_name
        .strip_prefix(CHECK_NAME_PREFIX)
        .filter(|path| !path.is_empty())
}

/// The body that creates a notebook's check run, `queued`, before its job is submitted.
pub fn queued(name: &str, head_sha: &str, external_id: &str) -> CreateCheckRun {
    let mut body = CreateCheckRun {
        name: name.to_owned(),
        head_sha: head_sha.to_owned(),
        details_url: None,
        external_id: Some(external_id.to_owned()).filter(|id| !id.is_empty()),
        status: Some(CheckStatus::Queued),
        started_at: None,
        conclusion: None,
        completed_at: None,
        output: Some(CheckOutput {
            title: "Queued".into(),
            summary: "Waiting for an executor to run the notebook.".into(),
            text: None,
            annotations: Vec::new(),
        }),
        actions: Vec::new(),
    };
    body.enforce_limits();
    body
}

/// The update when the notebook's job starts: `in_progress`, linking to where
/// the executed notebook will be. An empty `details_url` is left out (GitHub
/// refuses one that is not a URL).
pub fn in_progress(details_url: Option<&str>) -> UpdateCheckRun {
    let mut body = UpdateCheckRun {
        details_url: non_empty(details_url),
        started_at: Some(format_rfc3339(SystemTime::now())),
        status: Some(CheckStatus::InProgress),
        output: Some(CheckOutput {
            title: "Running".into(),
            summary: "The notebook is running.".into(),
            text: None,
            annotations: Vec::new(),
        }),
        ..UpdateCheckRun::default()
    };
    body.enforce_limits();
    body
}

/// The update that completes a notebook's check run from its [`Outcome`].
///
/// `raw_notebook_json` is the notebook as committed (the text, not the parsed
/// document): the failing cell is annotated at the line where it starts in
/// that text, which is what GitHub shows in "Files changed".
pub fn completed(
    outcome: &Outcome,
    raw_notebook_json: &str,
    notebook_path: &str,
    details_url: Option<&str>,
) -> UpdateCheckRun {
    let details_url = non_empty(details_url);
    let conclusion = match outcome.status {
        Status::Succeeded => Conclusion::Success,
        Status::Failed => Conclusion::Failure,
        Status::TimedOut => Conclusion::TimedOut,
        // Not the notebook's verdict, but never a silent green.
        Status::Error => Conclusion::Failure,
    };
    let started = parse_rfc3339(&outcome.started_at);
    let completed = started
        .and_then(|start| {
            let duration = Duration::try_from_secs_f64(outcome.duration_s).ok()?;
            start.checked_add(duration)
        })
        .unwrap_or_else(SystemTime::now);
    let traceback = outcome
        .failed_cell
        .as_ref()
        .filter(|cell| !cell.traceback.is_empty())
        .map(|cell| strip_ansi(&cell.traceback.join("\n")));

    let mut body = UpdateCheckRun {
        details_url: details_url.clone(),
        started_at: started.map(format_rfc3339),
        status: Some(CheckStatus::Completed),
        conclusion: Some(conclusion),
        completed_at: Some(format_rfc3339(completed)),
        output: Some(CheckOutput {
            title: outcome.headline(),
            summary: summary(outcome, notebook_path, details_url.as_deref()),
            text: traceback.as_deref().map(traceback_text),
            annotations: failure_annotation(outcome, raw_notebook_json, notebook_path, traceback)
                .into_iter()
                .collect(),
        }),
        actions: vec![CheckAction::rerun()],
        ..UpdateCheckRun::default()
    };
    body.enforce_limits();
    body
}

fn non_empty(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The Markdown summary: what ran, where, how long, with what, and the link.
fn summary(outcome: &Outcome, notebook_path: &str, details_url: Option<&str>) -> String {
    let mut out = String::new();
    if outcome.status == Status::Error {
        out.push_str(
            "**Infrastructure error**: the run did not complete, so this is not the \
             notebook's verdict. Re-run it; if it persists, check the executor.\n\n",
        );
    }
    out.push_str("| | |\n|---|---|\n");
    let row = |out: &mut String, name: &str, value: &str| {
        out.push_str(&format!("| {name} | {} |\n", table_cell(value)));
    };
    row(&mut out, "Status", &format!("`{}`", outcome.status));
    row(&mut out, "Duration", &format_duration(outcome.duration_s));
    row(&mut out, "Notebook", &code_span(notebook_path));
    if let Some(cell) = &outcome.failed_cell {
        if let Some(index) = cell.index {
            let mut at = format!("{} of {}", index + 1, outcome.total_cells);
            if let Some(count) = cell.execution_count {
                at.push_str(&format!(" (execution count {count})"));
            }
            row(&mut out, "Cell", &at);
        }
        if !cell.ename.is_empty() || !cell.evalue.is_empty() {
            let error = first_line(
                &format!("{}: {}", cell.ename, cell.evalue),
                MAX_PARAMETER_CHARS,
            );
            row(&mut out, "Error", &code_span(&error));
        }
    }
    if let Some(message) = outcome.message.as_deref().filter(|m| !m.is_empty()) {
        row(
            &mut out,
            "Message",
            &first_line(message, MAX_PARAMETER_CHARS),
        );
    }
    row(&mut out, "Image", &code_span(&outcome.runtime.image));
    row(&mut out, "Kernel", &code_span(&outcome.runtime.kernel));
    match details_url {
        Some(url) => row(
            &mut out,
            "Executed notebook",
            &format!("[open]({})", url.replace(' ', "%20").replace(')', "%29")),
        ),
        None if !outcome.output.is_empty() => {
            row(&mut out, "Executed notebook", &code_span(&outcome.output))
        }
        None => {}
    }
    out.push_str("\n**Parameters**");
    if outcome.parameters.is_empty() {
        out.push_str(": none\n");
    } else {
        out.push_str("\n\n| name | value |\n|---|---|\n");
        for (name, value) in &outcome.parameters {
            let value = first_line(&value.to_string(), MAX_PARAMETER_CHARS);
            out.push_str(&format!(
                "| {} | {} |\n",
                table_cell(&code_span(name)),
                table_cell(&code_span(&value))
            ));
        }
    }
    out
}

/// The traceback as a fenced block, cut in the middle if it is over the limit
/// (the top names the cell, the bottom the exception: both are kept).
fn traceback_text(traceback: &str) -> String {
    // A run of backticks longer than any sane fence (a notebook can print
    // thousands) is shown with look-alike graves, so the fence stays short.
    let neutralized;
    let traceback = if longest_backtick_run(traceback) >= MAX_FENCE {
        neutralized = traceback.replace('`', "\u{2cb}");
        neutralized.as_str()
    } else {
        traceback
    };
    let fence = fence_for(traceback);
    let open = format!("{fence}text\n");
    let close = format!("\n{fence}\n");
    let note = "\n_The traceback was cut to fit GitHub's 65535-character limit; \
                the executed notebook has all of it._\n";
    let overhead = open.len() + close.len();
    if overhead + traceback.len() <= MAX_OUTPUT_TEXT {
        return format!("{open}{traceback}{close}");
    }
    let marker = "\n[... cut ...]\n";
    let budget = MAX_OUTPUT_TEXT.saturating_sub(overhead + note.len() + marker.len());
    let head_end = floor_char_boundary(traceback, budget / 4);
    let tail_start = ceil_char_boundary(
        traceback,
        traceback
            .len()
            .saturating_sub(budget.saturating_sub(head_end)),
    );
    format!(
        "{open}{}{marker}{}{close}{note}",
        &traceback[..head_end],
        &traceback[tail_start..]
    )
}

/// The annotation on the .ipynb at the line where the failing cell starts.
fn failure_annotation(
    outcome: &Outcome,
    raw_notebook_json: &str,
    notebook_path: &str,
    traceback: Option<String>,
) -> Option<Annotation> {
    if outcome.status == Status::Succeeded {
        return None;
    }
    let cell = outcome.failed_cell.as_ref()?;
    let line = *cell_start_lines(raw_notebook_json).get(cell.index?)?;
    let message = [cell.evalue.as_str(), cell.ename.as_str()]
        .into_iter()
        .find(|text| !text.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| outcome.headline());
    Some(Annotation {
        path: notebook_path.to_owned(),
        start_line: line,
        end_line: line,
        start_column: None,
        end_column: None,
        annotation_level: AnnotationLevel::Failure,
        message,
        title: Some(cell.ename.clone()).filter(|t| !t.trim().is_empty()),
        raw_details: traceback,
    })
}

/// The 1-based line on which each element of the top-level `cells` array
/// starts in a notebook's JSON text.
///
/// The text is scanned as JSON (strings and escapes respected, so a cell whose
/// source mentions `"cell_type"` or contains brackets changes nothing), without
/// recursion (so deep nesting cannot overflow the stack). Empty when the text
/// is not a JSON object or has no `cells` array; when `cells` appears more than
/// once the last one counts, as in Python's `json`, which Jupyter uses.
pub fn cell_start_lines(raw_json: &str) -> Vec<u32> {
    Scanner {
        bytes: raw_json.as_bytes(),
        text: raw_json,
        pos: 0,
        line: 1,
    }
    .top_level_cells()
    .unwrap_or_default()
}

/// A forward-only JSON scanner that counts lines; `None` means malformed.
struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    line: u32,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(byte) = self.peek() {
            match byte {
                b' ' | b'\t' | b'\r' => {}
                b'\n' => self.line += 1,
                _ => return,
            }
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Skips a string; returns the span of its contents (without quotes).
    fn string(&mut self) -> Option<(usize, usize)> {
        self.expect(b'"')?;
        let start = self.pos;
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some((start, self.pos - 1));
                }
                b'\\' => self.pos += 2,
                // Raw control characters (including newlines) are not JSON.
                0x00..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
    }

    /// Skips one value of any kind.
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => self.container(),
            _ => {
                let start = self.pos;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.')
                ) {
                    self.pos += 1;
                }
                (self.pos > start).then_some(())
            }
        }
    }

    /// Skips an object or array with an explicit stack of closers.
    fn container(&mut self) -> Option<()> {
        let mut closers = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' => closers.push(b'}'),
                b'[' => closers.push(b']'),
                byte @ (b'}' | b']') => {
                    if closers.pop()? != byte {
                        return None;
                    }
                    if closers.is_empty() {
                        self.pos += 1;
                        return Some(());
                    }
                }
                b'\n' => self.line += 1,
                _ => {}
            }
            self.pos += 1;
        }
    }

    fn key(&self, (start, end): (usize, usize)) -> Option<String> {
        let raw = self.text.get(start..end)?;
        if raw.contains('\\') {
            serde_json::from_str(self.text.get(start - 1..end + 1)?).ok()
        } else {
            Some(raw.to_owned())
        }
    }

    fn top_level_cells(mut self) -> Option<Vec<u32>> {
        let mut cells = None;
        self.skip_whitespace();
        self.expect(b'{')?;
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.pos += 1;
        } else {
            loop {
                self.skip_whitespace();
                let key = self.string()?;
                let key = self.key(key)?;
                self.skip_whitespace();
                self.expect(b':')?;
                self.skip_whitespace();
                if key == "cells" && self.peek()? == b'[' {
                    cells = Some(self.array_element_lines()?);
                } else {
                    self.value()?;
                }
                self.skip_whitespace();
                match self.peek()? {
                    b',' => self.pos += 1,
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.skip_whitespace();
        (self.pos == self.bytes.len()).then_some(())?;
        cells
    }

    fn array_element_lines(&mut self) -> Option<Vec<u32>> {
        let mut lines = Vec::new();
        self.expect(b'[')?;
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(lines);
        }
        loop {
            self.skip_whitespace();
            lines.push(self.line);
            self.value()?;
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(lines);
                }
                _ => return None,
            }
        }
    }
}

/// Checks a check-run request body (as JSON) against the rules of GitHub's
/// REST API description: required fields, the status and conclusion enums,
/// and the 65535, 50, 255, 64 KB, 3, 20 and 40 limits. Unknown fields are
/// reported too, so a typo cannot pass. Empty when the body is valid.
///
/// This is the strict fake GitHub's judge in tests; the builders above must
/// never produce a body it complains about.
pub fn rule_violations(body: &Value, creating: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(object) = body.as_object() else {
        return vec!["the body is not a JSON object".into()];
    };
    const FIELDS: [&str; 10] = [
        "name",
        "head_sha",
        "details_url",
        "external_id",
        "status",
        "started_at",
        "conclusion",
        "completed_at",
        "output",
        "actions",
    ];
    for key in object.keys() {
        if !FIELDS.contains(&key.as_str()) || (!creating && key == "head_sha") {
            problems.push(format!("unknown field `{key}`"));
        }
    }
    let string_field = |problems: &mut Vec<String>, key: &str, required: bool| -> Option<String> {
        match object.get(key) {
            None if required => {
                problems.push(format!("`{key}` is required"));
                None
            }
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => {
                problems.push(format!("`{key}` must be a string"));
                None
            }
        }
    };
    if let Some(name) = string_field(&mut problems, "name", creating)
        && name.trim().is_empty()
    {
        problems.push("`name` is empty".into());
    }
    if creating {
        string_field(&mut problems, "head_sha", true);
    }
    string_field(&mut problems, "external_id", false);
    if let Some(url) = string_field(&mut problems, "details_url", false)
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        problems.push(format!("`details_url` is not an http(s) URL: {url:?}"));
    }
    for key in ["started_at", "completed_at"] {
        if let Some(time) = string_field(&mut problems, key, false)
            && parse_rfc3339(&time).is_none()
        {
            problems.push(format!("`{key}` is not an ISO 8601 timestamp: {time:?}"));
        }
    }
    let status = string_field(&mut problems, "status", false);
    if let Some(status) = &status
        && !["queued", "in_progress", "completed"].contains(&status.as_str())
    {
        problems.push(format!(
            "`status` {status:?} is not one of queued, in_progress, completed"
        ));
    }
    let conclusion = string_field(&mut problems, "conclusion", false);
    const CONCLUSIONS: [&str; 7] = [
        "action_required",
        "cancelled",
        "failure",
        "neutral",
        "success",
        "skipped",
        "timed_out",
    ];
    if let Some(conclusion) = &conclusion
        && !CONCLUSIONS.contains(&conclusion.as_str())
    {
        problems.push(format!(
            "`conclusion` {conclusion:?} is not one of {}",
            CONCLUSIONS.join(", ")
        ));
    }
    if conclusion.is_none()
        && (status.as_deref() == Some("completed") || object.contains_key("completed_at"))
    {
        problems.push(
            "`conclusion` is required when the status is completed or completed_at is set".into(),
        );
    }
    if let Some(output) = object.get("output") {
        output_violations(output, &mut problems);
    }
    if let Some(actions) = object.get("actions") {
        match actions.as_array() {
            None => problems.push("`actions` must be an array".into()),
            Some(actions) => {
                if actions.len() > MAX_ACTIONS {
                    problems.push(format!(
                        "{} actions, at most {MAX_ACTIONS} allowed",
                        actions.len()
                    ));
                }
                for (index, action) in actions.iter().enumerate() {
                    for (key, max) in [
                        ("label", MAX_ACTION_LABEL_CHARS),
                        ("description", MAX_ACTION_DESCRIPTION_CHARS),
                        ("identifier", MAX_ACTION_IDENTIFIER_CHARS),
                    ] {
                        match action.get(key).and_then(Value::as_str) {
                            None => problems.push(format!("`actions[{index}].{key}` is required")),
                            Some(text) if text.chars().count() > max => problems.push(format!(
                                "`actions[{index}].{key}` has {} characters, at most {max} allowed",
                                text.chars().count()
                            )),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
    }
    problems
}

fn output_violations(output: &Value, problems: &mut Vec<String>) {
    let Some(output) = output.as_object() else {
        problems.push("`output` must be an object".into());
        return;
    };
    for key in output.keys() {
        if !["title", "summary", "text", "annotations", "images"].contains(&key.as_str()) {
            problems.push(format!("unknown field `output.{key}`"));
        }
    }
    for (key, required) in [("title", true), ("summary", true), ("text", false)] {
        match output.get(key) {
            None if required => problems.push(format!("`output.{key}` is required")),
            None => {}
            Some(Value::String(text))
                if key != "title" && text.chars().count() > MAX_OUTPUT_TEXT =>
            {
                problems.push(format!(
                    "`output.{key}` has {} characters, at most {MAX_OUTPUT_TEXT} allowed",
                    text.chars().count()
                ));
            }
            Some(Value::String(_)) => {}
            Some(_) => problems.push(format!("`output.{key}` must be a string")),
        }
    }
    let Some(annotations) = output.get("annotations") else {
        return;
    };
    let Some(annotations) = annotations.as_array() else {
        problems.push("`output.annotations` must be an array".into());
        return;
    };
    if annotations.len() > MAX_ANNOTATIONS {
        problems.push(format!(
            "{} annotations, at most {MAX_ANNOTATIONS} allowed per request",
            annotations.len()
        ));
    }
    for (index, annotation) in annotations.iter().enumerate() {
        let at = format!("output.annotations[{index}]");
        let text = |key: &str| annotation.get(key).and_then(Value::as_str);
        let line = |key: &str| annotation.get(key).and_then(Value::as_u64);
        if text("path").is_none_or(|path| path.is_empty()) {
            problems.push(format!("`{at}.path` is required"));
        }
        match (line("start_line"), line("end_line")) {
            (Some(start), Some(end)) if start >= 1 && end >= start => {
                if start != end
                    && (annotation.get("start_column").is_some()
                        || annotation.get("end_column").is_some())
                {
                    problems.push(format!("`{at}` has columns across several lines"));
                }
            }
            _ => problems.push(format!(
                "`{at}.start_line`/`end_line` must be integers with 1 <= start <= end"
            )),
        }
        match text("annotation_level") {
            Some("notice" | "warning" | "failure") => {}
            other => problems.push(format!(
                "`{at}.annotation_level` {other:?} is not one of notice, warning, failure"
            )),
        }
        match text("message") {
            None => problems.push(format!("`{at}.message` is required")),
            Some(message) if message.len() > MAX_ANNOTATION_BLOB_BYTES => {
                problems.push(format!("`{at}.message` is over 64 KB"))
            }
            Some(_) => {}
        }
        if text("title").is_some_and(|title| title.chars().count() > MAX_ANNOTATION_TITLE_CHARS) {
            problems.push(format!(
                "`{at}.title` is over {MAX_ANNOTATION_TITLE_CHARS} characters"
            ));
        }
        if text("raw_details").is_some_and(|details| details.len() > MAX_ANNOTATION_BLOB_BYTES) {
            problems.push(format!("`{at}.raw_details` is over 64 KB"));
        }
    }
}

const CUT_NOTE: &str = "\n\n_(cut to fit GitHub's size limit)_";

/// Cuts `text` to at most `max` characters.
fn cut_chars(text: &mut String, max: usize) {
    if let Some((index, _)) = text.char_indices().nth(max) {
        text.truncate(index);
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, ending with
/// `note` so that the reader knows something is missing.
fn cut_bytes_with_note(text: &mut String, max: usize, note: &str) {
    if text.len() <= max {
        return;
    }
    let keep = floor_char_boundary(text, max.saturating_sub(note.len()));
    text.truncate(keep);
    if note.len() <= max {
        text.push_str(note);
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while index < text.len() && !text.is_char_boundary(index) {
        index += 1;
    }
    index.min(text.len())
}

/// The first line of `text`, at most `max` characters, with `…` if cut.
fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let mut out: String = line.chars().take(max).collect();
    if out.len() < text.trim_end().len() {
        out.push('…');
    }
    out
}

/// Markdown inline code that survives backticks in `text`.
fn code_span(text: &str) -> String {
    if text.is_empty() {
        return "(none)".into();
    }
    let fence = "`".repeat(longest_backtick_run(text) + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// Backtick runs this long or longer are not fenced but neutralized.
const MAX_FENCE: usize = 16;

/// A code fence longer than any backtick run in `text` (at least three).
fn fence_for(text: &str) -> String {
    "`".repeat((longest_backtick_run(text) + 1).max(3))
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// A table cell: no line breaks, `|` escaped.
fn table_cell(text: &str) -> String {
    text.replace(['\r', '\n'], " ").replace('|', "\\|")
}

fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "unknown".into();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1} s");
    }
    let total = seconds.round() as u64;
    let (hours, minutes, secs) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours} h {minutes} min {secs} s")
    } else {
        format!("{minutes} min {secs} s")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;
    use crate::domain::outcome::{FailedCell, Runtime};

    const NOTEBOOK: &str = r##"{
 "cells": [
  {
   "cell_type": "markdown",
   "metadata": {},
   "source": ["# Title with \"cell_type\" and [brackets] {braces}\n", "\\\"escaped\\\""]
  },
  {"cell_type": "code", "execution_count": 1, "metadata": {}, "outputs": [], "source": ["x = 1"]},
  {
   "cell_type": "code",
   "execution_count": 2,
   "metadata": {"tags": ["a]b"]},
   "outputs": [],
   "source": [
    "assert x == 2, \"}]\"\n"
   ]
  }
 ],
 "metadata": {"kernelspec": {"name": "python3"}},
 "nbformat": 4,
 "nbformat_minor": 5
}
"##;

    fn outcome(status: Status) -> Outcome {
        let mut parameters = Map::new();
        parameters.insert("rows".into(), json!(10));
        parameters.insert("name|pipe".into(), json!("a`b"));
        Outcome {
            notebook: "notebooks/demo.ipynb".into(),
            status,
            started_at: "2024-05-01T10:00:00Z".into(),
            duration_s: 12.34,
            output: "gs://bucket/ci/o/r/sha/notebooks/demo.ipynb/output.ipynb".into(),
            failed_cell: (status != Status::Succeeded).then(|| FailedCell {
                index: Some(2),
                execution_count: Some(2),
                ename: "AssertionError".into(),
                evalue: "x is not 2".into(),
                traceback: vec![
                    "\u{1b}[0;31m---------------------------------------------------------------------------\u{1b}[0m".into(),
                    "\u{1b}[0;31mAssertionError\u{1b}[0m  Traceback (most recent call last)".into(),
                    "AssertionError: x is not 2".into(),
                ],
            }),
            parameters,
            runtime: Runtime { image: "gcr.io/deeplearning-platform-release/base-cpu".into(), kernel: "python3".into(), versions: Map::new() },
            total_cells: 3,
            message: None,
        }
    }

    fn assert_valid(body: &impl Serialize, creating: bool) -> Value {
        let value = serde_json::to_value(body).expect("serializes");
        let problems = rule_violations(&value, creating);
        assert!(problems.is_empty(), "{problems:#?}\n{value:#}");
        value
    }

    #[test]
    fn cell_start_lines_scans_json_not_text() {
        assert_eq!(cell_start_lines(NOTEBOOK), vec![3, 8, 9]);
    }

    #[test]
    fn cell_start_lines_on_one_line_and_crlf() {
        let compact: Value = serde_json::from_str(NOTEBOOK).expect("valid");
        assert_eq!(cell_start_lines(&compact.to_string()), vec![1, 1, 1]);
        assert_eq!(
            cell_start_lines(&NOTEBOOK.replace('\n', "\r\n")),
            vec![3, 8, 9]
        );
    }

    #[test]
    fn cell_start_lines_ignores_nested_and_decoy_cells_keys() {
        let text = "{\"metadata\": {\"cells\": [1, 2, 3]},\n \"note\": \"\\\"cells\\\": [\",\n \"cells\": [\n\n  {}\n ]}";
        assert_eq!(cell_start_lines(text), vec![5]);
        // An escaped key is still `cells`.
        assert_eq!(
            cell_start_lines("{\"\\u0063ells\": [\n{}, {}]}"),
            vec![2, 2]
        );
        // The last `cells` wins, as in Python's json.
        assert_eq!(
            cell_start_lines("{\"cells\": [{}],\n\"cells\": [\n{}]}"),
            vec![3]
        );
        assert_eq!(cell_start_lines("{\"cells\": []}"), Vec::<u32>::new());
    }

    #[test]
    fn cell_start_lines_is_empty_for_malformed_text() {
        for text in [
            "",
            "[]",
            "{",
            "{\"cells\": [{}",
            "{\"cells\": [{}]",
            "{\"cells\": [{]}]}",
            "{\"cells\": [\"unterminated]}",
            "{\"cells\": [{}]} trailing",
            "{\"cells\" [{}]}",
            "{\"cells\": [\"raw\nnewline\"]}",
            "{\"a\": }",
        ] {
            assert_eq!(cell_start_lines(text), Vec::<u32>::new(), "{text:?}");
        }
    }

    #[test]
    fn cell_start_lines_survives_deep_nesting() {
        let deep = format!(
            "{{\"x\": {}{}, \"cells\": [\n{{}}]}}",
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        assert_eq!(cell_start_lines(&deep), vec![2]);
    }

    #[test]
    fn queued_body_follows_the_rules() {
        let body = queued(&check_run_name("notebooks/demo.ipynb"), "abc123", "run-key");
        let value = assert_valid(&body, true);
        assert_eq!(value["name"], "nbci / notebooks/demo.ipynb");
        assert_eq!(value["status"], "queued");
        assert_eq!(value["external_id"], "run-key");
        assert!(value.get("conclusion").is_none() && value.get("details_url").is_none());
    }

    #[test]
    fn in_progress_body_links_the_details() {
        let value = assert_valid(&in_progress(Some("https://nbci.example/runs/1")), false);
        assert_eq!(value["status"], "in_progress");
        assert_eq!(value["details_url"], "https://nbci.example/runs/1");
        assert!(value.get("started_at").is_some());
        let value = assert_valid(&in_progress(Some("  ")), false);
        assert!(value.get("details_url").is_none());
    }

    #[test]
    fn completed_failure_is_annotated_at_the_failing_cell() {
        let body = completed(
            &outcome(Status::Failed),
            NOTEBOOK,
            "notebooks/demo.ipynb",
            Some("https://nbci.example/r"),
        );
        let value = assert_valid(&body, false);
        assert_eq!(value["conclusion"], "failure");
        assert_eq!(value["started_at"], "2024-05-01T10:00:00Z");
        assert_eq!(value["completed_at"], "2024-05-01T10:00:12Z");
        let output = &value["output"];
        assert_eq!(output["title"], "Failed at cell 3 of 3: AssertionError");
        let annotation = &output["annotations"][0];
        assert_eq!(annotation["path"], "notebooks/demo.ipynb");
        assert_eq!(
            (
                annotation["start_line"].as_u64(),
                annotation["end_line"].as_u64()
            ),
            (Some(9), Some(9))
        );
        assert_eq!(annotation["annotation_level"], "failure");
        assert_eq!(annotation["title"], "AssertionError");
        assert_eq!(annotation["message"], "x is not 2");
        let text = output["text"].as_str().expect("text");
        assert!(
            text.contains("AssertionError: x is not 2") && !text.contains('\u{1b}'),
            "{text}"
        );
        let summary = output["summary"].as_str().expect("summary");
        for needle in [
            "`failed`",
            "12.3 s",
            "3 of 3",
            "base-cpu",
            "python3",
            "[open](https://nbci.example/r)",
            "`rows`",
            "name\\|pipe",
            "``\"a`b\"``",
        ] {
            assert!(
                summary.contains(needle),
                "{needle:?} missing from\n{summary}"
            );
        }
        assert_eq!(
            value["actions"],
            json!([{"label": "Re-run", "description": "Run this notebook again", "identifier": "rerun"}])
        );
    }

    #[test]
    fn completed_success_and_timeout_conclusions() {
        let value = assert_valid(
            &completed(&outcome(Status::Succeeded), NOTEBOOK, "n.ipynb", None),
            false,
        );
        assert_eq!(value["conclusion"], "success");
        assert!(
            value["output"].get("annotations").is_none() && value["output"].get("text").is_none()
        );
        assert!(
            value["output"]["summary"]
                .as_str()
                .expect("summary")
                .contains("gs://bucket")
        );
        let value = assert_valid(
            &completed(&outcome(Status::TimedOut), NOTEBOOK, "n.ipynb", None),
            false,
        );
        assert_eq!(value["conclusion"], "timed_out");
        assert_eq!(value["output"]["title"], "Timed out at cell 3 of 3");
    }

    #[test]
    fn infrastructure_error_is_a_failure_that_says_so() {
        let mut error = outcome(Status::Error);
        error.failed_cell = None;
        error.message = Some("the kernel died".into());
        let value = assert_valid(&completed(&error, NOTEBOOK, "n.ipynb", None), false);
        assert_eq!(value["conclusion"], "failure");
        let title = value["output"]["title"].as_str().expect("title");
        assert!(title.starts_with("Infrastructure error"), "{title}");
        assert!(
            value["output"]["summary"]
                .as_str()
                .expect("summary")
                .contains("Infrastructure error")
        );
    }

    #[test]
    fn annotation_message_is_never_empty() {
        let mut failed = outcome(Status::Failed);
        if let Some(cell) = &mut failed.failed_cell {
            cell.evalue.clear();
        }
        let value = assert_valid(&completed(&failed, NOTEBOOK, "n.ipynb", None), false);
        assert_eq!(
            value["output"]["annotations"][0]["message"],
            "AssertionError"
        );
    }

    #[test]
    fn no_annotation_when_the_cell_cannot_be_located() {
        let mut failed = outcome(Status::Failed);
        if let Some(cell) = &mut failed.failed_cell {
            cell.index = Some(7);
        }
        let value = assert_valid(&completed(&failed, NOTEBOOK, "n.ipynb", None), false);
        assert!(value["output"].get("annotations").is_none());
        let value = assert_valid(
            &completed(&outcome(Status::Failed), "not json", "n.ipynb", None),
            false,
        );
        assert!(value["output"].get("annotations").is_none());
    }

    #[test]
    fn huge_traceback_is_cut_on_a_char_boundary_with_a_note() {
        let mut failed = outcome(Status::Failed);
        if let Some(cell) = &mut failed.failed_cell {
            // Multi-byte characters and backticks, far over the limit.
            cell.traceback = vec![
                "Cell In[3], line 1".into(),
                "é```€".repeat(40_000),
                "AssertionError: the end".into(),
            ];
        }
        let body = completed(&failed, NOTEBOOK, "n.ipynb", None);
        let value = assert_valid(&body, false);
        let text = value["output"]["text"].as_str().expect("text");
        assert!(text.len() <= MAX_OUTPUT_TEXT, "{}", text.len());
        assert!(text.contains("Cell In[3]") && text.contains("AssertionError: the end"));
        assert!(text.contains("65535-character limit"));
        assert!(
            text.starts_with("````text\n"),
            "fence longer than the backtick runs"
        );
        let details = value["output"]["annotations"][0]["raw_details"]
            .as_str()
            .expect("details");
        assert!(details.len() <= MAX_ANNOTATION_BLOB_BYTES && details.ends_with(CUT_NOTE));
    }

    #[test]
    fn enforce_limits_cuts_every_field() {
        let annotation = Annotation {
            path: "n.ipynb".into(),
            start_line: 0,
            end_line: 0,
            start_column: Some(1),
            end_column: Some(2),
            annotation_level: AnnotationLevel::Warning,
            message: "".into(),
            title: Some("t".repeat(300)),
            raw_details: Some("d".repeat(70_000)),
        };
        let mut body = UpdateCheckRun {
            status: Some(CheckStatus::Completed),
            conclusion: Some(Conclusion::Neutral),
            output: Some(CheckOutput {
                title: "€".repeat(300),
                summary: "€".repeat(30_000),
                text: Some("x".repeat(70_000)),
                annotations: vec![annotation; 60],
            }),
            actions: vec![
                CheckAction {
                    label: "L".repeat(21),
                    description: "D".repeat(41),
                    identifier: "I".repeat(21)
                };
                4
            ],
            ..UpdateCheckRun::default()
        };
        let before = rule_violations(&serde_json::to_value(&body).expect("json"), false);
        assert!(before.len() >= 5, "{before:#?}");
        body.enforce_limits();
        let value = assert_valid(&body, false);
        let output = body.output.as_ref().expect("output");
        assert_eq!(output.title.chars().count(), MAX_OUTPUT_TITLE_CHARS);
        assert!(output.summary.len() <= MAX_OUTPUT_TEXT && output.summary.ends_with(CUT_NOTE));
        assert_eq!(output.annotations.len(), MAX_ANNOTATIONS);
        assert_eq!(output.annotations[0].start_line, 1);
        assert_eq!(
            output.annotations[0]
                .title
                .as_deref()
                .map(|t| t.chars().count()),
            Some(255)
        );
        assert_eq!(
            output.annotations[0].message,
            output.annotations[0].title.clone().unwrap_or_default()
        );
        assert_eq!(body.actions.len(), MAX_ACTIONS);
        assert_eq!(
            value["actions"][0]["label"].as_str().map(str::len),
            Some(20)
        );
        assert_eq!(
            value["actions"][0]["description"].as_str().map(str::len),
            Some(40)
        );
        assert_eq!(
            value["actions"][0]["identifier"].as_str().map(str::len),
            Some(20)
        );
    }

    #[test]
    fn rerun_action_is_within_limits() {
        let action = CheckAction::rerun();
        assert!(action.label.chars().count() <= MAX_ACTION_LABEL_CHARS);
        assert!(action.description.chars().count() <= MAX_ACTION_DESCRIPTION_CHARS);
        assert!(action.identifier.chars().count() <= MAX_ACTION_IDENTIFIER_CHARS);
    }

    #[test]
    fn rule_violations_catches_what_github_refuses() {
        let cases = [
            (json!({"head_sha": "a"}), true, "`name` is required"),
            (json!({"name": "n"}), true, "`head_sha` is required"),
            (
                json!({"name": "n", "head_sha": "a", "status": "waiting"}),
                true,
                "is not one of queued",
            ),
            (
                json!({"status": "completed"}),
                false,
                "`conclusion` is required",
            ),
            (
                json!({"conclusion": "stale"}),
                false,
                "is not one of action_required",
            ),
            (
                json!({"output": {"title": "t"}}),
                false,
                "`output.summary` is required",
            ),
            (
                json!({"details_url": "nbci.example"}),
                false,
                "not an http(s) URL",
            ),
            (json!({"started_at": "today"}), false, "not an ISO 8601"),
            (json!({"head_sha": "a"}), false, "unknown field `head_sha`"),
            (json!({"colour": "red"}), false, "unknown field `colour`"),
            (
                json!({"output": {"title": "t", "summary": "s", "annotations": [{"path": "p", "start_line": 1, "end_line": 1, "annotation_level": "error"}]}}),
                false,
                "`output.annotations[0].message` is required",
            ),
        ];
        for (body, creating, expected) in cases {
            let problems = rule_violations(&body, creating);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{body}: {problems:#?}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(
            notebook_path_of(&check_run_name("a/b.ipynb")),
            Some("a/b.ipynb")
        );
        assert_eq!(notebook_path_of("other app"), None);
        assert_eq!(notebook_path_of("nbci / "), None);
    }

    #[test]
    fn markdown_helpers() {
        assert_eq!(
            strip_ansi(
                "\u{1b}[0;31mred\u{1b}[0m \u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{1b}\\ end\u{1b}"
            ),
            "red link end"
        );
        assert_eq!(code_span("a`b"), "``a`b``");
        assert_eq!(code_span("`x`"), "`` `x` ``");
        assert_eq!(table_cell("a|b\nc"), "a\\|b c");
        assert_eq!(format_duration(3725.0), "1 h 2 min 5 s");
        assert_eq!(format_duration(f64::NAN), "unknown");
        assert_eq!(first_line("one\ntwo", 10), "one…");
        let mut text = "aé".to_string();
        cut_chars(&mut text, 1);
        assert_eq!(text, "a");
    }
}
