//! Workspace-level integration tests: the `nbci` binary on real notebooks with
//! real papermill and ipykernel, and the GCS adapter on a real fake-gcs-server
//! (both from the venv `make setup` creates).
//!
//! One test binary; each module is one area. `make test` builds the binaries
//! first; a missing binary or interpreter fails with the command that fixes it.
//! `infra` needs neither: it parses infra/ and compares it with the code.

mod integration {
    pub mod check;
    pub mod cloud_loop;
    pub mod common;
    pub mod conformance;
    pub mod docs;
    pub mod durability;
    pub mod fake_cloud;
    pub mod fake_gcs;
    pub mod fake_github;
    pub mod faults;
    pub mod forked_kernels;
    pub mod fuzz_regressions;
    pub mod gcs;
    pub mod github_flow;
    pub mod hostile_clients;
    pub mod hostile_paths;
    pub mod hostile_repos;
    pub mod infra;
    pub mod pipeline;
    pub mod run;
    pub mod security;
}
