//! The Pub/Sub push envelope of the dispatch hand-off (`POST /dispatch`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbci_shared::adapters::gcp::events::parse_pushed_message;

fuzz_target!(|data: &[u8]| {
    let _ = parse_pushed_message(data);
});
