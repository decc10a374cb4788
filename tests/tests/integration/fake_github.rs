//! A strict fake GitHub on wiremock.
//!
//! It checks what the real one checks, and what the REST API description
//! requires: the App JWT on the token exchange (RS256 signature with the
//! test public key, `iat` in the past, `exp` at most 10 minutes ahead, `iss`
//! the App id), the installation token on every API call, and every check-run
//! body against the description's rules (required fields, enums, 65535, 50,
//! 20 and 40 limits). Any request it does not expect is answered 418 and
//! listed by [`FakeGitHub::unexpected`], so a test can fail loudly on it.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::common::workspace;

pub const APP_ID: &str = "424242";
pub const INSTALLATION: u64 = 957387;
pub const TOKEN: &str = "ghs_fakeInstallationToken0123456789";
pub const OWNER: &str = "Codertocat";
pub const REPO: &str = "Hello-World";

pub fn private_key_pem() -> String {
    std::fs::read_to_string(workspace().join("tests/fixtures/github/test-app-key.pkcs1.pem"))
        .expect("test key")
}

fn public_key_pem() -> Vec<u8> {
    std::fs::read(workspace().join("tests/fixtures/github/test-app-key.pub.pem")).expect("pub key")
}

/// One check-run call the fake accepted.
#[derive(Debug, Clone)]
pub struct CheckCall {
    pub method: String,
    pub id: u64,
    pub body: Value,
    /// When the fake took the call (its whole body received).
    #[allow(dead_code)] // read by the latency benchmark
    pub at: std::time::Instant,
}

/// A fault the fake injects into matching calls (see [`FakeGitHub::inject`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer this status (with GitHub's error body) and do nothing.
    Status(u16),
    /// Do the work (create or update the run), then answer 502 as if the
    /// answer were lost on the way back.
    LoseAnswer,
    /// Answer normally, after this long.
    Delay(std::time::Duration),
}

#[derive(Debug)]
struct Injected {
    method: String,
    path_contains: String,
    fault: Fault,
    remaining: usize,
}

#[derive(Debug, Default)]
struct Journal {
    checks: Vec<CheckCall>,
    problems: Vec<String>,
    token_exchanges: usize,
    /// Installation tokens issued and then revoked (see [`FakeGitHub::revoke_token`]).
    revoked: Vec<String>,
    /// Calls refused because they carried a revoked token.
    revoked_refusals: usize,
    /// Every check run as GitHub holds it now (creation merged with updates).
    runs: std::collections::BTreeMap<u64, Value>,
    faults: Vec<Injected>,
}

impl Journal {
    /// The installation token GitHub accepts now: [`TOKEN`] until it is
    /// revoked, then one new token per revocation.
    fn current_token(&self) -> String {
        match self.revoked.len() {
            0 => TOKEN.to_owned(),
            n => format!("ghs_fakeInstallationTokenAfterRevocation{n}"),
        }
    }

    /// Whether `request` carries the current installation token; a revoked
    /// one is counted (a 401 the App must recover from), anything else is a
    /// problem.
    fn token_ok(&mut self, request: &Request) -> bool {
        let header = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let given = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("token "))
            .unwrap_or("");
        if given == self.current_token() {
            return true;
        }
        if self.revoked.iter().any(|t| t == given) {
            self.revoked_refusals += 1;
        } else {
            self.problems.push(format!(
                "{} {} without the installation token",
                request.method,
                request.url.path()
            ));
        }
        false
    }

    /// The fault for this call, if one is armed (and counts it down).
    fn take_fault(&mut self, request: &Request) -> Option<Fault> {
        let path = request.url.path();
        let at = self.faults.iter().position(|f| {
            f.remaining > 0
                && f.method.eq_ignore_ascii_case(request.method.as_str())
                && path.contains(&f.path_contains)
        })?;
        let injected = &mut self.faults[at];
        injected.remaining -= 1;
        Some(injected.fault.clone())
    }
}

pub struct FakeGitHub {
    pub server: MockServer,
    journal: Arc<Mutex<Journal>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Checks the App JWT as GitHub does.
fn jwt_problem(authorization: Option<&str>) -> Option<String> {
    let token = authorization.and_then(|h| h.strip_prefix("Bearer "))?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public_key_pem()).expect("public key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[APP_ID]);
    validation.leeway = 0;
    match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Err(error) => Some(format!("JWT rejected: {error}")),
        Ok(data) => {
            let iat = data.claims["iat"].as_u64().unwrap_or(u64::MAX);
            let exp = data.claims["exp"].as_u64().unwrap_or(u64::MAX);
            let now = now();
            if iat > now {
                Some(format!("iat {iat} is in the future (now {now})"))
            } else if exp > now + 600 {
                Some(format!(
                    "exp {exp} is more than 10 minutes ahead (now {now})"
                ))
            } else if exp <= iat {
                Some("exp is not after iat".into())
            } else {
                None
            }
        }
    }
}

struct TokenExchange(Arc<Mutex<Journal>>);

impl Respond for TokenExchange {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let mut journal = self.0.lock().expect("journal");
        journal.token_exchanges += 1;
        let problem = match authorization {
            None => Some("token exchange without Authorization".to_owned()),
            Some(header) if !header.starts_with("Bearer ") => {
                Some("token exchange with a non-Bearer authorization".to_owned())
            }
            Some(_) => jwt_problem(authorization),
        };
        if let Some(problem) = problem {
            journal.problems.push(problem.clone());
            return ResponseTemplate::new(401).set_body_json(json!({
                "message": problem, "documentation_url": "https://docs.github.com/rest"}));
        }
        let expires = SystemTime::now() + std::time::Duration::from_secs(3600);
        let expires: chrono_free::Rfc3339 = expires.into();
        ResponseTemplate::new(201).set_body_json(json!({
            "token": journal.current_token(),
            "expires_at": expires.0,
            "permissions": {"checks": "write", "contents": "read"},
            "repository_selection": "all"
        }))
    }
}

/// Formats a time as RFC 3339 without pulling a date crate into the tests.
mod chrono_free {
    pub struct Rfc3339(pub String);
    impl From<std::time::SystemTime> for Rfc3339 {
        fn from(time: std::time::SystemTime) -> Self {
            let secs = time
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let days = secs / 86_400;
            let rem = secs % 86_400;
            let (y, m, d) = civil_from_days(i64::try_from(days).expect("days"));
            Rfc3339(format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60
            ))
        }
    }
    /// Howard Hinnant's days-to-civil algorithm.
    fn civil_from_days(z: i64) -> (i64, u32, u32) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).expect("day");
        let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).expect("month");
        (if m <= 2 { y + 1 } else { y }, m, d)
    }
}

struct CheckRuns {
    journal: Arc<Mutex<Journal>>,
    next_id: Arc<AtomicU64>,
}

impl Respond for CheckRuns {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let at = std::time::Instant::now();
        let mut journal = self.journal.lock().expect("journal");
        if !journal.token_ok(request) {
            return ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"}));
        }
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(error) => {
                journal
                    .problems
                    .push(format!("check-run body is not JSON: {error}"));
                return ResponseTemplate::new(400)
                    .set_body_json(json!({"message": "Problems parsing JSON"}));
            }
        };
        let creating = request.method.as_str() == "POST";
        let violations = nbci_shared::adapters::github::checks::rule_violations(&body, creating);
        if !violations.is_empty() {
            journal
                .problems
                .push(format!("check-run body breaks the rules: {violations:?}"));
            return ResponseTemplate::new(422).set_body_json(json!({
                "message": "Validation Failed", "errors": violations}));
        }
        let fault = journal.take_fault(request);
        if let Some(Fault::Status(status)) = fault {
            return ResponseTemplate::new(status)
                .set_body_json(json!({"message": format!("injected {status}")}));
        }
        let id = if creating {
            self.next_id.fetch_add(1, Ordering::SeqCst)
        } else {
            request
                .url
                .path()
                .rsplit('/')
                .next()
                .and_then(|id| id.parse().ok())
                .unwrap_or(0)
        };
        if !creating && !journal.runs.contains_key(&id) {
            journal
                .problems
                .push(format!("PATCH of check run {id}, which was never created"));
            return ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}));
        }
        journal.checks.push(CheckCall {
            method: request.method.to_string(),
            id,
            body: body.clone(),
            at,
        });
        let run = journal.runs.entry(id).or_insert_with(|| json!({"id": id}));
        if let (Some(run), Some(update)) = (run.as_object_mut(), body.as_object()) {
            for (key, value) in update {
                run.insert(key.clone(), value.clone());
            }
        }
        let answer = run.clone();
        match fault {
            Some(Fault::LoseAnswer) => ResponseTemplate::new(502)
                .set_body_string("<html><body>502 Bad Gateway</body></html>"),
            Some(Fault::Delay(delay)) => ResponseTemplate::new(if creating { 201 } else { 200 })
                .set_body_json(answer)
                .set_delay(delay),
            _ => ResponseTemplate::new(if creating { 201 } else { 200 }).set_body_json(answer),
        }
    }
}

/// `GET /repos/{owner}/{repo}/check-runs/{id}`: the run as GitHub holds it
/// (creation merged with updates), or GitHub's 404 for an id it never gave.
struct GetCheckRun(Arc<Mutex<Journal>>);

impl Respond for GetCheckRun {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut journal = self.0.lock().expect("journal");
        if !journal.token_ok(request) {
            return ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"}));
        }
        let fault = journal.take_fault(request);
        if let Some(Fault::Status(status)) = fault {
            return ResponseTemplate::new(status)
                .set_body_json(json!({"message": format!("injected {status}")}));
        }
        let id: Option<u64> = request
            .url
            .path()
            .rsplit('/')
            .next()
            .and_then(|id| id.parse().ok());
        let Some(run) = id.and_then(|id| journal.runs.get(&id)) else {
            return ResponseTemplate::new(404).set_body_json(json!({
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest/checks/runs#get-a-check-run",
                "status": "404"}));
        };
        // A run created without a status is queued, as GitHub has it.
        let mut run = run.clone();
        if run.get("status").is_none() {
            run["status"] = json!("queued");
        }
        let answer = ResponseTemplate::new(200).set_body_json(run);
        match fault {
            Some(Fault::LoseAnswer) => ResponseTemplate::new(502)
                .set_body_string("<html><body>502 Bad Gateway</body></html>"),
            Some(Fault::Delay(delay)) => answer.set_delay(delay),
            _ => answer,
        }
    }
}

/// `GET /repos/{owner}/{repo}/commits/{ref}/check-runs`: the runs GitHub holds
/// for the commit, filtered by `check_name`, as the REST API lists them.
struct ListCheckRuns(Arc<Mutex<Journal>>);

impl Respond for ListCheckRuns {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut journal = self.0.lock().expect("journal");
        if !journal.token_ok(request) {
            return ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"}));
        }
        if let Some(Fault::Status(status)) = journal.take_fault(request) {
            return ResponseTemplate::new(status)
                .set_body_json(json!({"message": format!("injected {status}")}));
        }
        let sha = request
            .url
            .path()
            .split('/')
            .nth(5)
            .unwrap_or_default()
            .to_owned();
        let query: std::collections::HashMap<String, String> =
            request.url.query_pairs().into_owned().collect();
        if query.get("filter").map(String::as_str) != Some("all") {
            journal.problems.push(format!(
                "check runs listed without filter=all: {}",
                request.url
            ));
        }
        let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let per_page: usize = query
            .get("per_page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(30);
        let matching: Vec<Value> = journal
            .runs
            .values()
            .filter(|run| run["head_sha"] == sha.as_str())
            .filter(|run| {
                query
                    .get("check_name")
                    .is_none_or(|name| run["name"] == name.as_str())
            })
            .cloned()
            .collect();
        let total = matching.len();
        let page_runs: Vec<Value> = matching
            .into_iter()
            .skip(per_page * page.saturating_sub(1))
            .take(per_page)
            .collect();
        ResponseTemplate::new(200)
            .set_body_json(json!({"total_count": total, "check_runs": page_runs}))
    }
}

/// The head of every branch the fake knows.
pub const BRANCH_HEAD: &str = "5555555555555555555555555555555555555555";

/// A call GitHub accepts only with the App's own JWT.
struct AppAuthorized<T: Respond>(T, Arc<Mutex<Journal>>);

impl<T: Respond> Respond for AppAuthorized<T> {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let authorization = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let problem = match authorization {
            None => Some(format!("{} without the App's JWT", request.url.path())),
            Some(_) => jwt_problem(authorization),
        };
        if let Some(problem) = problem {
            self.1.lock().expect("journal").problems.push(problem);
            return ResponseTemplate::new(401)
                .set_body_json(json!({"message": "A JSON web token could not be decoded"}));
        }
        self.0.respond(request)
    }
}

struct Authorized<T: Respond>(T, Arc<Mutex<Journal>>);

impl<T: Respond> Respond for Authorized<T> {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !self.1.lock().expect("journal").token_ok(request) {
            return ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"}));
        }
        self.0.respond(request)
    }
}

impl FakeGitHub {
    /// A fake GitHub for one repository whose commit `head` changes `files`
    /// (compare answers) and whose tarball at `head` holds `tree`.
    pub async fn start(head: &str, changed: &[(&str, &str)], tree: &[(&str, Vec<u8>)]) -> Self {
        Self::start_matching(head, &head[..7], changed, tree, &[]).await
    }

    /// Like [`FakeGitHub::start`], for every commit: each one changes
    /// `changed` and holds `tree`.
    pub async fn start_for_any_commit(changed: &[(&str, &str)], tree: &[(&str, Vec<u8>)]) -> Self {
        Self::start_matching("[0-9a-f]{40}", "any", changed, tree, &[]).await
    }

    /// Like [`FakeGitHub::start_for_any_commit`], with symbolic links
    /// (path, target) in the tarball beside the files.
    pub async fn start_with_links(
        changed: &[(&str, &str)],
        tree: &[(&str, Vec<u8>)],
        links: &[(&str, &str)],
    ) -> Self {
        Self::start_matching("[0-9a-f]{40}", "any", changed, tree, links).await
    }

    async fn start_matching(
        head: &str,
        short: &str,
        changed: &[(&str, &str)],
        tree: &[(&str, Vec<u8>)],
        links: &[(&str, &str)],
    ) -> Self {
        let server = MockServer::start().await;
        let journal = Arc::new(Mutex::new(Journal::default()));
        Mock::given(method("POST"))
            .and(path(format!(
                "/app/installations/{INSTALLATION}/access_tokens"
            )))
            .respond_with(TokenExchange(journal.clone()))
            .with_priority(1)
            .mount(&server)
            .await;
        let files: Vec<Value> = changed
            .iter()
            .map(|(name, status)| {
                json!({"filename": name, "status": status, "sha": "0".repeat(40),
                                         "additions": 1, "deletions": 0, "changes": 1})
            })
            .collect();
        Mock::given(method("GET"))
            .and(path_regex(format!(
                r"^/repos/{OWNER}/{REPO}/compare/[0-9a-zA-Z_./-]+\.\.\.{head}$"
            )))
            .respond_with(Authorized(
                ResponseTemplate::new(200).set_body_json(json!({
                    "status": "ahead", "ahead_by": 1, "behind_by": 0, "total_commits": 1,
                    "commits": [], "files": files})),
                journal.clone(),
            ))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(format!(
                "^/repos/{OWNER}/{REPO}/tarball/{head}$"
            )))
            .respond_with(Authorized(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "application/x-gzip")
                    .set_body_bytes(tarball_with_links(
                        &format!("{OWNER}-{REPO}-{short}"),
                        tree,
                        links,
                    )),
                journal.clone(),
            ))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(format!(
                r"^/repos/{OWNER}/{REPO}/commits/[0-9a-f]{{40}}/check-runs$"
            )))
            .respond_with(ListCheckRuns(journal.clone()))
            .with_priority(1)
            .mount(&server)
            .await;
        // Before the route of creations and updates, which takes any method.
        Mock::given(method("GET"))
            .and(path_regex(format!(
                r"^/repos/{OWNER}/{REPO}/check-runs/[0-9]+$"
            )))
            .respond_with(GetCheckRun(journal.clone()))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(path_regex(format!(
            r"^/repos/{OWNER}/{REPO}/check-runs(/[0-9]+)?$"
        )))
        .respond_with(CheckRuns {
            journal: journal.clone(),
            next_id: Arc::new(AtomicU64::new(1000)),
        })
        .with_priority(1)
        .mount(&server)
        .await;
        // What a Scheduler tick asks: the App's installation on the
        // repository (as the App), the default branch, a branch's head.
        Mock::given(method("GET"))
            .and(path(format!("/repos/{OWNER}/{REPO}/installation")))
            .respond_with(AppAuthorized(
                ResponseTemplate::new(200).set_body_json(json!({"id": INSTALLATION, "app_id": 1})),
                journal.clone(),
            ))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/repos/{OWNER}/{REPO}")))
            .respond_with(Authorized(
                ResponseTemplate::new(200).set_body_json(json!({
                    "full_name": format!("{OWNER}/{REPO}"), "default_branch": "master"})),
                journal.clone(),
            ))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(format!(
                r"^/repos/{OWNER}/{REPO}/commits/[A-Za-z0-9_.-]+$"
            )))
            .respond_with(Authorized(
                ResponseTemplate::new(200).set_body_json(json!({"sha": BRANCH_HEAD})),
                journal.clone(),
            ))
            .with_priority(2)
            .mount(&server)
            .await;
        // Anything else is a call nbci should not have made.
        Mock::given(wiremock::matchers::any())
            .respond_with(
                ResponseTemplate::new(418).set_body_json(json!({"message": "unexpected call"})),
            )
            .with_priority(10)
            .mount(&server)
            .await;
        Self { server, journal }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Check-run calls accepted so far, in order.
    pub fn check_calls(&self) -> Vec<CheckCall> {
        self.journal.lock().expect("journal").checks.clone()
    }

    /// Rule violations and authentication problems seen so far.
    pub fn problems(&self) -> Vec<String> {
        self.journal.lock().expect("journal").problems.clone()
    }

    /// Arms `fault` for the next `times` calls whose method is `method` and
    /// whose path contains `path_contains` (check runs: their creation,
    /// updates, reads and listing).
    pub fn inject(&self, method: &str, path_contains: &str, fault: Fault, times: usize) {
        self.journal.lock().expect("journal").faults.push(Injected {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Every check run as GitHub holds it now, by id.
    pub fn runs(&self) -> std::collections::BTreeMap<u64, Value> {
        self.journal.lock().expect("journal").runs.clone()
    }

    pub fn token_exchanges(&self) -> usize {
        self.journal.lock().expect("journal").token_exchanges
    }

    /// Revokes the installation token GitHub accepts now, as an admin (or
    /// GitHub itself) may at any time: calls with it get 401 from here on,
    /// and the next token exchange issues a new one.
    pub fn revoke_token(&self) -> String {
        let mut journal = self.journal.lock().expect("journal");
        let token = journal.current_token();
        journal.revoked.push(token.clone());
        token
    }

    /// Every installation token issued so far (the revoked ones and the current one).
    pub fn issued_tokens(&self) -> Vec<String> {
        let journal = self.journal.lock().expect("journal");
        let mut tokens = journal.revoked.clone();
        tokens.push(journal.current_token());
        tokens
    }

    /// Calls refused because they carried a revoked token.
    pub fn revoked_refusals(&self) -> usize {
        self.journal.lock().expect("journal").revoked_refusals
    }

    /// Requests no mock expected (answered 418).
    pub async fn unexpected(&self) -> Vec<String> {
        let known = [
            "/app/installations/",
            &format!("/repos/{OWNER}/{REPO}/compare/"),
            &format!("/repos/{OWNER}/{REPO}/tarball/"),
            &format!("/repos/{OWNER}/{REPO}/check-runs"),
            &format!("/repos/{OWNER}/{REPO}/commits/"),
            &format!("/repos/{OWNER}/{REPO}/installation"),
        ];
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() != format!("/repos/{OWNER}/{REPO}"))
            .filter(|r| !known.iter().any(|k| r.url.path().starts_with(k)))
            .map(|r| format!("{} {}", r.method, r.url))
            .collect()
    }
}

/// A gzip tarball laid out as GitHub's: one top-level directory.
pub fn tarball(top: &str, files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    tarball_with_links(top, files, &[])
}

/// [`tarball`] with symbolic links (path, target), targets written as given.
pub fn tarball_with_links(top: &str, files: &[(&str, Vec<u8>)], links: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{top}/{name}"), bytes.as_slice())
            .expect("append");
    }
    for (name, target) in links {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_cksum();
        builder
            .append_link(&mut header, format!("{top}/{name}"), target)
            .expect("append link");
    }
    let mut gz = builder.into_inner().expect("tar");
    gz.flush().expect("flush");
    gz.finish().expect("gzip")
}
