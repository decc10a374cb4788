//! The handler the event bus delivers to: dispatches go to the CI flow,
//! finalize events of `result.json` objects to the flow whose job wrote them.

use async_trait::async_trait;

use super::ci::{Ci, CiError};
use crate::domain::layout::{ResultKind, classify};
use crate::ports::bus::{HandlerError, Message, MessageHandler};

/// Routes bus messages to the flows.
#[derive(Debug, Clone)]
pub struct Inbox {
    ci: Ci,
}

impl Inbox {
    pub fn new(ci: Ci) -> Self {
        Self { ci }
    }

    /// Handles a finalize event of the object at `key`.
    pub async fn finalized(&self, key: &str) -> Result<(), CiError> {
        match classify(key) {
            ResultKind::Ci { job_prefix } => {
                let handling = self.ci.on_result(job_prefix).await?;
                tracing::debug!(%key, ?handling, "handled a CI result");
            }
            ResultKind::PipelineStep { job_prefix } => {
                tracing::info!(%job_prefix, "a pipeline step's result landed (pipelines are not handled yet)");
            }
            ResultKind::Other => {}
        }
        Ok(())
    }
}

fn handler_error(error: CiError) -> HandlerError {
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
            Message::Dispatch(trigger) => self.ci.dispatch(trigger).await.map(|_| ()),
            Message::Finalized { key, .. } => self.finalized(key).await,
        }
        .map_err(handler_error)
    }
}
