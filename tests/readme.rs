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

const FLINK_BEGIN: &str = "<!-- flink: each example is checked by `cargo test --test readme` -->\n";
const FLINK_END: &str = "<!-- end of flink -->";

/// README's "Coming from Flink" table against the parser and planner:
/// each example that "runs" plans, each "not supported yet" is refused
/// with a located error.
#[test]
fn the_readme_says_what_runs_unchanged_from_flink() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let (Some(start), Some(end)) = (readme.find(FLINK_BEGIN), readme.find(FLINK_END)) else {
        panic!("README.md has no 'Coming from Flink' table between the markers");
    };
    let ddl = std::fs::read_to_string(root.join("tests/nexmark/ddl.sql")).unwrap()
        + "CREATE TABLE out_table (a BIGINT, b STRING) WITH ('connector' = 'blackhole');\n";
    let mut checked = 0;
    for line in readme[start + FLINK_BEGIN.len()..end].lines().skip(2) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        let [feature, example, verdict] = cells.as_slice() else {
            panic!("a row of three cells: {line}");
        };
        let example = example.trim().trim_matches('`');
        let sql = format!("{ddl}{example};");
        let mut session = eddy_planner::Session::new(2);
        for f in eddy_connectors::nexmark::functions() {
            session.register_function(f).unwrap();
        }
        let result = session.execute(&sql);
        let verdict = verdict.trim();
        if verdict.starts_with("runs") || verdict.starts_with("differs") {
            if let Err(e) = result {
                panic!(
                    "{feature}: README says it runs, but:\n{}",
                    e.render(&sql, "README")
                );
            }
        } else if verdict.starts_with("not supported yet") {
            let Err(e) = result else {
                panic!("{feature}: README says it is not supported yet, but it plans");
            };
            let text = e.render(&sql, "README");
            assert!(
                text.contains("--> README:"),
                "{feature}: not located: {text}"
            );
        } else {
            panic!(
                "{feature}: the verdict must start with 'runs', 'differs' or 'not supported yet': {verdict}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} rows");
}
