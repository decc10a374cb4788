//! The webhook payload parser: any body under any event name GitHub sends
//! (the signature holds, so the body is GitHub's, but its shape is not
//! ours to trust). The first byte picks the event name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbci_shared::adapters::github::events::parse_event;

const EVENTS: &[&str] = &[
    "check_suite",
    "check_run",
    "pull_request",
    "push",
    "ping",
    "issues",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(*first) % EVENTS.len()];
    if let Ok(event) = parse_event(event, body) {
        let _ = event.trigger("fuzz-delivery");
    }
});
