//! README's tables of connector options are the registry's declarations:
//! generated from them, and checked here so the two cannot drift.
//! `EDDY_BLESS=1 cargo test --test readme` rewrites the section.

#![allow(clippy::unwrap_used)]

use eddy_connectors::ConnectorRegistry;

const BEGIN: &str =
    "<!-- connectors: generated from the registry by `EDDY_BLESS=1 cargo test --test readme` -->\n";
const END: &str = "<!-- end of connectors -->";

#[test]
fn the_readme_documents_every_connector_option_as_declared() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no connectors section between the markers");
    };
    let generated = eddy_connectors::registry::markdown(&ConnectorRegistry::default());
    let current = &readme[start + BEGIN.len()..end];
    if current == generated {
        return;
    }
    if std::env::var("EDDY_BLESS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{BEGIN}{generated}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "README.md's connector tables differ from the registry; run `EDDY_BLESS=1 cargo test --test readme` and check the diff"
    );
}
