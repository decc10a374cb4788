//! The nbformat 4 document model.
//!
//! Parsing is strict on purpose: a file that is not a notebook gets one line
//! that names the problem (and the JSON path where it is), before anything
//! runs or is written. Only the fields nbci reads are typed; everything else
//! is kept as raw JSON so that nothing is lost.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Tag papermill puts on the markdown cells it inserts around an error.
pub const ERROR_MARKER_TAG: &str = "papermill-error-cell-tag";
/// Tag papermill puts on the cell holding the injected parameters.
pub const INJECTED_PARAMETERS_TAG: &str = "injected-parameters";
/// Tag marking the cell whose assignments are the notebook's default parameters.
pub const PARAMETERS_TAG: &str = "parameters";
/// Tag of a cell whose error is expected (nbclient and nbmake allow it).
pub const RAISES_EXCEPTION_TAG: &str = "raises-exception";
/// Tag of a cell that is not executed.
pub const SKIP_EXECUTION_TAG: &str = "skip-execution";

/// Why a file is not a notebook nbci can run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotebookError {
    /// Occurs when the file cannot be read (missing, a directory, no permission).
    #[error("{path}: cannot read the notebook: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    /// Occurs when the bytes are not JSON (including an empty file).
    #[error("{path}: not a notebook: the file is not valid JSON ({reason})")]
    NotJson { path: PathBuf, reason: String },
    /// Occurs when the JSON is valid but its top level is not an object.
    #[error("{path}: not a notebook: the top level is a JSON {found}, expected an object")]
    NotAnObject { path: PathBuf, found: &'static str },
    /// Occurs when the notebook is of another major nbformat version (3 and older).
    #[error(
        "{path}: nbformat {found} is not supported: nbci reads nbformat 4.0 to 4.5 \
         (upgrade it with `jupyter nbconvert --to notebook --nbformat 4 --inplace {path}`)"
    )]
    UnsupportedVersion { path: PathBuf, found: String },
    /// Occurs when a field is missing or has the wrong type.
    #[error("{path}: not a valid nbformat 4 notebook: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// A parsed nbformat 4 notebook.
#[derive(Debug, Clone, Deserialize)]
pub struct Notebook {
    pub nbformat: u32,
    pub nbformat_minor: u32,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub cells: Vec<Cell>,
}

/// The three cell types of nbformat 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellType {
    Code,
    Markdown,
    Raw,
}

/// One cell; `source` is joined into one string whatever its JSON form.
#[derive(Debug, Clone, Deserialize)]
pub struct Cell {
    pub cell_type: CellType,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(deserialize_with = "multiline")]
    pub source: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub execution_count: Option<i64>,
    #[serde(default)]
    pub outputs: Vec<Output>,
}

/// One cell output; only the fields of error outputs are typed.
#[derive(Debug, Clone, Deserialize)]
pub struct Output {
    pub output_type: String,
    #[serde(default)]
    pub ename: Option<String>,
    #[serde(default)]
    pub evalue: Option<String>,
    #[serde(default)]
    pub traceback: Option<Vec<String>>,
}

/// nbformat's "multiline string": a string or a list of strings to concatenate.
fn multiline<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "expected a string or a list of strings")]
    enum Multiline {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Multiline::deserialize(deserializer)? {
        Multiline::One(text) => text,
        Multiline::Many(lines) => lines.concat(),
    })
}

impl Notebook {
    /// Reads and validates the notebook at `path` (a regular file of at
    /// most [`MAX_NOTEBOOK_BYTES`]; see [`read_notebook_file`]).
    pub fn read(path: &Path) -> Result<Self, NotebookError> {
        let bytes = read_notebook_file(path, MAX_NOTEBOOK_BYTES)?;
        Self::parse(path, &bytes)
    }

    /// Validates `bytes` as a notebook; `path` only names it in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, NotebookError> {
        let path = path.to_owned();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(NotebookError::NotJson {
                path,
                reason: "the file is empty".into(),
            });
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|error| NotebookError::NotJson {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        let object = match &value {
            Value::Object(object) => object,
            other => {
                return Err(NotebookError::NotAnObject {
                    path,
                    found: json_kind(other),
                });
            }
        };
        match object.get("nbformat") {
            None => {
                return Err(NotebookError::Invalid {
                    path,
                    reason: "the `nbformat` version field is missing".into(),
                });
            }
            Some(Value::Number(n)) if n.as_u64() == Some(4) => {}
            Some(Value::Number(n)) => {
                return Err(NotebookError::UnsupportedVersion {
                    path,
                    found: n.to_string(),
                });
            }
            Some(other) => {
                return Err(NotebookError::Invalid {
                    path,
                    reason: format!(
                        "`nbformat` must be the number 4, found a {}",
                        json_kind(other)
                    ),
                });
            }
        }
        if !object.contains_key("cells") {
            return Err(NotebookError::Invalid {
                path,
                reason: "the `cells` list is missing".into(),
            });
        }
        serde_path_to_error::deserialize(value).map_err(|error| {
            let at = error.path().to_string();
            NotebookError::Invalid {
                path,
                reason: format!("at `{at}`: {}", error.into_inner()),
            }
        })
    }

    /// The cell at 0-based `index`, if there is one.
    pub fn cell(&self, index: usize) -> Option<&Cell> {
        self.cells.get(index)
    }

    /// Whether some cell is tagged `parameters` (where papermill injects after).
    pub fn has_parameters_cell(&self) -> bool {
        self.cells.iter().any(|cell| cell.has_tag(PARAMETERS_TAG))
    }

    /// The kernel named by `metadata.kernelspec.name`, if any.
    pub fn kernel_name(&self) -> Option<&str> {
        self.metadata
            .get("kernelspec")
            .and_then(|spec| spec.get("name"))
            .and_then(Value::as_str)
    }

    /// The cloud environment this notebook asks for (see [`EnvironmentSpec`]).
    pub fn environment(&self) -> Result<EnvironmentSpec, String> {
        EnvironmentSpec::from_metadata(&self.metadata)
    }

    /// The first error that fails this executed notebook, positioned in `committed`
    /// (the notebook as it is in the repository), or `None` when it passed.
    ///
    /// Mirrors papermill's verdict: an error output fails the notebook, except
    /// `SystemExit` with code 0 or none (a clean early stop); a cell papermill
    /// marked as raising without an error output fails it too. Unlike papermill
    /// 2.7, and like nbclient and nbmake, an error in a cell tagged
    /// `raises-exception` is expected and does not count.
    pub fn first_error(&self, committed: &Notebook) -> Option<CellError> {
        let positions = committed_positions(&committed.cells, &self.cells);
        for (executed_index, cell) in self.cells.iter().enumerate() {
            if cell.has_tag(RAISES_EXCEPTION_TAG) || cell.has_tag(ERROR_MARKER_TAG) {
                continue;
            }
            let mut clean_exit = false;
            for output in &cell.outputs {
                if output.output_type != "error" {
                    continue;
                }
                let ename = output.ename.clone().unwrap_or_default();
                let evalue = output.evalue.clone().unwrap_or_default();
                if ename == "SystemExit" && (evalue.is_empty() || evalue == "0") {
                    clean_exit = true;
                    continue;
                }
                let evalue = locate_syntax_error(&ename, &evalue, positions[executed_index]);
                return Some(CellError {
                    index: positions[executed_index],
                    execution_count: cell.execution_count,
                    ename,
                    evalue,
                    traceback: output
                        .traceback
                        .iter()
                        .flatten()
                        .map(|line| strip_ansi(line))
                        .collect(),
                });
            }
            let raised = cell
                .metadata
                .get("papermill")
                .and_then(|meta| meta.get("exception"))
                .and_then(Value::as_bool)
                == Some(true);
            if raised && !clean_exit {
                return Some(CellError {
                    index: positions[executed_index],
                    execution_count: cell.execution_count,
                    ename: "CellExecutionError".into(),
                    evalue: String::new(),
                    traceback: Vec::new(),
                });
            }
        }
        None
    }
}

impl Cell {
    /// The cell's tags (`metadata.tags`), ignoring anything that is not a string.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.metadata
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags().any(|t| t == tag)
    }
}

/// What an executed cell is, as far as lining it up with the committed notebook goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellShape {
    pub is_error_marker: bool,
    pub is_injected_parameters: bool,
}

impl From<&Cell> for CellShape {
    fn from(cell: &Cell) -> Self {
        Self {
            is_error_marker: cell.has_tag(ERROR_MARKER_TAG),
            is_injected_parameters: cell.has_tag(INJECTED_PARAMETERS_TAG),
        }
    }
}

/// For every executed cell, its 0-based position in the committed notebook, or
/// `None` for cells papermill added (injected parameters, error markers).
///
/// Papermill drops committed error markers, replaces a committed
/// injected-parameters cell in place, or inserts a new one; so after dropping
/// markers on both sides and a newly inserted parameters cell, the two lists
/// line up one to one.
pub fn committed_positions(committed: &[Cell], executed: &[Cell]) -> Vec<Option<usize>> {
    let committed: Vec<CellShape> = committed.iter().map(CellShape::from).collect();
    let executed: Vec<CellShape> = executed.iter().map(CellShape::from).collect();
    align_cells(&committed, &executed)
}

/// [`committed_positions`] on cell shapes, for callers that only have the shapes
/// (the engine learns the executed layout from the driver before the run ends).
pub fn align_cells(committed: &[CellShape], executed: &[CellShape]) -> Vec<Option<usize>> {
    let kept: Vec<usize> = committed
        .iter()
        .enumerate()
        .filter(|(_, shape)| !shape.is_error_marker)
        .map(|(index, _)| index)
        .collect();
    let committed_has_injected = committed
        .iter()
        .any(|shape| shape.is_injected_parameters && !shape.is_error_marker);
    let mut next = kept.into_iter();
    executed
        .iter()
        .map(|shape| {
            if shape.is_error_marker || (shape.is_injected_parameters && !committed_has_injected) {
                None
            } else {
                next.next()
            }
        })
        .collect()
}

/// A `SyntaxError` (or `IndentationError`, `TabError`) names the file the
/// code was compiled from, which for a cell is IPython's temporary file
/// (`invalid syntax (3311942670.py, line 1)`), a name that means nothing to
/// the reader: name the cell instead, counted from 1 as the headlines count
/// (`invalid syntax (cell 5, line 1)`). Other errors are left as they are.
pub fn locate_syntax_error(ename: &str, evalue: &str, position: Option<usize>) -> String {
    static TEMP_FILE: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(r" \(\d+\.py, line (\d+)\)$").ok());
    let (Some(position), Some(pattern)) = (position, TEMP_FILE.as_ref()) else {
        return evalue.to_owned();
    };
    if !matches!(ename, "SyntaxError" | "IndentationError" | "TabError") {
        return evalue.to_owned();
    }
    let cell = position.saturating_add(1);
    pattern
        .replace(evalue, |found: &regex::Captures<'_>| {
            format!(" (cell {cell}, line {})", &found[1])
        })
        .into_owned()
}

/// The error that failed a notebook, positioned as in the committed notebook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellError {
    /// 0-based position in the committed notebook; `None` only if the error
    /// sits in a cell papermill added (an injected-parameters cell that fails).
    pub index: Option<usize>,
    pub execution_count: Option<i64>,
    pub ename: String,
    pub evalue: String,
    /// Traceback lines with ANSI colour codes removed.
    pub traceback: Vec<String>,
}

/// Removes ANSI escape sequences (colours, cursor moves, hyperlinks) that
/// IPython puts in tracebacks: CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL`
/// or `ESC \\`) and two-character sequences; a lone trailing `ESC` too.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

/// The cloud environment a notebook asks for.
///
/// Read from `metadata.nbci` first, then `metadata.environment.uri` (what
/// gcloud-notebook-training reads); anything unset falls back to the
/// deployment's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentSpec {
    pub image: Option<String>,
    pub machine_type: Option<String>,
    pub accelerator_type: Option<String>,
    pub accelerator_count: Option<u32>,
    pub timeout: Option<Duration>,
}

impl EnvironmentSpec {
    /// Reads the spec from notebook metadata; an error names the bad field.
    pub fn from_metadata(metadata: &Map<String, Value>) -> Result<Self, String> {
        let mut spec = Self::default();
        if let Some(nbci) = metadata.get("nbci") {
            let nbci = nbci.as_object().ok_or("metadata.nbci must be an object")?;
            let text = |key: &str| -> Result<Option<String>, String> {
                match nbci.get(key) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
                    Some(_) => Err(format!("metadata.nbci.{key} must be a non-empty string")),
                }
            };
            spec.image = text("image")?;
            spec.machine_type = text("machine_type")?;
            spec.accelerator_type = text("accelerator_type")?;
            spec.accelerator_count = match nbci.get("accelerator_count") {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    value
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or("metadata.nbci.accelerator_count must be a whole number")?,
                ),
            };
            spec.timeout = match nbci.get("timeout") {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    parse_duration_value(value)
                        .map_err(|reason| format!("metadata.nbci.timeout: {reason}"))?,
                ),
            };
        }
        if spec.image.is_none() {
            spec.image = metadata
                .get("environment")
                .and_then(|env| env.get("uri"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|uri| !uri.is_empty())
                .map(str::to_owned);
        }
        Ok(spec)
    }
}

/// A duration written as seconds (`90`, `1.5`) or with units (`90s`, `2h`, `1h 30m`).
pub fn parse_duration_value(value: &Value) -> Result<Duration, String> {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(seconds) => seconds_to_duration(seconds, &n.to_string()),
            None => Err(format!("{n} is not a positive number of seconds")),
        },
        Value::String(text) => parse_duration(text),
        _ => Err("expected seconds or a duration such as \"90s\" or \"2h\"".into()),
    }
}

/// Parses `"90"`, `"1.5"` (seconds) or `"2h"`, `"1h30m"`, `"45s"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_to_duration(seconds, &format!("{text:?}"));
    }
    match humantime::parse_duration(text) {
        Ok(duration) if duration > MAX_DURATION => {
            Err(format!("{text:?} is longer than a century"))
        }
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err(format!("{text:?} is zero")),
        Err(_) => Err(format!(
            "{text:?} is not a duration (write seconds, or e.g. \"90s\", \"10m\", \"2h\")"
        )),
    }
}

/// The longest duration nbci accepts: a century. Longer ones (`1e30`) would
/// overflow `Duration` and every deadline computed from it.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A positive, finite number of seconds as a duration of at most [`MAX_DURATION`].
fn seconds_to_duration(seconds: f64, shown: &str) -> Result<Duration, String> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("{shown} is not a positive number of seconds"));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= MAX_DURATION => Ok(duration),
        _ => Err(format!("{shown} seconds is longer than a century")),
    }
}

/// The largest notebook nbci reads: GitHub refuses files over 100 MB, and a
/// notebook is parsed in memory, so a larger one is refused before it is read.
pub const MAX_NOTEBOOK_BYTES: u64 = 100 << 20;

/// The bytes of the regular file at `path` (symbolic links followed), at most
/// `max_bytes` of them.
///
/// Paths come from command lines and repositories, so anything else is
/// refused before a byte is read: a FIFO (whose open would wait for a writer
/// for good, so it is opened non-blocking), a device (`/dev/zero` never
/// ends), a socket, a directory; and a file that is, or grows while it is
/// read, past `max_bytes`.
pub fn read_notebook_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, NotebookError> {
    use std::io::Read as _;
    let unreadable = |reason: String| NotebookError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options
        .open(path)
        .map_err(|error| unreadable(describe_io_error(&error)))?;
    let meta = file
        .metadata()
        .map_err(|error| unreadable(describe_io_error(&error)))?;
    if !meta.is_file() {
        return Err(unreadable(describe_file_type(&meta.file_type()).into()));
    }
    let too_large = || unreadable(format!("it is larger than {} MiB", max_bytes >> 20));
    if meta.len() > max_bytes {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| unreadable(describe_io_error(&error)))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

/// What a path that is not a regular file is, for an error message.
pub fn describe_file_type(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if kind.is_fifo() {
            return "it is a FIFO (named pipe), not a regular file";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "it is a device, not a regular file";
        }
        if kind.is_socket() {
            return "it is a socket, not a regular file";
        }
    }
    if kind.is_dir() {
        "it is a directory"
    } else if kind.is_symlink() {
        "it is a symbolic link"
    } else {
        "it is not a regular file"
    }
}

/// Whether a repository path is a notebook nbci runs: an `.ipynb` file that is
/// not a Jupyter checkpoint copy. The one rule for changes, re-runs and `nbci check`.
pub fn is_notebook_path(path: &str) -> bool {
    path.ends_with(".ipynb") && !path.split('/').any(|part| part == ".ipynb_checkpoints")
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An I/O error as a short human phrase (no "os error 2" noise).
pub fn describe_io_error(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: &Value) -> Result<Notebook, NotebookError> {
        Notebook::parse(Path::new("t.ipynb"), value.to_string().as_bytes())
    }

    fn code(source: &str, tags: &[&str], outputs: Value) -> Value {
        json!({"cell_type": "code", "source": source, "metadata": {"tags": tags},
               "execution_count": 1, "outputs": outputs})
    }

    fn notebook(cells: Vec<Value>) -> Value {
        json!({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells})
    }

    fn error_output(ename: &str, evalue: &str) -> Value {
        json!([{"output_type": "error", "ename": ename, "evalue": evalue,
                "traceback": ["\u{1b}[0;31mTraceback\u{1b}[0m", format!("\u{1b}[1;31m{ename}\u{1b}[0m: {evalue}")]}])
    }

    #[test]
    fn every_minor_version_of_nbformat_4_parses() {
        for minor in 0..=5 {
            let mut value = notebook(vec![code("x = 1", &[], json!([]))]);
            value["nbformat_minor"] = json!(minor);
            let parsed = parse(&value).expect("valid notebook");
            assert_eq!(parsed.nbformat_minor, minor);
        }
    }

    #[test]
    fn sources_given_as_lists_are_joined() {
        let value = notebook(vec![json!({"cell_type": "markdown", "metadata": {},
                                         "source": ["# Title\n", "text"]})]);
        assert_eq!(
            parse(&value).expect("valid").cells[0].source,
            "# Title\ntext"
        );
    }

    #[test]
    fn garbage_gets_one_clear_line() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "empty"),
            (b"not json".to_vec(), "not valid JSON"),
            (b"[1, 2]".to_vec(), "JSON array"),
            (b"\"text\"".to_vec(), "JSON string"),
            (br#"{"nbformat": 3, "worksheets": []}"#.to_vec(), "nbformat 3"),
            (br#"{"cells": []}"#.to_vec(), "`nbformat`"),
            (br#"{"nbformat": "4", "cells": []}"#.to_vec(), "must be the number 4"),
            (br#"{"nbformat": 4, "nbformat_minor": 4, "metadata": {}}"#.to_vec(), "`cells`"),
            (
                br#"{"nbformat": 4, "nbformat_minor": 4, "metadata": {}, "cells": "x"}"#.to_vec(),
                "at `cells`",
            ),
            (
                br#"{"nbformat": 4, "nbformat_minor": 4, "metadata": {}, "cells": [{"cell_type": "code", "source": 42}]}"#
                    .to_vec(),
                "cells[0].source",
            ),
            (
                br#"{"nbformat": 4, "nbformat_minor": 4, "metadata": {}, "cells": [{"cell_type": "widget", "source": ""}]}"#
                    .to_vec(),
                "cells[0].cell_type",
            ),
        ];
        for (bytes, expected) in cases {
            let error = Notebook::parse(Path::new("t.ipynb"), &bytes)
                .expect_err("must be rejected")
                .to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
            assert!(!error.contains('\n'), "one line: {error:?}");
            assert!(error.starts_with("t.ipynb: "), "names the file: {error:?}");
        }
    }

    #[test]
    fn only_regular_files_up_to_the_limit_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.ipynb");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        // Would wait for a writer for good if it were opened blocking.
        let error = Notebook::read(&fifo).expect_err("a FIFO").to_string();
        assert!(error.contains("FIFO"), "{error}");
        let zero = dir.path().join("zero.ipynb");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("link");
        for path in [Path::new("/dev/zero"), zero.as_path()] {
            let error = Notebook::read(path).expect_err("a device").to_string();
            assert!(error.contains("device"), "{error}");
        }
        let big = dir.path().join("big.ipynb");
        std::fs::write(&big, vec![b' '; 2048]).expect("write");
        let error = read_notebook_file(&big, 1024)
            .expect_err("too large")
            .to_string();
        assert!(error.contains("larger than"), "{error}");
        assert_eq!(read_notebook_file(&big, 2048).expect("fits").len(), 2048);
    }

    #[test]
    fn directories_and_missing_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = Notebook::read(dir.path())
            .expect_err("a directory")
            .to_string();
        assert!(error.contains("directory"), "{error}");
        let error = Notebook::read(&dir.path().join("none.ipynb"))
            .expect_err("missing")
            .to_string();
        assert!(error.contains("no such file"), "{error}");
    }

    #[test]
    fn the_first_error_is_found_with_ansi_stripped() {
        let committed = parse(&notebook(vec![
            json!({"cell_type": "markdown", "metadata": {}, "source": "# t"}),
            code("x = 1", &[], json!([])),
            code("raise ValueError('boom')", &[], json!([])),
        ]))
        .expect("valid");
        let executed = parse(&notebook(vec![
            json!({"cell_type": "markdown", "metadata": {}, "source": "# t"}),
            code("x = 1", &[], json!([])),
            code(
                "raise ValueError('boom')",
                &[],
                error_output("ValueError", "boom"),
            ),
        ]))
        .expect("valid");
        let error = executed.first_error(&committed).expect("an error");
        assert_eq!(error.index, Some(2));
        assert_eq!(error.ename, "ValueError");
        assert_eq!(error.evalue, "boom");
        assert_eq!(error.traceback, vec!["Traceback", "ValueError: boom"]);
    }

    #[test]
    fn syntax_errors_name_the_cell_not_ipythons_temporary_file() {
        assert_eq!(
            locate_syntax_error(
                "SyntaxError",
                "invalid syntax (1063758517.py, line 1)",
                Some(4)
            ),
            "invalid syntax (cell 5, line 1)"
        );
        assert_eq!(
            locate_syntax_error(
                "IndentationError",
                "expected an indented block after 'if' statement on line 1 (3430485373.py, line 2)",
                Some(0)
            ),
            "expected an indented block after 'if' statement on line 1 (cell 1, line 2)"
        );
        // Other errors, other files and unknown positions are left alone.
        for (ename, evalue, position) in [
            ("ValueError", "bad (123.py, line 1)", Some(1)),
            ("SyntaxError", "invalid syntax (helper.py, line 3)", Some(1)),
            ("SyntaxError", "invalid syntax (123.py, line 1)", None),
        ] {
            assert_eq!(locate_syntax_error(ename, evalue, position), evalue);
        }
        let committed = parse(&notebook(vec![
            json!({"cell_type": "markdown", "metadata": {}, "source": "# t"}),
            code("def f(:", &[], json!([])),
        ]))
        .expect("valid");
        let executed = parse(&notebook(vec![
            json!({"cell_type": "markdown", "metadata": {}, "source": "# t"}),
            code(
                "def f(:",
                &[],
                error_output("SyntaxError", "invalid syntax (3311942670.py, line 1)"),
            ),
        ]))
        .expect("valid");
        assert_eq!(
            executed.first_error(&committed).expect("an error").evalue,
            "invalid syntax (cell 2, line 1)"
        );
    }

    #[test]
    fn positions_skip_injected_parameters_and_error_markers() {
        let committed = parse(&notebook(vec![
            code("a = 1", &["parameters"], json!([])),
            code("b = 2", &[], json!([])),
            code("raise KeyError('k')", &[], json!([])),
        ]))
        .expect("valid");
        let marker = json!({"cell_type": "markdown", "source": "error",
                            "metadata": {"tags": [ERROR_MARKER_TAG]}});
        let executed = parse(&notebook(vec![
            marker.clone(),
            code("a = 1", &["parameters"], json!([])),
            code("a = 5", &["injected-parameters"], json!([])),
            code("b = 2", &[], json!([])),
            marker,
            code("raise KeyError('k')", &[], error_output("KeyError", "'k'")),
        ]))
        .expect("valid");
        assert_eq!(
            committed_positions(&committed.cells, &executed.cells),
            vec![None, Some(0), None, Some(1), None, Some(2)]
        );
        assert_eq!(
            executed.first_error(&committed).expect("error").index,
            Some(2)
        );
    }

    #[test]
    fn a_committed_injected_cell_is_replaced_in_place() {
        let committed = parse(&notebook(vec![
            code("a = 1", &["parameters"], json!([])),
            code("a = 3", &["injected-parameters"], json!([])),
            code("fail()", &[], json!([])),
        ]))
        .expect("valid");
        let executed = parse(&notebook(vec![
            code("a = 1", &["parameters"], json!([])),
            code("a = 9", &["injected-parameters"], json!([])),
            code("fail()", &[], error_output("NameError", "fail")),
        ]))
        .expect("valid");
        assert_eq!(
            executed.first_error(&committed).expect("error").index,
            Some(2)
        );
    }

    #[test]
    fn expected_errors_and_clean_exits_do_not_fail() {
        let cells = vec![
            code(
                "raise RuntimeError()",
                &[RAISES_EXCEPTION_TAG],
                error_output("RuntimeError", ""),
            ),
            code("raise SystemExit(0)", &[], error_output("SystemExit", "0")),
        ];
        let executed = parse(&notebook(cells)).expect("valid");
        assert_eq!(executed.first_error(&executed.clone()), None);
        let exit_1 = parse(&notebook(vec![code(
            "raise SystemExit(1)",
            &[],
            error_output("SystemExit", "1"),
        )]))
        .expect("valid");
        assert_eq!(
            exit_1.first_error(&exit_1.clone()).expect("fails").ename,
            "SystemExit"
        );
    }

    #[test]
    fn a_cell_marked_as_raising_without_output_fails() {
        let mut cell = code("x", &[], json!([]));
        cell["metadata"]["papermill"] = json!({"exception": true});
        let executed = parse(&notebook(vec![cell])).expect("valid");
        let error = executed.first_error(&executed.clone()).expect("fails");
        assert_eq!(error.ename, "CellExecutionError");
        assert_eq!(error.index, Some(0));
    }

    #[test]
    fn environment_metadata_prefers_nbci_then_environment_uri() {
        let metadata = |value: Value| value.as_object().expect("object").clone();
        let spec = EnvironmentSpec::from_metadata(&metadata(json!({
            "nbci": {"image": "gcr.io/p/img:1", "machine_type": "n1-standard-8",
                     "accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 1,
                     "timeout": "2h"},
            "environment": {"uri": "ignored"}
        })))
        .expect("valid");
        assert_eq!(spec.image.as_deref(), Some("gcr.io/p/img:1"));
        assert_eq!(spec.accelerator_count, Some(1));
        assert_eq!(spec.timeout, Some(Duration::from_secs(7200)));
        let spec = EnvironmentSpec::from_metadata(&metadata(json!({
            "environment": {"uri": "gcr.io/deeplearning-platform-release/base-cpu"}
        })))
        .expect("valid");
        assert_eq!(
            spec.image.as_deref(),
            Some("gcr.io/deeplearning-platform-release/base-cpu")
        );
        assert_eq!(
            EnvironmentSpec::from_metadata(&Map::new()).expect("valid"),
            EnvironmentSpec::default()
        );
        for bad in [
            json!({"nbci": "x"}),
            json!({"nbci": {"accelerator_count": -1}}),
            json!({"nbci": {"timeout": "soon"}}),
            json!({"nbci": {"image": 3}}),
        ] {
            assert!(EnvironmentSpec::from_metadata(&metadata(bad)).is_err());
        }
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("nan").is_err());
    }

    #[test]
    fn ansi_sequences_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[0;31mred\u{1b}[0m plain \u{1b}[1;32mgreen"),
            "red plain green"
        );
        assert_eq!(strip_ansi("no codes"), "no codes");
    }

    /// Truncations and byte flips of a real notebook never panic: they parse or
    /// give an error naming the file.
    #[test]
    fn mangled_notebooks_never_panic() {
        let original = notebook(vec![
            code(
                "print('héllo')",
                &["parameters"],
                error_output("ValueError", "x"),
            ),
            json!({"cell_type": "markdown", "metadata": {}, "source": ["a\n", "b"]}),
        ])
        .to_string()
        .into_bytes();
        for cut in 0..original.len() {
            let _ = Notebook::parse(Path::new("t.ipynb"), &original[..cut]);
        }
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let mut bytes = original.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = usize::try_from(next() % bytes.len() as u64).expect("fits");
                const NOISE: &[u8] = b"{}[]\",:0a\x00\xff";
                bytes[at] = NOISE[usize::try_from(next() % NOISE.len() as u64).expect("fits")];
            }
            if let Err(error) = Notebook::parse(Path::new("t.ipynb"), &bytes) {
                assert!(error.to_string().starts_with("t.ipynb: "));
            }
        }
    }
}
