//! The `nbci.yaml` parser: any text as a repository's pipeline spec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbci_shared::domain::pipeline::spec::PipelineSpec;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PipelineSpec::parse(text, |path| path.ends_with(".ipynb"));
    }
});
