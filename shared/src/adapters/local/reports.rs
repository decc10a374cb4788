//! Summaries of a set of outcomes: a terminal table, JUnit XML (what CI
//! systems display as test results) and Markdown (for a PR comment or a job
//! summary).

use std::fmt::Write as _;

use crate::domain::outcome::{Outcome, Status};

/// The worst status among `outcomes` (succeeded when there are none).
pub fn overall_status(outcomes: &[Outcome]) -> Status {
    outcomes
        .iter()
        .map(|o| o.status)
        .max()
        .unwrap_or(Status::Succeeded)
}

/// A fixed-width table for the terminal, one row per notebook.
pub fn table(outcomes: &[Outcome]) -> String {
    let width = outcomes
        .iter()
        .map(|o| o.notebook.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut text = format!(
        "{:<width$}  {:<9}  {:>9}  DETAIL\n",
        "NOTEBOOK", "STATUS", "TIME"
    );
    for outcome in outcomes {
        let detail = match outcome.status {
            Status::Succeeded => String::new(),
            _ => one_line(&detail_of(outcome)),
        };
        let _ = writeln!(
            text,
            "{:<width$}  {:<9}  {:>8.1}s  {}",
            outcome.notebook, outcome.status, outcome.duration_s, detail
        );
    }
    text.push_str(&tally(outcomes));
    text
}

/// "2 notebooks: 1 passed, 1 failed, 0 timed out, 0 errors", in the singular
/// where a count is one ("1 notebook: 1 passed", "1 error").
pub fn tally(outcomes: &[Outcome]) -> String {
    let counts = counts(outcomes);
    format!(
        "{}: {} passed, {} failed, {} timed out, {}",
        counted(outcomes.len(), "notebook", "notebooks"),
        counts[0],
        counts[1],
        counts[2],
        counted(counts[3], "error", "errors")
    )
}

/// `n` and the noun in the singular or the plural.
pub fn counted(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

fn counts(outcomes: &[Outcome]) -> [usize; 4] {
    let mut counts = [0; 4];
    for outcome in outcomes {
        counts[outcome.status as usize] += 1;
    }
    counts
}

/// The headline plus the error message, e.g. "Failed at cell 4 of 5: ValueError: boom".
pub fn detail_of(outcome: &Outcome) -> String {
    let headline = outcome.headline();
    match (&outcome.failed_cell, &outcome.message) {
        (Some(cell), _) if !cell.evalue.is_empty() => format!("{headline}: {}", cell.evalue),
        (_, Some(message)) if !headline.contains(message.as_str()) => {
            format!("{headline}: {message}")
        }
        _ => headline,
    }
}

fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 100 {
        let cut: String = line.chars().take(99).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

/// JUnit XML: one test case per notebook; failures and timeouts as `<failure>`,
/// infrastructure errors as `<error>`.
pub fn junit_xml(suite: &str, outcomes: &[Outcome]) -> String {
    let counts = counts(outcomes);
    let total_time: f64 = outcomes.iter().map(|o| o.duration_s).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"{suite}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{total_time:.3}\">",
        outcomes.len(),
        counts[1] + counts[2],
        counts[3],
        suite = xml_escape(suite),
    );
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{total_time:.3}\">",
        outcomes.len(),
        counts[1] + counts[2],
        counts[3],
        suite = xml_escape(suite),
    );
    for outcome in outcomes {
        let _ = write!(
            xml,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(suite),
            xml_escape(&outcome.notebook),
            outcome.duration_s
        );
        let element = match outcome.status {
            Status::Succeeded => {
                xml.push_str("/>\n");
                continue;
            }
            Status::Failed | Status::TimedOut => "failure",
            Status::Error => "error",
        };
        let kind = outcome
            .failed_cell
            .as_ref()
            .map(|c| c.ename.clone())
            .unwrap_or_else(|| outcome.status.to_string());
        let body = outcome
            .failed_cell
            .as_ref()
            .map(|c| c.traceback.join("\n"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| detail_of(outcome));
        let _ = writeln!(
            xml,
            ">\n      <{element} message=\"{}\" type=\"{}\">{}</{element}>\n      <system-out>{}</system-out>\n    </testcase>",
            xml_escape(&detail_of(outcome)),
            xml_escape(&kind),
            xml_escape(&body),
            xml_escape(&format!("executed notebook: {}", outcome.output)),
        );
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// Markdown: a table of every notebook, then the traceback of each failure.
pub fn markdown(title: &str, outcomes: &[Outcome]) -> String {
    let icon = |status: Status| match status {
        Status::Succeeded => "✅",
        Status::Failed => "❌",
        Status::TimedOut => "⏱️",
        Status::Error => "⚠️",
    };
    let mut md = format!(
        "## {} {title}\n\n{}\n\n",
        icon(overall_status(outcomes)),
        tally(outcomes)
    );
    md.push_str("| | Notebook | Status | Time | Detail |\n|---|---|---|---:|---|\n");
    for outcome in outcomes {
        let _ = writeln!(
            md,
            "| {} | [{}]({}) | {} | {:.1} s | {} |",
            icon(outcome.status),
            markdown_escape(&outcome.notebook),
            outcome.output,
            outcome.status,
            outcome.duration_s,
            markdown_escape(&one_line(&match outcome.status {
                Status::Succeeded => String::new(),
                _ => detail_of(outcome),
            }))
        );
    }
    for outcome in outcomes.iter().filter(|o| o.status != Status::Succeeded) {
        let _ = writeln!(
            md,
            "\n### {}: {}\n",
            markdown_escape(&outcome.notebook),
            markdown_escape(&outcome.headline())
        );
        if let Some(cell) = &outcome.failed_cell {
            let traceback = if cell.traceback.is_empty() {
                format!("{}: {}", cell.ename, cell.evalue)
            } else {
                cell.traceback.join("\n")
            };
            let fence = if traceback.contains("```") {
                "~~~~"
            } else {
                "```"
            };
            let _ = writeln!(md, "{fence}\n{}\n{fence}", traceback.trim_end());
        } else if let Some(message) = &outcome.message {
            let _ = writeln!(md, "{}", markdown_escape(message));
        }
    }
    md
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

fn markdown_escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::outcome::{FailedCell, Runtime};

    fn outcome(name: &str, status: Status) -> Outcome {
        Outcome {
            notebook: name.into(),
            status,
            started_at: "2026-11-25T00:00:00Z".into(),
            duration_s: 1.25,
            output: format!("file:///tmp/{name}"),
            failed_cell: (status != Status::Succeeded).then(|| FailedCell {
                index: Some(2),
                execution_count: Some(3),
                ename: "ValueError".into(),
                evalue: "bad <value> & \"quotes\"".into(),
                traceback: vec!["Traceback".into(), "ValueError: bad".into()],
            }),
            parameters: Default::default(),
            runtime: Runtime {
                image: "local".into(),
                kernel: "python3".into(),
                versions: Default::default(),
            },
            total_cells: 5,
            message: None,
        }
    }

    #[test]
    fn the_worst_status_decides() {
        let all = [
            outcome("a.ipynb", Status::Succeeded),
            outcome("b.ipynb", Status::Failed),
            outcome("c.ipynb", Status::TimedOut),
        ];
        assert_eq!(overall_status(&all), Status::TimedOut);
        assert_eq!(overall_status(&[]), Status::Succeeded);
    }

    #[test]
    fn junit_counts_and_escapes() {
        let xml = junit_xml(
            "nbci",
            &[
                outcome("ok.ipynb", Status::Succeeded),
                outcome("x&y.ipynb", Status::Failed),
            ],
        );
        assert!(xml.contains("tests=\"2\" failures=\"1\" errors=\"0\""));
        assert!(xml.contains("name=\"x&amp;y.ipynb\""));
        assert!(xml.contains("bad &lt;value&gt; &amp; &quot;quotes&quot;"));
        assert!(xml.contains("<failure message=\"Failed at cell 3 of 5: ValueError"));
    }

    #[test]
    fn markdown_lists_every_notebook_and_each_traceback() {
        let md = markdown(
            "nbci check",
            &[
                outcome("ok.ipynb", Status::Succeeded),
                outcome("bad.ipynb", Status::Failed),
            ],
        );
        assert!(md.contains("2 notebooks: 1 passed, 1 failed"));
        assert!(md.contains("### bad.ipynb: Failed at cell 3 of 5: ValueError"));
        assert!(md.contains("```\nTraceback\nValueError: bad\n```"));
    }

    #[test]
    fn counts_are_singular_when_one() {
        assert_eq!(
            tally(&[outcome("ok.ipynb", Status::Succeeded)]),
            "1 notebook: 1 passed, 0 failed, 0 timed out, 0 errors"
        );
        assert_eq!(
            tally(&[
                outcome("a.ipynb", Status::Error),
                outcome("b.ipynb", Status::Succeeded)
            ]),
            "2 notebooks: 1 passed, 0 failed, 0 timed out, 1 error"
        );
        assert!(table(&[]).ends_with("0 notebooks: 0 passed, 0 failed, 0 timed out, 0 errors"));
    }
}
