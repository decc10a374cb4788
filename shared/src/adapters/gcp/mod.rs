//! Google Cloud: what Google's services send to ours, and (on other
//! branches) the ports implemented on Google's APIs.
//!
//! # Layout
//! - [`events`]: Cloud Storage object events as Eventarc (binary or
//!   structured CloudEvents) and Pub/Sub push subscriptions deliver them, and
//!   the event bus's messages as Pub/Sub pushes them back to us.

pub mod events;
