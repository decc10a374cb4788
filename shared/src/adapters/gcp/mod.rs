//! Google Cloud: credentials, the bucket, the cloud executors, and what
//! Google's services send to ours. Nothing here is seen by a flow: flows see the ports these
//! types implement.
//!
//! # Layout
//! - [`auth`]: the one way every Google adapter gets an access token, the
//!   [`TokenSource`](auth::TokenSource) trait, and its Application Default
//!   Credentials implementation (`google-cloud-auth`: the metadata server on
//!   Cloud Run and in jobs, `GCE_METADATA_HOST` in tests, a key file on a laptop).
//! - [`storage`]: [`GcsStore`](storage::GcsStore), the ObjectStore port on a
//!   Cloud Storage bucket (or on fake-gcs-server through
//!   `STORAGE_EMULATOR_HOST`): the official `google-cloud-storage` client
//!   for objects, the JSON API for list, delete and generation (the client
//!   has them only over gRPC, which the emulator does not speak).
//! - [`rest`]: one authenticated JSON call to a Google REST API, and Google's
//!   error body sorted into the executor's rejected and unavailable.
//! - [`jobs`]: what both executors derive from a job the same way: the
//!   runner's arguments (**contract**), labels, durations, the settings.
//! - [`vertex`]: jobs as Vertex AI CustomJobs, the default in the cloud
//!   ([`VertexExecutor`](vertex::VertexExecutor)).
//! - [`ai_platform`]: jobs as legacy AI Platform Training jobs
//!   (`projects.jobs.create`), the seeds' shape, kept for API-compatible
//!   endpoints ([`AiPlatformExecutor`](ai_platform::AiPlatformExecutor)).
//! - [`deploy`]: what both deployers share: [`DeploySettings`](deploy::DeploySettings),
//!   long-running operations, one call either sent or printed by the dry run.
//! - [`ai_platform_deploy`]: models deployed as AI Platform Prediction
//!   versions (`versions.create`, `setDefault`), what the user asked for
//!   ([`AiPlatformDeployer`](ai_platform_deploy::AiPlatformDeployer)).
//! - [`vertex_deploy`]: models deployed on Vertex AI, the live successor
//!   (`models.upload`, `endpoints.deployModel`, the previous model kept with
//!   no traffic) ([`VertexDeployer`](vertex_deploy::VertexDeployer)).
//! - [`events`]: Cloud Storage object events as Eventarc (binary or
//!   structured CloudEvents) and Pub/Sub push subscriptions deliver them, and
//!   the event bus's messages as Pub/Sub pushes them back to us.
//! - [`oidc`]: the Google-signed ID tokens that Cloud Scheduler, Pub/Sub push
//!   and Eventarc present, verified ([`OidcVerifier`](oidc::OidcVerifier):
//!   RS256 only, Google's keys cached and refreshed within a rate limit), and
//!   [`OidcGuard`](oidc::OidcGuard), which puts axum routes behind it.
//! - [`pubsub`]: the event bus on a Pub/Sub topic
//!   ([`PubSubBus`](pubsub::PubSubBus), `google-cloud-pubsub` over gRPC): the
//!   durable dispatch hand-off from github-webhook to `POST /dispatch`,
//!   tested against a Pub/Sub emulator (cloudbox, `make pubsub-emulator`).
//!
//! Every endpoint comes from the settings, so wiremock and API-compatible
//! services work unchanged. Request bodies are checked in the tests against
//! Google's published discovery documents (`tests/fixtures/google/`).

pub mod ai_platform;
pub mod ai_platform_deploy;
pub mod auth;
pub mod deploy;
pub mod events;
pub mod jobs;
pub mod oidc;
pub mod pubsub;
pub mod rest;
pub mod storage;
pub mod vertex;
pub mod vertex_deploy;

pub use storage::{GcsSettings, GcsSetupError, GcsStore};

#[cfg(test)]
pub(crate) mod discovery;
