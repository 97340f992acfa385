//! Helpers shared by the integration tests.

use std::path::Path;

/// The committed output of a file sink writing to directory `dir`: its
/// `part-*` files (in-progress parts are hidden files) concatenated in
/// name order, i.e. checkpoint order.
pub fn committed_parts(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
        .collect()
}
