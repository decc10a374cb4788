//! Google Cloud: the ports implemented on Google's services, through the
//! official `google-cloud-*` crates where they serve the need, and the JSON
//! APIs over `reqwest` where they do not (calls the crates offer only over
//! gRPC, which the emulators do not speak).
//!
//! # Layout
//! - [`storage`]: [`GcsStore`](storage::GcsStore), the ObjectStore port on a
//!   Cloud Storage bucket (or on fake-gcs-server through
//!   `STORAGE_EMULATOR_HOST`), with generation preconditions as
//!   `ifGenerationMatch` and files streamed in and out.
//!
//! Credentials are Application Default Credentials (`google-cloud-auth`);
//! every endpoint can be pointed at an emulator or a fake for tests.

pub mod storage;

pub use storage::{GcsSettings, GcsSetupError, GcsStore};
