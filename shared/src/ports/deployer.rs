//! The Deployer port: where a model version goes live (AI Platform
//! `versions.create`, Vertex AI `models.upload` + `endpoints.deployModel`, a
//! local registry folder).
//!
//! Deployments are long-running (an AI Platform version or a Vertex AI
//! deployed model takes minutes to come up), and in the cloud nbci follows
//! them across Scheduler ticks rather than inside one request: `deploy`
//! starts one and returns a handle that the run records, `poll` looks once
//! at where it is and finishes what follows it (AI Platform's `setDefault`).
//! `poll` takes the request again because the handle alone does not say
//! what to finish with, and a run can always rebuild its request
//! ([`PipelineRun::deploy_request`](crate::domain::pipeline::PipelineRun::deploy_request)).
//! Callers that may block (the local CLI, tests) use [`wait_for_deploy`].
//!
//! Both `deploy` and `poll` may be repeated after an answer was lost: a
//! repeated `deploy` of the same (model, version) finds the version it
//! created the first time instead of creating a second one, and a repeated
//! `poll` of a finished deployment answers the same.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::RemoteError;
use crate::domain::deploy::{DeployOperation, DeployRequest, DeployStatus, PlannedRequest};
use crate::util::retry::Backoff;

/// Somewhere models are deployed.
#[async_trait]
pub trait Deployer: Send + Sync + std::fmt::Debug {
    /// Starts deploying `request`; idempotent per (model, version).
    async fn deploy(&self, request: &DeployRequest) -> Result<DeployOperation, RemoteError>;

    /// Where the deployment `operation` of `request` is; when it is done,
    /// also makes the version serve if `request.set_default` asks for it,
    /// before answering [`DeployStatus::Deployed`].
    async fn poll(
        &self,
        request: &DeployRequest,
        operation: &DeployOperation,
    ) -> Result<DeployStatus, RemoteError>;

    /// Makes `version` of `model` the one that serves again (a rollback).
    /// The version must still be there: each deployer keeps at least the
    /// version that served before the last deploy.
    async fn set_serving(&self, model: &str, version: &str) -> Result<(), RemoteError>;

    /// The version of `model` that serves now, if any does.
    async fn serving(&self, model: &str) -> Result<Option<String>, RemoteError>;

    /// The REST requests `deploy` and `poll` would send for `request`, in
    /// order, without sending any (`nbci pipeline deploy --dry-run`); none
    /// for a target that calls no API. An error names what makes the
    /// request impossible (a model name that cannot be a URL segment).
    fn plan(&self, request: &DeployRequest) -> Result<Vec<PlannedRequest>, RemoteError>;
}

/// Deploys `request` and polls until the deployment ends, waiting
/// `backoff` between looks (and at least what a transient error asked
/// for); transient errors are tried again until `timeout`. Answers
/// [`DeployStatus::Pending`] when the deployment is still going at
/// `timeout`. For callers that can wait in place (the local CLI, tests);
/// the cloud flows poll once per Scheduler tick instead.
pub async fn wait_for_deploy(
    deployer: &dyn Deployer,
    request: &DeployRequest,
    backoff: Backoff,
    timeout: Duration,
) -> Result<DeployStatus, RemoteError> {
    let deadline = Instant::now() + timeout;
    let mut failures = 0u32;
    let operation = loop {
        match deployer.deploy(request).await {
            Ok(operation) => break operation,
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                failures = failures.saturating_add(1);
                pause(
                    backoff.delay_with_hint(failures, error.retry_after()),
                    deadline,
                )
                .await;
            }
            Err(error) => return Err(error),
        }
    };
    let mut looks = 0u32;
    loop {
        match deployer.poll(request, &operation).await {
            Ok(DeployStatus::Pending) => {}
            Ok(ended) => return Ok(ended),
            Err(error) if error.is_transient() => {
                if Instant::now() >= deadline {
                    return Err(error);
                }
            }
            Err(error) => return Err(error),
        }
        if Instant::now() >= deadline {
            return Ok(DeployStatus::Pending);
        }
        looks = looks.saturating_add(1);
        pause(backoff.delay(looks), deadline).await;
    }
}

/// Sleeps `wait`, but not past `deadline`.
async fn pause(wait: Duration, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(wait.min(left)).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A deployer that answers from a script.
    #[derive(Debug)]
    struct Scripted {
        deploys: Mutex<Vec<Result<DeployOperation, RemoteError>>>,
        polls: Mutex<Vec<Result<DeployStatus, RemoteError>>>,
    }

    #[async_trait]
    impl Deployer for Scripted {
        async fn deploy(&self, _: &DeployRequest) -> Result<DeployOperation, RemoteError> {
            self.deploys.lock().expect("lock").remove(0)
        }
        async fn poll(
            &self,
            _: &DeployRequest,
            _: &DeployOperation,
        ) -> Result<DeployStatus, RemoteError> {
            let mut polls = self.polls.lock().expect("lock");
            if polls.len() > 1 {
                polls.remove(0)
            } else {
                polls[0].clone()
            }
        }
        async fn set_serving(&self, _: &str, _: &str) -> Result<(), RemoteError> {
            Ok(())
        }
        async fn serving(&self, _: &str) -> Result<Option<String>, RemoteError> {
            Ok(None)
        }
        fn plan(&self, _: &DeployRequest) -> Result<Vec<PlannedRequest>, RemoteError> {
            Ok(Vec::new())
        }
    }

    fn request() -> DeployRequest {
        DeployRequest {
            model: "m".into(),
            version: "v1".into(),
            artifact_uri: "gs://b/m".into(),
            framework: "SCIKIT_LEARN".into(),
            runtime_version: None,
            python_version: None,
            machine_type: None,
            image: None,
            set_default: true,
            labels: Default::default(),
            metrics: Default::default(),
        }
    }

    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));

    #[tokio::test]
    async fn waits_through_pending_and_transient_errors() {
        let deployer = Scripted {
            deploys: Mutex::new(vec![
                Err(RemoteError::transient("503")),
                Ok(DeployOperation("op".into())),
            ]),
            polls: Mutex::new(vec![
                Ok(DeployStatus::Pending),
                Err(RemoteError::transient("503")),
                Ok(DeployStatus::Pending),
                Ok(DeployStatus::Deployed {
                    version: "v1".into(),
                }),
            ]),
        };
        let status = wait_for_deploy(&deployer, &request(), FAST, Duration::from_secs(10))
            .await
            .expect("deployed");
        assert_eq!(
            status,
            DeployStatus::Deployed {
                version: "v1".into()
            }
        );
    }

    #[tokio::test]
    async fn permanent_errors_end_it_and_time_runs_out_pending() {
        let refused = Scripted {
            deploys: Mutex::new(vec![Err(RemoteError::Permanent("no".into()))]),
            polls: Mutex::new(vec![Ok(DeployStatus::Pending)]),
        };
        let error = wait_for_deploy(&refused, &request(), FAST, Duration::from_secs(10))
            .await
            .expect_err("refused");
        assert!(!error.is_transient());

        let slow = Scripted {
            deploys: Mutex::new(vec![Ok(DeployOperation("op".into()))]),
            polls: Mutex::new(vec![Ok(DeployStatus::Pending)]),
        };
        let status = wait_for_deploy(&slow, &request(), FAST, Duration::from_millis(20))
            .await
            .expect("still pending");
        assert_eq!(status, DeployStatus::Pending);
    }
}
