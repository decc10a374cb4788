//! The GitHub App: webhook signatures and payloads, App authentication, the
//! REST calls nbci makes, the check-run bodies, and [`app::GitHubApp`], which
//! implements the CheckRuns and Sources ports.
//!
//! # Layout
//! - [`signature`]: `X-Hub-Signature-256` verification, checked before any parsing.
//! - [`events`]: the webhook payloads nbci acts on, and the trigger each asks for.
//! - [`app_auth`]: the App's JWT and installation tokens cached per installation.
//! - [`client`]: the REST client (compare, check runs, tarball) with retries
//!   that honour GitHub's rate limits; GitHub's error bodies.
//! - [`checks`]: check-run request bodies, built from an execution's outcome
//!   within every limit GitHub sets, and the line of each notebook cell.
//! - [`app`]: the ports on top: tokens per call, a new token after a 401,
//!   GitHub's errors sorted into transient and permanent.
//!
//! Everything here takes its endpoint from configuration (`GITHUB_API_URL`),
//! so GitHub Enterprise Server and the fake GitHub of the tests work unchanged.

pub mod app;
pub mod app_auth;
pub mod checks;
pub mod client;
pub mod events;
pub mod signature;

pub use app::GitHubApp;
pub use app_auth::{AppCredentials, AuthError, InstallationTokens};
pub use checks::{CheckOutput, CreateCheckRun, UpdateCheckRun, cell_start_lines};
pub use client::{
    ChangedFile, ChangedFiles, ClientError, FileStatus, GitHubClient, GitHubConfig, GitHubError,
    RetryPolicy,
};
pub use events::{Event, EventError, parse_event};
pub use signature::{SignatureCheck, SignatureError, sign, verify_signature};
