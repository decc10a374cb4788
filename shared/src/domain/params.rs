//! Notebook parameters, read from `-p NAME=VALUE` and `-f params.yaml`.
//!
//! `-p` values are typed exactly as papermill's command line types them
//! (`True`, `False`, `None`, then int, then float, else the string), so a
//! notebook behaves the same under `nbci run` and `papermill`. YAML files keep
//! their own types. Later sources override earlier ones: files in order, then `-p`.

use std::path::Path;

use serde_json::{Map, Value};

/// Named parameter values in the order they were given.
pub type Parameters = Map<String, Value>;

/// Why a parameter could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParameterError {
    /// Occurs when a `-p` argument has no `=`, or its name is not a Python identifier.
    #[error("bad parameter {given:?}: {reason}")]
    BadAssignment { given: String, reason: String },
    /// Occurs when a parameters file cannot be read or is not a YAML mapping.
    #[error("{path}: {reason}")]
    BadFile { path: String, reason: String },
}

/// Parses one `NAME=VALUE` argument into the name and its papermill-typed value.
pub fn parse_assignment(given: &str) -> Result<(String, Value), ParameterError> {
    let (name, raw) = given
        .split_once('=')
        .ok_or_else(|| ParameterError::BadAssignment {
            given: given.into(),
            reason: "expected NAME=VALUE".into(),
        })?;
    let name = name.trim();
    if !is_identifier(name) {
        return Err(ParameterError::BadAssignment {
            given: given.into(),
            reason: format!("{name:?} is not a valid Python variable name"),
        });
    }
    Ok((name.to_owned(), type_like_papermill(raw)))
}

/// Types a command-line value as papermill's `_resolve_type` does.
///
/// Python's `int()`/`float()` accept surrounding white space and `_` between
/// digits, and so does this. Two cases JSON cannot carry stay strings: integers
/// beyond 64 bits and the non-finite floats (`nan`, `inf`).
pub fn type_like_papermill(raw: &str) -> Value {
    match raw {
        "True" => return Value::Bool(true),
        "False" => return Value::Bool(false),
        "None" => return Value::Null,
        _ => {}
    }
    let number = raw.trim();
    if let Some(digits) = python_number_without_underscores(number) {
        if let Ok(int) = digits.parse::<i64>() {
            return Value::from(int);
        }
        let is_int_syntax = digits
            .strip_prefix(['+', '-'])
            .unwrap_or(&digits)
            .bytes()
            .all(|b| b.is_ascii_digit());
        let float = digits
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64);
        if let (false, Some(float)) = (is_int_syntax, float) {
            return Value::Number(float);
        }
    }
    Value::String(raw.to_owned())
}

/// `number` with underscores removed if they sit between two digits (as Python
/// allows), or `None` when an underscore is misplaced.
fn python_number_without_underscores(number: &str) -> Option<String> {
    if number.is_empty() {
        return None;
    }
    let bytes = number.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'_' {
            let before = i.checked_sub(1).and_then(|j| bytes.get(j));
            let after = bytes.get(i + 1);
            if !(before.is_some_and(u8::is_ascii_digit) && after.is_some_and(u8::is_ascii_digit)) {
                return None;
            }
        }
    }
    Some(number.replace('_', ""))
}

/// Whether `name` is a Python identifier (what papermill can inject as a variable).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Reads a YAML parameters file; it must be a mapping from names to values.
pub fn read_file(path: &Path) -> Result<Parameters, ParameterError> {
    let bad = |reason: String| ParameterError::BadFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| {
        bad(format!(
            "cannot read: {}",
            super::notebook::describe_io_error(&error)
        ))
    })?;
    parse_yaml(&text).map_err(bad)
}

/// Parses YAML text into parameters; an empty document is no parameters.
pub fn parse_yaml(text: &str) -> Result<Parameters, String> {
    if text.trim().is_empty() {
        return Ok(Parameters::new());
    }
    let value: Value =
        serde_norway::from_str(text).map_err(|error| format!("not valid YAML: {error}"))?;
    match value {
        Value::Object(map) => {
            for name in map.keys() {
                if !is_identifier(name) {
                    return Err(format!("{name:?} is not a valid Python variable name"));
                }
            }
            Ok(map)
        }
        Value::Null => Ok(Parameters::new()),
        _ => Err("expected a mapping of parameter names to values".into()),
    }
}

/// Merges the sources in papermill's order: each file in turn, then every `-p`.
pub fn collect(
    files: &[impl AsRef<Path>],
    assignments: &[String],
) -> Result<Parameters, ParameterError> {
    let mut parameters = Parameters::new();
    for file in files {
        parameters.extend(read_file(file.as_ref())?);
    }
    for assignment in assignments {
        let (name, value) = parse_assignment(assignment)?;
        parameters.insert(name, value);
    }
    Ok(parameters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_typed_like_papermill() {
        let cases = [
            ("True", json!(true)),
            ("False", json!(false)),
            ("None", json!(null)),
            ("true", json!("true")),
            ("12", json!(12)),
            ("-3", json!(-3)),
            (" 7 ", json!(7)),
            ("1_000", json!(1000)),
            ("007", json!(7)),
            ("0.5", json!(0.5)),
            ("1e3", json!(1000.0)),
            (".5", json!(0.5)),
            ("1_0.5", json!(10.5)),
            ("1__0", json!("1__0")),
            ("_1", json!("_1")),
            ("nan", json!("nan")),
            ("inf", json!("inf")),
            ("99999999999999999999999", json!("99999999999999999999999")),
            ("hello", json!("hello")),
            ("", json!("")),
            ("a=b", json!("a=b")),
        ];
        for (raw, expected) in cases {
            assert_eq!(type_like_papermill(raw), expected, "typing {raw:?}");
        }
    }

    #[test]
    fn assignments_split_on_the_first_equals_sign() {
        assert_eq!(
            parse_assignment("query=a=b").expect("valid"),
            ("query".into(), json!("a=b"))
        );
        assert!(parse_assignment("novalue").is_err());
        assert!(parse_assignment("1x=3").is_err());
        assert!(parse_assignment("has space=3").is_err());
    }

    #[test]
    fn command_line_overrides_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, "rows: 10\nname: iris\nratio: 0.2\n").expect("write");
        let merged = collect(&[&file], &["rows=20".into()]).expect("valid");
        assert_eq!(
            json!(merged),
            json!({"rows": 20, "name": "iris", "ratio": 0.2})
        );
    }

    #[test]
    fn files_that_are_not_mappings_are_rejected() {
        assert!(parse_yaml("- 1\n- 2\n").is_err());
        assert!(parse_yaml("key: [unclosed").is_err());
        assert!(parse_yaml("\n").expect("empty").is_empty());
        assert!(parse_yaml("1bad: 3").is_err());
    }
}
