//! The engine of notebook-cicd, shared by the `nbci` CLI and the Cloud Run functions.
//!
//! # Layout
//! The parts depend on each other in one direction only (checked by
//! `../shared/hooks/check-layers.py`): domain <- ports <- flows; adapters
//! implement ports; only `wiring` names adapters.
//! - [`domain`]: what nbci reasons about (notebooks, outcomes, jobs, checks,
//!   the bucket's layout), pure: no I/O, no other part of the crate.
//! - [`ports`]: the traits flows reach the world through, and their errors.
//! - [`flows`]: orchestration over ports: the CI flow, the bus's inbox.
//! - [`adapters`]: the ports implemented: [`adapters::local`] (one machine),
//!   [`adapters::github`] (the GitHub App) and [`adapters::gcp`] (Google
//!   Cloud: credentials, the bucket, Vertex AI and AI Platform jobs and
//!   deployers, storage events, the bus on Pub/Sub, Google-signed ID tokens).
//! - [`wiring`]: the one place that builds adapters from the configuration.
//! - [`config`]: every environment variable, typed, read once.
//! - [`http`]: serving, shutdown, trace context, one error type for handlers.
//! - [`telemetry`]: logging set-up: JSON for Cloud Logging, text locally.
//! - [`util`]: neutral helpers (atomic writes, archives, URIs, time, retry).

pub mod adapters;
pub mod config;
pub mod domain;
pub mod flows;
pub mod http;
pub mod ports;
pub mod telemetry;
pub mod util;
pub mod wiring;

#[cfg(test)]
mod testing;

/// Every program built on this crate (the services, `nbci`, their tests)
/// allocates with mimalloc: in issue 11's webhook benchmark, glibc's malloc
/// cost the answer path 51 us of CPU per delivery against 44 us, and the
/// work after the hand-off 89 us against 52 us.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
