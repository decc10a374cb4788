//! The README's configuration table is the configuration itself: this test
//! renders `nbci_shared::config::VARIABLES` and fails, showing the table to
//! paste, when the README says anything else.

use nbci_shared::config::VARIABLES;

use super::common::workspace;

const START: &str =
    "<!-- configuration: generated from shared/src/config.rs, checked by integration::docs -->";
const END: &str = "<!-- end of configuration -->";

/// The table as the README must hold it.
pub fn configuration_table() -> String {
    let mut table = String::from("| variable | default | read by | meaning |\n|---|---|---|---|\n");
    for variable in VARIABLES {
        let services: Vec<&str> = variable.services.iter().map(|s| s.name()).collect();
        let default = match variable.default {
            Some(default) => default.replace('|', "\\|"),
            None => "**required**".to_owned(),
        };
        let secret = if variable.secret { " (secret)" } else { "" };
        table.push_str(&format!(
            "| `{}`{secret} | {default} | {} | {} |\n",
            variable.name,
            services.join(", "),
            variable.meaning.replace('|', "\\|")
        ));
    }
    table
}

#[test]
fn the_readme_lists_every_variable_each_service_reads() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let expected = configuration_table();
    let section = readme
        .split_once(START)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(table, _)| table.trim().to_owned());
    assert_eq!(
        section.as_deref(),
        Some(expected.trim()),
        "README.md's configuration table differs from shared/src/config.rs; it should read:\n\n{START}\n{expected}{END}\n"
    );
}
