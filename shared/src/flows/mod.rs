//! Flows: orchestration over ports only. They decide what happens next and
//! call ports to make it happen; they never name an adapter, an SDK or a
//! wire type, so their tests need neither Python nor HTTP.
//!
//! # Layout
//! - [`ci`]: trigger -> one durable check per changed notebook -> completed check runs.
//! - [`pipeline`]: a pipeline run, step by step, through the gate to a deployment.
//! - [`inbox`]: what the event bus delivers, routed to the flows.

pub mod ci;
pub mod inbox;
pub mod pipeline;

#[cfg(test)]
mod interleavings;
