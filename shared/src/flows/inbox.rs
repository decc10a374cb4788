//! The handler the event bus delivers to: dispatches go to the CI flow,
//! finalize events of `result.json` objects to the flow whose job wrote them.

use async_trait::async_trait;

use super::ci::{Ci, CiError};
use super::pipeline::{PipelineError, Pipelines};
use crate::domain::layout::{ResultKind, classify};
use crate::ports::bus::{HandlerError, Message, MessageHandler};

/// Routes bus messages to the flows.
#[derive(Debug, Clone)]
pub struct Inbox {
    ci: Option<Ci>,
    pipelines: Option<Pipelines>,
}

/// Why an event could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error(transparent)]
    Ci(#[from] CiError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl InboxError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Ci(error) => error.is_transient(),
            Self::Pipeline(error) => error.is_transient(),
        }
    }
}

impl Inbox {
    /// An inbox for the flows this process runs (`nbci pipeline run` has no CI).
    pub fn new(ci: Option<Ci>, pipelines: Option<Pipelines>) -> Self {
        Self { ci, pipelines }
    }

    /// Handles a finalize event of the object at `key`.
    pub async fn finalized(&self, key: &str) -> Result<(), InboxError> {
        match classify(key) {
            ResultKind::Ci { job_prefix } => {
                if let Some(ci) = &self.ci {
                    let handling = ci.on_result(job_prefix).await?;
                    tracing::debug!(%key, ?handling, "handled a CI result");
                }
            }
            ResultKind::PipelineStep { job_prefix } => {
                if let Some(pipelines) = &self.pipelines {
                    let handling = pipelines.on_result(job_prefix).await?;
                    tracing::debug!(%key, ?handling, "handled a pipeline step's result");
                }
            }
            ResultKind::Other => {}
        }
        Ok(())
    }
}

impl Inbox {
    /// A trigger handed off by the webhook: its notebooks get checks, and a
    /// push to a pipeline's branch starts that pipeline's run.
    async fn dispatched(
        &self,
        trigger: &crate::domain::trigger::Trigger,
    ) -> Result<(), InboxError> {
        if let Some(ci) = &self.ci {
            ci.dispatch(trigger).await?;
        }
        let Some(pipelines) = &self.pipelines else {
            return Ok(());
        };
        if trigger.git_ref.is_none() {
            return Ok(());
        }
        match pipelines.on_push(trigger).await {
            Ok(started) => {
                for (pipeline, outcome) in started {
                    tracing::info!(%pipeline, ?outcome, "a push started a pipeline run");
                }
                Ok(())
            }
            // A repository's nbci.yaml the flow refuses is its author's to
            // fix: logged, not delivered again.
            Err(PipelineError::Refused(reason)) => {
                tracing::warn!(%reason, "a push could not start pipelines");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }
}

fn handler_error(error: InboxError) -> HandlerError {
    if error.is_transient() {
        HandlerError::Transient(error.to_string())
    } else {
        HandlerError::Permanent(error.to_string())
    }
}

#[async_trait]
impl MessageHandler for Inbox {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        match message {
            Message::Dispatch(trigger) => self.dispatched(trigger).await,
            Message::Finalized { key, .. } => self.finalized(key).await,
        }
        .map_err(handler_error)
    }
}
