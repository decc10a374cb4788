//! Progress on the terminal: one line per executed code cell, with its time.

use std::io::Write as _;
use std::sync::Arc;

use nbci_shared::adapters::local::engine::{Progress, ProgressSink};
use nbci_shared::domain::outcome::{Outcome, Status};

/// A sink printing to stderr; with `prefix_names` each line names its notebook
/// (for parallel runs, whose lines interleave).
pub fn terminal(prefix_names: bool) -> ProgressSink {
    Arc::new(move |name: &str, event: &Progress| {
        let prefix = if prefix_names {
            format!("[{name}] ")
        } else {
            String::new()
        };
        let line = match event {
            Progress::Started { kernel, code_cells } => {
                let title = if prefix_names { "started" } else { name };
                format!("{prefix}▶ {title}: kernel {kernel}, {code_cells} code cells")
            }
            Progress::CellDone {
                position,
                total,
                ordinal,
                code_cells,
                seconds,
                outcome,
            } => {
                let mark = match outcome.as_str() {
                    "ok" => "✓",
                    "timeout" => "⏱",
                    _ => "✗",
                };
                let position = position.map_or("?".into(), |p| p.to_string());
                format!(
                    "{prefix}  {mark} cell {position:>3} of {total:<3} ({ordinal}/{code_cells} code)  {seconds:>7.2} s"
                )
            }
            Progress::Warning(message) => format!("{prefix}warning: {message}"),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{line}");
    })
}

/// The verdict line for one notebook.
pub fn verdict(outcome: &Outcome) -> String {
    let mark = match outcome.status {
        Status::Succeeded => "✓",
        Status::Failed => "✗",
        Status::TimedOut => "⏱",
        Status::Error => "⚠",
    };
    format!(
        "{mark} {}: {}",
        outcome.notebook,
        nbci_shared::adapters::local::reports::detail_of(outcome)
    )
}
