//! The metric gate: whether a run's model may replace the one deployed now.
//!
//! The last step writes `metrics.json` into the run's `artifacts_dir`; the
//! gate compares it with the spec's thresholds and, with
//! `better_than_deployed`, with the metrics recorded when the version that
//! serves now was deployed. The decision keeps every check with its reason,
//! passed or failed, because the run's record is what a person reads when a
//! model was (or was not) deployed. Nothing unreadable ever passes: a missing
//! or malformed `metrics.json`, or a metric that is not in it, rejects.
//!
//! `metrics.json` is a JSON object. Nested objects are flattened with dots
//! (`{"eval": {"accuracy": 0.9}}` is the metric `eval.accuracy`), since
//! evaluation libraries commonly group metrics that way; a flattened name
//! that collides with a literal one (`"eval.accuracy"` beside the nested
//! form) makes the file malformed rather than silently picking one. Values
//! that are not numbers (a model name, a list of classes) are not metrics:
//! they are set aside and only a check that names one fails, saying what it is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest `metrics.json` read: the metrics are copied into the run's
/// state, which must stay small.
pub const MAX_METRICS_BYTES: usize = 256 * 1024;

/// How a metric is compared with a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    AtLeast,
    Above,
    AtMost,
    Below,
    Equal,
}

impl Comparison {
    /// The operators in the order they are tried when parsing: two-character
    /// ones first, so `>=` is not read as `>` followed by `=0.9`.
    const ALL: [Self; 5] = [
        Self::AtLeast,
        Self::AtMost,
        Self::Equal,
        Self::Above,
        Self::Below,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtLeast => ">=",
            Self::Above => ">",
            Self::AtMost => "<=",
            Self::Below => "<",
            Self::Equal => "==",
        }
    }

    /// Whether `value` compared with `bound` satisfies this comparison
    /// (`==` is exact: write `>=` and `<=` for a tolerance).
    pub fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Self::AtLeast => value >= bound,
            Self::Above => value > bound,
            Self::AtMost => value <= bound,
            Self::Below => value < bound,
            Self::Equal => value == bound,
        }
    }
}

/// A threshold of the gate, written `">= 0.9"` in the spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub comparison: Comparison,
    /// Finite, so that every comparison means something.
    pub value: f64,
}

impl Threshold {
    /// Parses `">= 0.9"`, `"<0.3"`, `"== 1"`; the reason says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let Some((comparison, rest)) = Comparison::ALL
            .iter()
            .find_map(|c| text.strip_prefix(c.as_str()).map(|rest| (*c, rest)))
        else {
            return Err("it does not start with one of >=, >, <=, <, ==".into());
        };
        let number = rest.trim();
        if number.is_empty() {
            return Err(format!("no number after {}", comparison.as_str()));
        }
        match number.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Self { comparison, value }),
            Ok(_) => Err(format!("{number} is not a finite number")),
            Err(_) => Err(format!("{number:?} is not a number")),
        }
    }

    /// Whether `value` meets the threshold.
    pub fn holds(&self, value: f64) -> bool {
        self.comparison.holds(value, self.value)
    }
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.comparison.as_str(), self.value)
    }
}

impl Serialize for Threshold {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Which way a metric gets better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Accuracy, AUC, F1.
    Higher,
    /// Loss, RMSE, error rate.
    Lower,
}

/// `better_than_deployed`: the new model must be no worse than the one
/// deployed now on this metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BetterThan {
    pub metric: String,
    pub direction: Direction,
}

/// The `gate` section of a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateSpec {
    /// Metric name (dots for nested objects) -> the threshold it must meet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, Threshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub better_than_deployed: Option<BetterThan>,
}

/// Why `metrics.json` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Occurs when the file is larger than [`MAX_METRICS_BYTES`].
    #[error("metrics.json is {size} bytes, more than the {MAX_METRICS_BYTES} read")]
    TooLarge { size: usize },
    /// Occurs when the bytes are not JSON (an empty or truncated file included).
    #[error("metrics.json is not valid JSON: {reason}")]
    NotJson { reason: String },
    /// Occurs when the JSON is valid but not an object of metrics.
    #[error("metrics.json must be a JSON object of numbers, found {found}")]
    NotAnObject { found: &'static str },
    /// Occurs when a nested name flattened with dots is also written literally.
    #[error("metrics.json names the metric `{name}` twice (once nested, once with dots)")]
    Duplicate { name: String },
}

/// The numeric metrics of one model, by flattened name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Name -> value; only numbers are metrics.
    pub values: BTreeMap<String, f64>,
    /// Names whose value is not a number, with what it is ("a string"), so
    /// that a check naming one says so instead of "missing".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub not_numbers: BTreeMap<String, String>,
}

impl Metrics {
    /// Reads `metrics.json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, MetricsError> {
        if bytes.len() > MAX_METRICS_BYTES {
            return Err(MetricsError::TooLarge { size: bytes.len() });
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|error| MetricsError::NotJson {
                reason: error.to_string(),
            })?;
        let Value::Object(object) = value else {
            return Err(MetricsError::NotAnObject {
                found: json_kind(&value),
            });
        };
        let mut metrics = Self::default();
        metrics.flatten("", &object)?;
        Ok(metrics)
    }

    fn flatten(
        &mut self,
        prefix: &str,
        object: &serde_json::Map<String, Value>,
    ) -> Result<(), MetricsError> {
        for (key, value) in object {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let Value::Object(inner) = value {
                self.flatten(&name, inner)?;
                continue;
            }
            if self.values.contains_key(&name) || self.not_numbers.contains_key(&name) {
                return Err(MetricsError::Duplicate { name });
            }
            match value.as_f64() {
                Some(number) => {
                    self.values.insert(name, number);
                }
                None => {
                    self.not_numbers.insert(name, json_kind(value).to_owned());
                }
            }
        }
        Ok(())
    }

    /// The value of a metric, if it is a number.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// Why `name` has no value, for a reason a person reads.
    fn absence(&self, name: &str) -> String {
        match self.not_numbers.get(name) {
            Some(kind) => format!("`{name}` in metrics.json is {kind}, not a number"),
            None => {
                let known: Vec<&str> = self.values.keys().map(String::as_str).collect();
                if known.is_empty() {
                    format!("`{name}` is not in metrics.json (it has no numeric metrics)")
                } else {
                    format!(
                        "`{name}` is not in metrics.json (it has: {})",
                        known.join(", ")
                    )
                }
            }
        }
    }
}

/// The version that serves now and the metrics recorded when it was deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedVersion {
    pub version: String,
    /// The run that deployed it, when nbci did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub metrics: Metrics,
}

/// `pipelines/{pipeline}/deployed.json`: the version serving now (the
/// gate's `better_than_deployed` baseline) and the ones before it, newest
/// first, for `nbci pipeline rollback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployedHistory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<DeployedVersion>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<DeployedVersion>,
}

/// How many earlier versions the history keeps.
const HISTORY: usize = 20;

impl DeployedHistory {
    /// The history after `version` went live; a repeat of the current version changes nothing.
    pub fn deployed(&self, version: DeployedVersion) -> Self {
        let mut next = self.clone();
        if next.current.as_ref().map(|c| &c.version) == Some(&version.version) {
            return next;
        }
        if let Some(current) = next.current.take() {
            next.previous.insert(0, current);
            next.previous.truncate(HISTORY);
        }
        next.current = Some(version);
        next
    }

    /// The history after a rollback to the previous version, and that
    /// version; `None` when there is none to go back to.
    pub fn rolled_back(&self) -> Option<(Self, DeployedVersion)> {
        let mut next = self.clone();
        if next.previous.is_empty() {
            return None;
        }
        let back = next.previous.remove(0);
        next.current = Some(back.clone());
        Some((next, back))
    }
}

/// One check of the gate and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCheck {
    /// What was checked: `accuracy >= 0.9`, `accuracy no worse than deployed`,
    /// `metrics.json`.
    pub check: String,
    pub passed: bool,
    /// Why it passed or failed, with the numbers.
    pub reason: String,
}

/// What the gate decided, with every check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    /// True only when there was at least one check and every check passed.
    pub passed: bool,
    pub checks: Vec<GateCheck>,
    /// The metrics the decision read, recorded so that a deployed run's
    /// metrics become the next run's `better_than_deployed` baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

impl GateDecision {
    /// A rejection for one reason (metrics missing or malformed).
    fn rejected(check: &str, reason: String) -> Self {
        Self {
            passed: false,
            checks: vec![GateCheck {
                check: check.into(),
                passed: false,
                reason,
            }],
            metrics: None,
        }
    }

    /// The failed checks' reasons, joined for one line of a report.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|check| !check.passed)
            .map(|check| check.reason.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl GateSpec {
    /// Whether the gate checks anything at all (a gate that checks nothing
    /// is refused by the spec, since it would pass every model).
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.better_than_deployed.is_none()
    }

    /// Decides on the bytes of `metrics.json` (`None` when the last step did
    /// not write it) against the version deployed now (`None` when nothing
    /// is deployed yet).
    pub fn decide(
        &self,
        metrics_json: Option<&[u8]>,
        deployed: Option<&DeployedVersion>,
    ) -> GateDecision {
        let Some(bytes) = metrics_json else {
            return GateDecision::rejected(
                "metrics.json",
                "metrics.json is missing: the last step did not write it to artifacts_dir".into(),
            );
        };
        match Metrics::parse(bytes) {
            Ok(metrics) => self.decide_on(metrics, deployed),
            Err(error) => GateDecision::rejected("metrics.json", error.to_string()),
        }
    }

    /// Decides on metrics already read.
    pub fn decide_on(&self, metrics: Metrics, deployed: Option<&DeployedVersion>) -> GateDecision {
        let mut checks = Vec::new();
        for (name, threshold) in &self.metrics {
            let check = format!("{name} {threshold}");
            checks.push(match metrics.get(name) {
                Some(value) if threshold.holds(value) => GateCheck {
                    check,
                    passed: true,
                    reason: format!("{name} = {value} meets {threshold}"),
                },
                Some(value) => GateCheck {
                    check,
                    passed: false,
                    reason: format!("{name} = {value} does not meet {threshold}"),
                },
                None => GateCheck {
                    check,
                    passed: false,
                    reason: metrics.absence(name),
                },
            });
        }
        if let Some(better) = &self.better_than_deployed {
            checks.push(compare_with_deployed(better, &metrics, deployed));
        }
        let passed = !checks.is_empty() && checks.iter().all(|check| check.passed);
        GateDecision {
            passed,
            checks,
            metrics: Some(metrics),
        }
    }
}

/// The `better_than_deployed` check. A tie passes: retraining the same
/// model on the same data must not be refused for being merely as good, and
/// the demo's README promises "no worse than the currently deployed model".
fn compare_with_deployed(
    better: &BetterThan,
    metrics: &Metrics,
    deployed: Option<&DeployedVersion>,
) -> GateCheck {
    let name = &better.metric;
    let (word, comparison) = match better.direction {
        Direction::Higher => ("higher", Comparison::AtLeast),
        Direction::Lower => ("lower", Comparison::AtMost),
    };
    let check = format!("{name} no worse than deployed ({word} is better)");
    let Some(value) = metrics.get(name) else {
        return GateCheck {
            check,
            passed: false,
            reason: metrics.absence(name),
        };
    };
    let Some(deployed) = deployed else {
        return GateCheck {
            check,
            passed: true,
            reason: format!("{name} = {value}; nothing is deployed yet"),
        };
    };
    let version = &deployed.version;
    match deployed.metrics.get(name) {
        // Nothing to compare with: a baseline recorded before this metric
        // existed must not block every later model.
        None => GateCheck {
            check,
            passed: true,
            reason: format!(
                "{name} = {value}; the deployed version {version} recorded no {name} to compare with"
            ),
        },
        Some(current) if comparison.holds(value, current) => GateCheck {
            check,
            passed: true,
            reason: format!(
                "{name} = {value} is no worse than {current} of the deployed version {version}"
            ),
        },
        Some(current) => GateCheck {
            check,
            passed: false,
            reason: format!(
                "{name} = {value} is worse than {current} of the deployed version {version}"
            ),
        },
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(thresholds: &[(&str, &str)], better: Option<(&str, Direction)>) -> GateSpec {
        GateSpec {
            metrics: thresholds
                .iter()
                .map(|(name, text)| {
                    (
                        (*name).to_owned(),
                        Threshold::parse(text).expect("threshold"),
                    )
                })
                .collect(),
            better_than_deployed: better.map(|(metric, direction)| BetterThan {
                metric: metric.into(),
                direction,
            }),
        }
    }

    fn deployed(json: &str) -> DeployedVersion {
        DeployedVersion {
            version: "v1".into(),
            run_id: None,
            metrics: Metrics::parse(json.as_bytes()).expect("metrics"),
        }
    }

    #[test]
    fn thresholds_parse_every_operator_and_refuse_the_rest() {
        for (text, comparison, value) in [
            (">= 0.9", Comparison::AtLeast, 0.9),
            (">0.9", Comparison::Above, 0.9),
            ("<= -1e3", Comparison::AtMost, -1000.0),
            (" < 3 ", Comparison::Below, 3.0),
            ("== 1", Comparison::Equal, 1.0),
        ] {
            assert_eq!(
                Threshold::parse(text),
                Ok(Threshold { comparison, value }),
                "{text}"
            );
        }
        for bad in [
            "0.9", "=> 0.9", ">=", ">= abc", ">= nan", ">= inf", "!= 1", "= 1", "",
        ] {
            assert!(Threshold::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Threshold::parse(">=0.9").expect("ok").to_string(), ">= 0.9");
    }

    #[test]
    fn a_passing_model_passes_with_every_reason() {
        let decision = gate(
            &[("accuracy", ">= 0.9")],
            Some(("accuracy", Direction::Higher)),
        )
        .decide(
            Some(br#"{"accuracy": 0.95, "n_test": 30}"#),
            Some(&deployed(r#"{"accuracy": 0.93}"#)),
        );
        assert!(decision.passed);
        assert_eq!(decision.checks.len(), 2);
        assert!(decision.checks.iter().all(|c| c.passed));
        assert!(decision.checks[0].reason.contains("0.95 meets >= 0.9"));
        assert!(decision.checks[1].reason.contains("no worse than 0.93"));
        assert_eq!(decision.metrics.and_then(|m| m.get("n_test")), Some(30.0));
    }

    #[test]
    fn a_threshold_failure_rejects() {
        let decision = gate(&[("accuracy", ">= 0.9"), ("loss", "< 0.5")], None)
            .decide(Some(br#"{"accuracy": 0.8, "loss": 0.1}"#), None);
        assert!(!decision.passed);
        assert!(
            decision.checks[0]
                .reason
                .contains("0.8 does not meet >= 0.9")
        );
        assert!(decision.checks[1].passed, "the passing check is kept too");
        assert!(decision.failures().contains("accuracy"));
    }

    #[test]
    fn worse_than_deployed_rejects_and_a_tie_passes() {
        let g = gate(&[], Some(("accuracy", Direction::Higher)));
        let now = deployed(r#"{"accuracy": 0.93}"#);
        let worse = g.decide(Some(br#"{"accuracy": 0.92}"#), Some(&now));
        assert!(!worse.passed);
        assert!(
            worse.checks[0]
                .reason
                .contains("worse than 0.93 of the deployed version v1")
        );
        assert!(g.decide(Some(br#"{"accuracy": 0.93}"#), Some(&now)).passed);
        let lower = gate(&[], Some(("rmse", Direction::Lower)));
        let now = deployed(r#"{"rmse": 2.0}"#);
        assert!(lower.decide(Some(br#"{"rmse": 1.5}"#), Some(&now)).passed);
        assert!(!lower.decide(Some(br#"{"rmse": 2.5}"#), Some(&now)).passed);
    }

    #[test]
    fn nothing_deployed_or_no_baseline_passes_the_comparison() {
        let g = gate(&[], Some(("accuracy", Direction::Higher)));
        let first = g.decide(Some(br#"{"accuracy": 0.5}"#), None);
        assert!(first.passed);
        assert!(first.checks[0].reason.contains("nothing is deployed yet"));
        let old = g.decide(
            Some(br#"{"accuracy": 0.5}"#),
            Some(&deployed(r#"{"f1": 0.9}"#)),
        );
        assert!(old.passed);
        assert!(old.checks[0].reason.contains("recorded no accuracy"));
    }

    #[test]
    fn missing_or_malformed_metrics_never_pass() {
        let g = gate(
            &[("accuracy", ">= 0.9")],
            Some(("accuracy", Direction::Higher)),
        );
        let missing = g.decide(None, None);
        assert!(!missing.passed);
        assert!(missing.checks[0].reason.contains("metrics.json is missing"));
        for (bytes, expected) in [
            (&b""[..], "not valid JSON"),
            (b"{\"accuracy\": 0.9", "not valid JSON"),
            (b"[0.9]", "found a list"),
            (b"0.95", "found a number"),
            (br#"{"a.b": 1, "a": {"b": 2}}"#, "`a.b` twice"),
        ] {
            let decision = g.decide(Some(bytes), None);
            assert!(!decision.passed, "{bytes:?}");
            assert!(
                decision.checks[0].reason.contains(expected),
                "{:?}",
                decision.checks
            );
        }
        let not_number = g.decide(Some(br#"{"accuracy": "0.95"}"#), None);
        assert!(!not_number.passed);
        assert!(
            not_number.checks[0]
                .reason
                .contains("is a string, not a number")
        );
        let absent = g.decide(Some(br#"{"acc": 0.95}"#), None);
        assert!(
            absent.checks[0]
                .reason
                .contains("not in metrics.json (it has: acc)")
        );
        let huge = vec![b' '; MAX_METRICS_BYTES + 1];
        assert!(
            g.decide(Some(&huge), None).checks[0]
                .reason
                .contains("more than")
        );
    }

    #[test]
    fn nested_metrics_are_flattened_with_dots() {
        let metrics =
            Metrics::parse(br#"{"eval": {"accuracy": 0.9, "per_class": {"a": 1}}, "model": "lr"}"#)
                .expect("metrics");
        assert_eq!(metrics.get("eval.accuracy"), Some(0.9));
        assert_eq!(metrics.get("eval.per_class.a"), Some(1.0));
        assert_eq!(
            metrics.not_numbers.get("model").map(String::as_str),
            Some("a string")
        );
        let decision = gate(&[("eval.accuracy", "== 0.9")], None).decide_on(metrics, None);
        assert!(decision.passed);
    }

    #[test]
    fn a_gate_without_checks_passes_nothing() {
        assert!(GateSpec::default().is_empty());
        assert!(!GateSpec::default().decide(Some(b"{}"), None).passed);
    }

    #[test]
    fn decisions_round_trip_through_json() {
        let decision =
            gate(&[("accuracy", ">= 0.9")], None).decide(Some(br#"{"accuracy": 1}"#), None);
        let text = serde_json::to_string(&decision).expect("json");
        assert_eq!(
            serde_json::from_str::<GateDecision>(&text).expect("back"),
            decision
        );
        let spec = gate(&[("accuracy", ">= 0.9")], Some(("loss", Direction::Lower)));
        let text = serde_json::to_string(&spec).expect("json");
        assert!(text.contains(r#"">= 0.9""#), "{text}");
        assert_eq!(serde_json::from_str::<GateSpec>(&text).expect("back"), spec);
    }
}
