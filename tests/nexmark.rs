//! The Nexmark queries (our SQL for each, in `tests/nexmark/qN.sql`, written
//! from NEXMARK.md's descriptions with Flink's names and spelling): each
//! must parse, and EXPLAIN must either plan it or answer `not supported yet:
//! <feature>` pointing at a line and column. Never an internal error.

#![allow(clippy::unwrap_used)]

use eddy_planner::{Outcome, PlanErrorKind, Session, SessionError};

/// The queries whose operators exist today.
const PLANNED: &[usize] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 18, 19, 20, 23];

#[test]
fn every_nexmark_query_parses_and_plans_or_says_what_is_missing() {
    let dir = std::path::PathBuf::from(
        // At run time first: a target dir reused from another checkout holds
        // test binaries built there.
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/nexmark");
    let ddl = std::fs::read_to_string(dir.join("ddl.sql")).unwrap();
    let mut planned = Vec::new();
    let mut report = String::new();
    for n in 0..=23 {
        let query = std::fs::read_to_string(dir.join(format!("q{n}.sql"))).unwrap();
        eddy_parser::parse_statements(&query)
            .unwrap_or_else(|e| panic!("q{n} does not parse: {e}"));
        let sql = format!(
            "{ddl}\nEXPLAIN CREATE SINK nexmark_q{n} WITH (connector = 'blackhole') AS\n{query};"
        );
        match Session::new(4).execute(&sql) {
            Ok(outcomes) => {
                let Some(Outcome::Explain(text)) = outcomes.last() else {
                    panic!("q{n}: no EXPLAIN")
                };
                // The joins whose state the watermark bounds are recognised.
                let want = match n {
                    7 => Some("IntervalJoin INNER"),
                    8 => Some("WindowJoin INNER"),
                    // Top-N: q9's winning bid per auction and q18's last
                    // bid are updating; q19 emits its rank.
                    9 | 18 => Some("TopN ROW_NUMBER() OVER"),
                    19 => Some("<= 10, emits rank_number → changelog"),
                    // An OVER window over the updating Top-N.
                    6 => Some("OverAggregate avg(arg0) AS avg OVER (PARTITION BY seller"),
                    _ => None,
                };
                if let Some(want) = want {
                    assert!(text.contains(want), "q{n}: {text}");
                }
                planned.push(n);
                report += &format!("q{n}: planned\n");
            }
            Err(SessionError::Plan(e)) if e.kind == PlanErrorKind::NotSupported => {
                let span = e
                    .span
                    .unwrap_or_else(|| panic!("q{n}: no position for {e}"));
                let at = eddy_parser::line_col(&sql, span.start);
                assert!(
                    span.start >= ddl.len(),
                    "q{n}: the error must point into the query: {e}"
                );
                report += &format!(
                    "q{n}: {} (line {}, column {})\n",
                    e.message, at.line, at.column
                );
            }
            Err(e) => panic!("q{n}: {}", e.render(&sql, &format!("q{n}"))),
        }
    }
    eprint!("{report}");
    assert_eq!(planned, PLANNED, "\n{report}");
}
