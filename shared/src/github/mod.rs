//! GitHub App integration: webhook signatures, app authentication, the REST
//! calls nbci makes (compare, tarball, check runs) and the check-run bodies.
//!
//! # Layout
//! - [`signature`]: `X-Hub-Signature-256` verification, checked before any parsing.
//! - [`events`]: the webhook payloads nbci acts on, and what to do with a delivery.
//! - [`app_auth`]: the App's JWT, installation tokens cached per installation,
//!   and [`Secret`], which never prints.
//! - [`client`]: the REST client (compare, check runs, tarball) with retries
//!   that honour GitHub's rate limits; typed ids and GitHub's error bodies.
//! - [`checks`]: check-run request bodies, built from an execution's outcome
//!   within every limit GitHub sets, and the line of each notebook cell.
//! - [`tarball`]: unpacking a commit's tarball without writing outside the checkout.
//!
//! Everything here takes its endpoint from configuration (`GITHUB_API_URL`),
//! so GitHub Enterprise Server and the fake GitHub of the tests work unchanged.

pub mod app_auth;
pub mod checks;
pub mod client;
pub mod events;
pub mod signature;
pub mod tarball;
mod timestamp;

pub use app_auth::{AppCredentials, AuthError, InstallationTokens, Secret};
pub use checks::{CheckOutput, CreateCheckRun, UpdateCheckRun, cell_start_lines};
pub use client::{
    ChangedFile, ChangedFiles, CheckRunId, ClientError, FileStatus, GitHubClient, GitHubConfig,
    GitHubError, InstallationId, RepoRef, RetryPolicy,
};
pub use events::{Event, EventError, parse_event};
pub use signature::{SignatureError, sign, verify_signature};
pub use tarball::{UnpackError, UnpackSummary, unpack_tarball};
