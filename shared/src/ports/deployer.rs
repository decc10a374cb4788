//! The Deployer port: where a model version goes live (AI Platform
//! `versions.create`, Vertex AI `models.upload` + `endpoints.deployModel`, a
//! local registry folder). Deployments are long-running: `deploy` starts
//! one and `poll` follows it until it ends.

use async_trait::async_trait;

use super::RemoteError;
use crate::domain::deploy::{DeployOperation, DeployRequest, DeployStatus};

/// Somewhere models are deployed.
#[async_trait]
pub trait Deployer: Send + Sync + std::fmt::Debug {
    /// Starts deploying `request`; idempotent per (model, version).
    async fn deploy(&self, request: &DeployRequest) -> Result<DeployOperation, RemoteError>;
    /// Where a deployment is.
    async fn poll(&self, operation: &DeployOperation) -> Result<DeployStatus, RemoteError>;
    /// Makes `version` of `model` the one that serves again (a rollback).
    async fn set_serving(&self, model: &str, version: &str) -> Result<(), RemoteError>;
}
