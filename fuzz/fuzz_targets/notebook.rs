//! The notebook reader: any bytes as a committed notebook, then what nbci
//! reads from one (its cloud environment, its parameters cell).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbci_shared::domain::notebook::Notebook;

fuzz_target!(|data: &[u8]| {
    if let Ok(notebook) = Notebook::parse(std::path::Path::new("fuzz.ipynb"), data) {
        let _ = notebook.environment();
        let _ = notebook.has_parameters_cell();
        let _ = notebook.first_error(&notebook);
    }
});
