//! Helpers shared by the operators' tests.

use std::collections::BTreeMap;

use crate::updating::{OP_DELETE, OP_UPDATE_BEFORE};

/// A small deterministic generator (an LCG): the tests need no seed file.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The net effect of a changelog: each row with how many times it is
/// present at the end (rows that cancel out are left out).
pub fn net<K: Ord + Clone>(changes: &[(i8, K)]) -> BTreeMap<K, i64> {
    let mut net = BTreeMap::new();
    for (op, row) in changes {
        let d = if matches!(*op, OP_DELETE | OP_UPDATE_BEFORE) {
            -1
        } else {
            1
        };
        *net.entry(row.clone()).or_insert(0) += d;
    }
    net.retain(|_, n| *n != 0);
    net
}
