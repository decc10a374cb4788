//! Logging set-up shared by every binary.
//!
//! On Cloud Run (`K_SERVICE` is set) each event is one JSON line whose `severity`
//! field Cloud Logging understands, with the request's trace (see
//! [`crate::http::with_trace`]); elsewhere logs are readable text on stderr.
//! `RUST_LOG` filters as usual (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are ignored (tests call it freely).
pub fn init() {
    init_with(std::env::var_os("K_SERVICE").is_some());
}

/// Like [`init`], with JSON lines for Cloud Logging whatever the environment
/// (a cloud job: Vertex AI and AI Platform collect its stderr).
pub fn init_json() {
    init_with(true);
}

fn init_with(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if json {
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .event_format(CloudLoggingFormat)
            .try_init();
    } else {
        // Colours only for a terminal: a log file or a pipe gets plain text
        // (and each line costs less to write).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init();
    }
}

// The trace of the request being served.

tokio::task_local! {
    /// The trace id of the request being served, for log lines.
    static TRACE: String;
}

/// The trace id of the current request, if it came with one.
pub fn current_trace() -> Option<String> {
    TRACE.try_with(Clone::clone).ok()
}

/// `future` with the current request's trace id, for work spawned past the answer.
pub async fn keep_trace<F: std::future::Future>(trace: Option<String>, future: F) -> F::Output {
    match trace {
        Some(trace) => TRACE.scope(trace, future).await,
        None => future.await,
    }
}

/// The 32-hex-digit trace id of a request.
pub fn trace_of(headers: &axum::http::HeaderMap) -> Option<String> {
    let is_trace = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(value) = headers
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
    {
        let id = value.split('/').next().unwrap_or_default();
        if is_trace(id) {
            return Some(id.to_ascii_lowercase());
        }
    }
    let parent = headers.get("traceparent").and_then(|v| v.to_str().ok())?;
    let id = parent.split('-').nth(1)?;
    is_trace(id).then(|| id.to_ascii_lowercase())
}

/// One JSON object per event with `severity`, `message` and the event's fields,
/// the shape Cloud Logging parses from a container's output.
struct CloudLoggingFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for CloudLoggingFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let mut line = fields.0;
        let severity = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            _ => "DEBUG",
        };
        line.insert("severity".into(), severity.into());
        if let Some(trace) = current_trace() {
            // Cloud Logging groups a request's lines by this field.
            let trace = match std::env::var("GOOGLE_CLOUD_PROJECT") {
                Ok(project) if !project.is_empty() => format!("projects/{project}/traces/{trace}"),
                _ => trace,
            };
            line.insert("logging.googleapis.com/trace".into(), trace.into());
        }
        line.insert("target".into(), event.metadata().target().into());
        let text = serde_json::Value::Object(line).to_string();
        writeln!(writer, "{text}")
    }
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}
