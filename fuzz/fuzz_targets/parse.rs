//! Fuzz the parser: any input must give statements or errors, never a
//! panic, a hang or a stack overflow; whatever parses must print and parse
//! again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let (statements, errors) = eddy_parser::parse_statements_lenient(sql);
    for e in &errors {
        // Rendering must handle any span the parser reports.
        let _ = eddy_parser::render_diagnostic(sql, "fuzz", e.span, &e.message);
    }
    for s in &statements {
        let printed = s.to_string();
        if let Err(e) = eddy_parser::parse_statements(&printed) {
            panic!("{sql:?} printed as {printed:?} does not parse: {e}");
        }
    }
    let _ = eddy_parser::parse_expr(sql);
});
