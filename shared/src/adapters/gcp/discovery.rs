//! Test-only: checks JSON bodies against schemas of Google's published
//! discovery documents, so a request body that Google would refuse (an
//! unknown field, an `int64` sent as a number, an accelerator Google does
//! not have) fails here rather than in production.
//!
//! The schemas are verbatim subsets of the documents, kept in
//! `tests/fixtures/google/` with their source (see `extract.py` there). A
//! `$ref` to a schema the subset does not hold is itself a failure: a body
//! that starts using a new part of the API needs that part's schema first.
//!
//! Discovery documents have no `required` list; Google marks such fields
//! with a description that starts "Required." and fields a client must not
//! send with "Output only.". Both are checked on requests; a few "Required."
//! fields hold only for other kinds of job (AI Platform's `packageUris` and
//! `pythonModule` are for Python packages, not custom containers) and are
//! named as exemptions by the test that sends the body.

use std::path::PathBuf;

use serde_json::{Map, Value};

/// Which way a body travels: requests must not carry output-only fields and
/// must carry required ones; answers may do both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
}

/// The schemas (and methods, where the subset has them) of one discovery
/// document subset.
#[derive(Debug)]
pub(crate) struct Discovery {
    schemas: Map<String, Value>,
    /// Method id (`ml.projects.models.create`) -> the method: HTTP verb,
    /// `flatPath`, parameters, request and response schema.
    methods: Map<String, Value>,
    file: String,
}

/// The subset of aiplatform v1 with CustomJob and what it references.
pub(crate) const AIPLATFORM: &str = "aiplatform-v1-custom-job.json";
/// The subset of ml v1 with Job and its TrainingInput.
pub(crate) const ML: &str = "ml-v1-job.json";
/// The subset of aiplatform v1 that deploying uses: models.upload,
/// endpoints (create, deployModel, undeployModel, patch), operations.
pub(crate) const AIPLATFORM_DEPLOY: &str = "aiplatform-v1-deploy.json";
/// The subset of ml v1 that deploying uses: models, versions, setDefault, operations.
pub(crate) const ML_DEPLOY: &str = "ml-v1-deploy.json";

/// Query parameters every Google API method takes (the discovery
/// documents' top-level `parameters`).
const STANDARD_PARAMETERS: [&str; 11] = [
    "$.xgafv",
    "access_token",
    "alt",
    "callback",
    "fields",
    "key",
    "oauth_token",
    "prettyPrint",
    "quotaUser",
    "uploadType",
    "upload_protocol",
];

impl Discovery {
    /// Loads `tests/fixtures/google/{file}`.
    pub(crate) fn load(file: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/google")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let document: Value = serde_json::from_str(&text).expect("a discovery subset");
        let Some(Value::Object(schemas)) = document.get("schemas").cloned() else {
            panic!("{file} has no schemas");
        };
        let methods = match document.get("methods") {
            Some(Value::Object(methods)) => methods.clone(),
            _ => Map::new(),
        };
        Self {
            schemas,
            methods,
            file: file.to_owned(),
        }
    }

    /// Which of the subset's methods a call is (`http_method` to `url`: only
    /// its path and query count, so wiremock's host and Google's both do),
    /// and everything wrong with it: a path no method has, a query
    /// parameter the method does not take, a body where the method takes
    /// none, or a body that is not the method's request schema. `exempt` is
    /// as for [`Self::problems`].
    pub(crate) fn check_call(
        &self,
        http_method: &str,
        url: &str,
        body: Option<&Value>,
        exempt: &[&str],
    ) -> Result<String, Vec<String>> {
        let url = url::Url::parse(url).map_err(|e| vec![format!("{url:?}: {e}")])?;
        let path = percent_encoding::percent_decode_str(url.path())
            .decode_utf8_lossy()
            .trim_start_matches('/')
            .to_owned();
        let found: Vec<(&String, &Value)> = self
            .methods
            .iter()
            .filter(|(_, method)| {
                method["httpMethod"].as_str() == Some(http_method)
                    && method["flatPath"]
                        .as_str()
                        .is_some_and(|flat| path_pattern(flat).is_match(&path))
            })
            .collect();
        let (id, method) = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(vec![format!(
                    "{http_method} {path}: no method of {} has this verb and path",
                    self.file
                )]);
            }
            many => {
                let ids: Vec<&str> = many.iter().map(|(id, _)| id.as_str()).collect();
                return Err(vec![format!("{http_method} {path}: ambiguous, {ids:?}")]);
            }
        };
        let mut problems = Vec::new();
        for (key, _) in url.query_pairs() {
            let declared = method["parameters"][key.as_ref()]["location"].as_str() == Some("query");
            if !declared && !STANDARD_PARAMETERS.contains(&key.as_ref()) {
                problems.push(format!("{id}: takes no query parameter {key:?}"));
            }
        }
        let body = body.filter(|b| !b.is_null());
        match (method["request"]["$ref"].as_str(), body) {
            (Some(schema), Some(body)) => {
                problems.extend(self.problems(schema, body, Direction::Request, exempt));
            }
            (Some(schema), None) => problems.push(format!("{id}: needs a {schema} body")),
            (None, Some(body)) => problems.push(format!("{id}: takes no body, got {body}")),
            (None, None) => {}
        }
        if problems.is_empty() {
            Ok(id.clone())
        } else {
            Err(problems)
        }
    }

    /// The method id of a call, panicking with every problem it has.
    pub(crate) fn assert_call(
        &self,
        http_method: &str,
        url: &str,
        body: Option<&Value>,
        exempt: &[&str],
    ) -> String {
        match self.check_call(http_method, url, body, exempt) {
            Ok(id) => id,
            Err(problems) => panic!(
                "{http_method} {url}\n{}\nis not a valid call of {}:\n  {}",
                body.map(|b| format!("{b:#}")).unwrap_or_default(),
                self.file,
                problems.join("\n  ")
            ),
        }
    }

    /// The schema a method answers with.
    pub(crate) fn response_schema(&self, method_id: &str) -> String {
        self.methods[method_id]["response"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{method_id} has no response schema"))
            .to_owned()
    }

    /// The values of the enum of `schema.property`.
    pub(crate) fn enum_values(&self, schema: &str, property: &str) -> Vec<String> {
        self.schemas[schema]["properties"][property]["enum"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_else(|| panic!("{schema}.{property} has no enum"))
    }

    /// Everything wrong with `body` as a `schema`; `exempt` names required
    /// fields (`Schema.field`) that do not apply to this body.
    pub(crate) fn problems(
        &self,
        schema: &str,
        body: &Value,
        direction: Direction,
        exempt: &[&str],
    ) -> Vec<String> {
        let mut walk = Walk {
            discovery: self,
            direction,
            exempt,
            problems: Vec::new(),
        };
        walk.schema(schema, body, "$");
        walk.problems
    }

    /// Panics with every problem of `body` as a `schema`.
    pub(crate) fn assert_valid(
        &self,
        schema: &str,
        body: &Value,
        direction: Direction,
        exempt: &[&str],
    ) {
        let problems = self.problems(schema, body, direction, exempt);
        assert!(
            problems.is_empty(),
            "{body:#}\nis not a valid {schema} ({}):\n  {}",
            self.file,
            problems.join("\n  ")
        );
    }
}

struct Walk<'a> {
    discovery: &'a Discovery,
    direction: Direction,
    exempt: &'a [&'a str],
    problems: Vec<String>,
}

impl Walk<'_> {
    fn fail(&mut self, at: &str, problem: impl std::fmt::Display) {
        self.problems.push(format!("{at}: {problem}"));
    }

    /// `value` as the named schema.
    fn schema(&mut self, name: &str, value: &Value, at: &str) {
        let Some(schema) = self.discovery.schemas.get(name) else {
            self.fail(
                at,
                format!("schema {name} is not in the fixture: add it before sending it"),
            );
            return;
        };
        self.object(name, schema, value, at);
    }

    /// `value` as an object schema (named, or inline with `name` its parent's).
    fn object(&mut self, name: &str, schema: &Value, value: &Value, at: &str) {
        let Some(fields) = value.as_object() else {
            self.fail(at, format!("expected an object ({name}), found {value}"));
            return;
        };
        if let Some(extra) = schema.get("additionalProperties") {
            for (key, item) in fields {
                self.property(extra, item, &format!("{at}.{key}"));
            }
            return;
        }
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (key, item) in fields {
            let here = format!("{at}.{key}");
            match properties.get(key) {
                None => self.fail(&here, format!("{name} has no field {key:?}")),
                Some(spec) => {
                    if self.direction == Direction::Request && describes(spec, "Output only.") {
                        self.fail(&here, "output only: a request must not set it");
                    }
                    self.property(spec, item, &here);
                }
            }
        }
        if self.direction == Direction::Request {
            for (key, spec) in properties {
                let qualified = format!("{name}.{key}");
                if describes(spec, "Required.")
                    && !fields.contains_key(key)
                    && !self.exempt.contains(&qualified.as_str())
                {
                    self.fail(at, format!("required field {key:?} is missing"));
                }
            }
        }
    }

    /// `value` as one property's spec.
    fn property(&mut self, spec: &Value, value: &Value, at: &str) {
        if let Some(reference) = spec.get("$ref").and_then(Value::as_str) {
            self.schema(reference, value, at);
            return;
        }
        let kind = spec.get("type").and_then(Value::as_str).unwrap_or("");
        let format = spec.get("format").and_then(Value::as_str).unwrap_or("");
        match kind {
            "string" => self.string(spec, format, value, at),
            "integer" => {
                let ok = match format {
                    "int32" => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                    "uint32" => value.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
                    _ => value.is_i64() || value.is_u64(),
                };
                if !ok {
                    self.fail(
                        at,
                        format!("expected a JSON integer ({format}), found {value}"),
                    );
                }
            }
            "number" => {
                if !value.is_number() {
                    self.fail(at, format!("expected a number, found {value}"));
                }
            }
            "boolean" => {
                if !value.is_boolean() {
                    self.fail(at, format!("expected a boolean, found {value}"));
                }
            }
            "array" => match (value.as_array(), spec.get("items")) {
                (Some(items), Some(item_spec)) => {
                    for (i, item) in items.iter().enumerate() {
                        self.property(item_spec, item, &format!("{at}[{i}]"));
                    }
                }
                _ => self.fail(at, format!("expected an array, found {value}")),
            },
            "object" => self.object("object", spec, value, at),
            "any" => {}
            other => self.fail(
                at,
                format!("the schema has type {other:?}, unknown to the checker"),
            ),
        }
    }

    fn string(&mut self, spec: &Value, format: &str, value: &Value, at: &str) {
        let Some(text) = value.as_str() else {
            let hint = if matches!(format, "int64" | "uint64") {
                " (Google's JSON spells 64-bit integers as strings)"
            } else {
                ""
            };
            self.fail(at, format!("expected a string{hint}, found {value}"));
            return;
        };
        let ok = match format {
            "int64" => text.parse::<i64>().is_ok(),
            "uint64" => text.parse::<u64>().is_ok(),
            "google-duration" => is_duration(text),
            "google-datetime" => text.parse::<jiff::Timestamp>().is_ok(),
            _ => true,
        };
        if !ok {
            self.fail(at, format!("{text:?} is not a valid {format}"));
        }
        if let Some(values) = spec.get("enum").and_then(Value::as_array)
            && !values.iter().any(|v| v.as_str() == Some(text))
        {
            self.fail(at, format!("{text:?} is not one of the enum's values"));
        }
    }
}

/// A method's `flatPath` (`v1/projects/{projectsId}/models/{modelsId}:x`)
/// as a pattern of paths: each `{...}` one segment without `:`.
fn path_pattern(flat_path: &str) -> regex::Regex {
    let mut pattern = String::from("^");
    let mut rest = flat_path;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        pattern.push_str("[^/:]+");
        rest = rest[open..]
            .find('}')
            .map_or("", |close| &rest[open + close + 1..]);
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    regex::Regex::new(&pattern).unwrap_or_else(|e| panic!("{flat_path}: {e}"))
}

/// Whether a property's description starts with `marker`.
fn describes(spec: &Value, marker: &str) -> bool {
    spec.get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.trim_start().starts_with(marker))
}

/// `google-duration`: seconds with up to nine fractional digits, then `s`.
fn is_duration(text: &str) -> bool {
    let Some(number) = text.strip_suffix('s') else {
        return false;
    };
    let number = number.strip_prefix('-').unwrap_or(number);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 9
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && fraction.is_empty() != number.contains('.')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn custom_job() -> Value {
        json!({
            "displayName": "nbci demo",
            "jobSpec": {
                "workerPoolSpecs": [{
                    "machineSpec": {"machineType": "n1-standard-4"},
                    "replicaCount": "1",
                    "containerSpec": {"imageUri": "gcr.io/x", "args": ["runner"]}
                }],
                "scheduling": {"timeout": "3600s"}
            },
            "labels": {"nbci_job": "abc"}
        })
    }

    fn problems(body: &Value) -> Vec<String> {
        Discovery::load(AIPLATFORM).problems(
            "GoogleCloudAiplatformV1CustomJob",
            body,
            Direction::Request,
            &[],
        )
    }

    #[test]
    fn a_valid_body_passes() {
        assert_eq!(problems(&custom_job()), Vec::<String>::new());
    }

    #[test]
    fn the_checker_catches_what_google_would_refuse() {
        let cases: [(&str, Value, &str); 8] = [
            ("/displayName", json!(null), "expected a string"),
            (
                "/jobSpec/workerPoolSpecs/0/replicaCount",
                json!(1),
                "64-bit integers as strings",
            ),
            (
                "/jobSpec/workerPoolSpecs/0/machineSpec/acceleratorType",
                json!("NVIDIA_TESLA_T5"),
                "not one of the enum's values",
            ),
            (
                "/jobSpec/workerPoolSpecs/0/machineSpec/acceleratorCount",
                json!("1"),
                "expected a JSON integer",
            ),
            (
                "/jobSpec/scheduling/timeout",
                json!("1h"),
                "not a valid google-duration",
            ),
            ("/state", json!("JOB_STATE_RUNNING"), "output only"),
            ("/labels/x", json!(1), "expected a string"),
            (
                "/jobSpec/workerPoolSpecs/0/diskSpec",
                json!({"bootDiskSizeGb": 100}),
                "not in the fixture",
            ),
        ];
        for (pointer, value, expected) in cases {
            let mut body = custom_job();
            let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
            let parent = body.pointer_mut(parent).expect("parent");
            parent[key] = value;
            let problems = problems(&body);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{pointer}: {problems:?}"
            );
        }
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let mut body = custom_job();
        body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["arguments"] = json!([]);
        if let Some(fields) = body.as_object_mut() {
            fields.remove("displayName");
        }
        let problems = problems(&body);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("has no field \"arguments\"")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("required field \"displayName\"")),
            "{problems:?}"
        );
    }

    #[test]
    fn calls_are_matched_to_methods_with_their_query_and_body() {
        let ml = Discovery::load(ML_DEPLOY);
        assert_eq!(
            ml.check_call(
                "POST",
                "http://127.0.0.1:1/v1/projects/p/models",
                Some(&json!({"name": "m", "regions": ["us-central1"]})),
                &[],
            ),
            Ok("ml.projects.models.create".to_owned())
        );
        assert_eq!(
            ml.check_call(
                "GET",
                "https://ml.googleapis.com/v1/projects/p/operations/{OPERATION_ID}",
                None,
                &[]
            ),
            Ok("ml.projects.operations.get".to_owned())
        );
        assert_eq!(
            ml.check_call(
                "POST",
                "https://ml.googleapis.com/v1/projects/p/models/m/versions/v1:setDefault",
                Some(&json!({})),
                &[]
            ),
            Ok("ml.projects.models.versions.setDefault".to_owned())
        );
        let cases: [(&str, &str, Option<Value>, &str); 5] = [
            (
                "DELETE",
                "http://h/v1/projects/p/models/m",
                None,
                "no method",
            ),
            ("POST", "http://h/v1/projects/p/models", None, "needs a"),
            (
                "GET",
                "http://h/v1/projects/p/models/m",
                Some(json!({})),
                "takes no body",
            ),
            (
                "GET",
                "http://h/v1/projects/p/models/m?pageSize=1",
                None,
                "no query parameter",
            ),
            (
                "POST",
                "http://h/v1/projects/p/models",
                Some(json!({"name": "m", "region": "x"})),
                "has no field",
            ),
        ];
        for (method, url, body, expected) in cases {
            let problems = ml
                .check_call(method, url, body.as_ref(), &[])
                .expect_err(url);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{method} {url}: {problems:?}"
            );
        }
        assert_eq!(
            ml.response_schema("ml.projects.models.versions.create"),
            "GoogleLongrunning__Operation"
        );
    }

    #[test]
    fn durations_are_google_s() {
        for good in ["0s", "3600s", "1.5s", "-2s", "0.000000001s"] {
            assert!(is_duration(good), "{good}");
        }
        for bad in ["", "s", "1", "1m", "1.s", ".5s", "1.0000000001s", "1e3s"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }
}
