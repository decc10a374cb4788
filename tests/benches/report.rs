//! BENCHMARKS.md and its plots, from the figures the other benchmarks of
//! `make bench` leave behind (`cargo bench -p nbci-tests --bench report`).
//!
//! Every benchmark, Rust or Python, writes one figures file,
//! `$NBCI_BENCH_OUT/<id>.json` (default `target/bench`), in the shape
//! `tests/bench/figures.py` describes: a title, its method in Markdown,
//! tables of preformatted cells, and optionally raw latency samples and line
//! series. This program only arranges them: it measures nothing and judges
//! nothing, so a figure in BENCHMARKS.md is always what a benchmark printed.
//!
//! Output: `BENCHMARKS.md` at the workspace root (or `$NBCI_BENCHMARKS_MD`)
//! and PNG plots in `docs/bench/` beside it: a latency distribution per
//! figures file that has samples, a line plot per series. Text in the plots
//! needs a TrueType font, found at run time (`$NBCI_PLOT_FONT`, matplotlib's
//! DejaVu Sans in the benchmark venv, or the system's); without one the plots
//! are left out and the report says so.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use plotters::prelude::*;
use serde::Deserialize;

/// The order of sections; any other figures file follows, by id.
const ORDER: &[&str] = &["webhook", "load", "engine", "check", "latency", "pipeline"];
/// Plot size in pixels.
const PLOT_SIZE: (u32, u32) = (900, 520);

#[derive(Debug, Deserialize)]
struct Figures {
    id: String,
    title: String,
    method: String,
    #[serde(default)]
    tables: Vec<Table>,
    /// Raw samples per series, in milliseconds: a latency distribution.
    #[serde(default)]
    latencies_ms: BTreeMap<String, Vec<f64>>,
    /// Line plots by title.
    #[serde(default)]
    series: BTreeMap<String, Series>,
}

#[derive(Debug, Deserialize)]
struct Table {
    caption: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Series {
    x_label: String,
    #[serde(default)]
    y_label: String,
    x: Vec<f64>,
    lines: BTreeMap<String, Vec<f64>>,
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; this program takes no arguments.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace root")?
        .to_path_buf();
    let input = std::env::var_os("NBCI_BENCH_OUT")
        .map_or_else(|| root.join("target").join("bench"), PathBuf::from);
    let report = std::env::var_os("NBCI_BENCHMARKS_MD")
        .map_or_else(|| root.join("BENCHMARKS.md"), PathBuf::from);
    let plots_dir = report
        .parent()
        .context("BENCHMARKS.md's directory")?
        .join("docs")
        .join("bench");

    let mut all = read_figures(&input)?;
    if all.is_empty() {
        bail!(
            "no figures in {}: run the benchmarks first (make bench)",
            input.display()
        );
    }
    all.sort_by_key(|figures| {
        let rank = ORDER
            .iter()
            .position(|id| *id == figures.id)
            .unwrap_or(ORDER.len());
        (rank, figures.id.clone())
    });

    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("cannot create {}", plots_dir.display()))?;
    let font = find_font(&root);
    let mut text = header(&root, &all, font.as_deref());
    for figures in &all {
        let plots = match &font {
            Some(_) => draw_plots(figures, &plots_dir)?,
            None => Vec::new(),
        };
        section(&mut text, figures, &plots, &report);
    }
    let missing: Vec<&str> = ORDER
        .iter()
        .copied()
        .filter(|id| all.iter().all(|figures| figures.id != *id))
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            text,
            "\n---\n\nNot measured in this run: {} (their figures files were missing from `{}`).",
            missing.join(", "),
            input.display()
        );
        eprintln!("report: not measured in this run: {}", missing.join(", "));
    }
    nbci_shared::util::fs::write_atomically(&report, text.as_bytes(), true)
        .with_context(|| format!("cannot write {}", report.display()))?;
    println!("report: {} ({} sections)", report.display(), all.len());
    Ok(())
}

fn read_figures(dir: &Path) -> anyhow::Result<Vec<Figures>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut all = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let figures: Figures = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a figures file", path.display()))?;
        all.push(figures);
    }
    Ok(all)
}

/// The first TrueType font found, registered with plotters as `sans-serif`.
fn find_font(root: &Path) -> Option<String> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("NBCI_PLOT_FONT")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(libs) = std::fs::read_dir(root.join(".bench-venv").join("lib")) {
        for lib in libs.flatten() {
            candidates.push(
                lib.path()
                    .join("site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf"),
            );
        }
    }
    candidates.push("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
    for path in candidates {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        // plotters keeps registered fonts for the program's life.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
            return Some(path.display().to_string());
        }
    }
    eprintln!("report: no TrueType font found (set NBCI_PLOT_FONT): plots left out");
    None
}

/// Title, how the figures were made, and on what.
fn header(root: &Path, all: &[Figures], font: Option<&str>) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# Benchmarks\n");
    let _ = writeln!(
        text,
        "Generated by `make bench` on {} at commit `{}`; do not edit by hand. Every figure \
         below was measured in that one run and is a ratio against a baseline measured in \
         the same run, rounds alternating between the tools so that machine noise hits all \
         alike. Tests never assert speed; these figures are the record.\n",
        nbci_shared::util::time::now_rfc3339(),
        command(root, "git", &["describe", "--always", "--dirty"]).unwrap_or_else(|| "?".into())
    );
    let _ = writeln!(text, "**Machine.** {}\n", machine(root));
    let _ = writeln!(text, "**Sections.**\n");
    for figures in all {
        let _ = writeln!(text, "- [{}](#{})", figures.title, anchor(&figures.title));
    }
    if font.is_none() {
        let _ = writeln!(
            text,
            "\n(Plots left out: no TrueType font was found when this report was made.)"
        );
    }
    text
}

fn machine(root: &Path) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, model)| {
            model.trim().to_owned()
        });
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.trim().trim_end_matches(" kB").parse::<f64>().ok())
        })
        .map_or("?".to_owned(), |kib| {
            format!("{:.0} GiB", kib / 1024.0 / 1024.0)
        });
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|release| {
            release.lines().find_map(|line| {
                line.strip_prefix("PRETTY_NAME=")
                    .map(|name| name.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    let kernel = command(root, "uname", &["-r"]).unwrap_or_default();
    let rustc = command(root, "rustc", &["--version"]).unwrap_or_default();
    let python = command(root, ".bench-venv/bin/python", &["--version"]).unwrap_or_default();
    let node = command(root, "node", &["--version"]).map(|v| format!("Node {v}"));
    let mut parts = vec![
        format!("{model}, {cores} cores, {memory} of memory"),
        format!("{os} (Linux {kernel})"),
        rustc,
        python,
    ];
    parts.extend(node);
    parts.retain(|part| !part.is_empty());
    parts.join("; ")
}

fn command(root: &Path, program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(root)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// GitHub's heading anchors: lower case, spaces to dashes, punctuation dropped.
fn anchor(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn section(text: &mut String, figures: &Figures, plots: &[(String, PathBuf)], report: &Path) {
    let _ = writeln!(
        text,
        "\n## {}\n\n{}\n",
        figures.title,
        figures.method.trim()
    );
    for table in &figures.tables {
        let _ = writeln!(text, "*{}*\n", table.caption);
        let _ = writeln!(text, "| {} |", table.header.join(" | "));
        let _ = writeln!(
            text,
            "|{}",
            table.header.iter().map(|_| "---|").collect::<String>()
        );
        for row in &table.rows {
            let cells: Vec<String> = row.iter().map(|cell| cell.replace('|', "\\|")).collect();
            let _ = writeln!(text, "| {} |", cells.join(" | "));
        }
        text.push('\n');
    }
    let base = report.parent().unwrap_or(Path::new("."));
    for (caption, path) in plots {
        let relative = path
            .strip_prefix(base)
            .unwrap_or(path)
            .display()
            .to_string();
        let _ = writeln!(text, "![{caption}]({relative})\n");
    }
}

/// Draws the figures' plots; returns (caption, file) for each.
fn draw_plots(figures: &Figures, dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut plots = Vec::new();
    if !figures.latencies_ms.is_empty() {
        let path = dir.join(format!("{}-latency.png", figures.id));
        let caption = format!("{}: latency distribution", figures.title);
        latency_plot(&path, &caption, &figures.latencies_ms)
            .with_context(|| format!("cannot draw {}", path.display()))?;
        plots.push((caption, path));
    }
    for (title, series) in &figures.series {
        let slug: String = anchor(title);
        let path = dir.join(format!("{}-{slug}.png", figures.id));
        line_plot(&path, title, series)
            .with_context(|| format!("cannot draw {}", path.display()))?;
        plots.push((title.clone(), path));
    }
    Ok(plots)
}

/// The share of requests answered within a latency (an empirical CDF), one
/// line per series, latency on a log scale: medians and tails in one view.
fn latency_plot(
    path: &Path,
    caption: &str,
    samples: &BTreeMap<String, Vec<f64>>,
) -> anyhow::Result<()> {
    let positive = |values: &Vec<f64>| -> Vec<f64> {
        let mut sorted: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        sorted.sort_by(f64::total_cmp);
        sorted
    };
    let sorted: BTreeMap<&String, Vec<f64>> = samples
        .iter()
        .map(|(name, values)| (name, positive(values)))
        .filter(|(_, values)| !values.is_empty())
        .collect();
    let low = sorted.values().map(|v| v[0]).fold(f64::INFINITY, f64::min);
    let high = sorted
        .values()
        .map(|v| v[v.len() - 1])
        .fold(0.0_f64, f64::max);
    if sorted.is_empty() || low >= high {
        bail!("no spread of positive samples to plot");
    }
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((low * 0.9..high * 1.1).log_scale(), 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("requests answered within (%)")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (index, (name, values)) in sorted.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let n = values.len() as f64;
        let points = values
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, (i + 1) as f64 * 100.0 / n));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("{name} ({} samples)", values.len()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

fn line_plot(path: &Path, title: &str, series: &Series) -> anyhow::Result<()> {
    let finite = |v: &f64| v.is_finite();
    let x_low = series
        .x
        .iter()
        .copied()
        .filter(finite)
        .fold(f64::INFINITY, f64::min);
    let x_high = series
        .x
        .iter()
        .copied()
        .filter(finite)
        .fold(f64::NEG_INFINITY, f64::max);
    let y_high = series
        .lines
        .values()
        .flatten()
        .copied()
        .filter(finite)
        .fold(0.0_f64, f64::max);
    if x_low.partial_cmp(&x_high) != Some(std::cmp::Ordering::Less) || y_high <= 0.0 {
        bail!("nothing to plot in {title}");
    }
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x_low..x_high, 0.0..y_high * 1.15)?;
    chart
        .configure_mesh()
        .x_desc(series.x_label.as_str())
        .y_desc(series.y_label.as_str())
        .label_style(("sans-serif", 14))
        .draw()?;
    for (index, (name, values)) in series.lines.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let points: Vec<(f64, f64)> = series
            .x
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}
