//! Order-preserving key encoding: the byte order of an encoded key equals
//! the logical order of its parts, so range scans follow key order.

/// Number of key groups: the unit in which keyed state is partitioned and
/// reassigned between subtasks (as in Flink's max parallelism).
pub const KEY_GROUPS: u16 = 128;

/// The key group of a key hash.
pub fn key_group(hash: u64) -> u16 {
    (hash % KEY_GROUPS as u64) as u16
}

/// The key groups `[start, end)` owned by subtask `index` of `parallelism`.
pub fn key_group_range(index: usize, parallelism: usize) -> (u16, u16) {
    let kg = KEY_GROUPS as usize;
    // Inverse of `subtask_for_key_group` (as Flink computes it).
    let start = (index * kg).div_ceil(parallelism);
    let end = ((index + 1) * kg).div_ceil(parallelism);
    (start as u16, end as u16)
}

/// The subtask (of `parallelism`) that owns `key_group`.
pub fn subtask_for_key_group(key_group: u16, parallelism: usize) -> usize {
    key_group as usize * parallelism / KEY_GROUPS as usize
}

/// Builds an order-preserving composite key.
#[derive(Debug, Default, Clone)]
pub struct KeyBuilder {
    buf: Vec<u8>,
}

impl KeyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u16(mut self, v: u16) -> Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Signed integers sort correctly once the sign bit is flipped.
    pub fn i64(mut self, v: i64) -> Self {
        self.buf
            .extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
        self
    }

    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.buf.extend_from_slice(v);
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.buf
    }
}

/// Decodes an `i64` written by [`KeyBuilder::i64`].
pub fn decode_i64(bytes: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1 << 63)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i64_order_is_byte_order() {
        let vals = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let enc: Vec<_> = vals
            .iter()
            .map(|&v| KeyBuilder::new().i64(v).build())
            .collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            enc.iter()
                .map(|e| decode_i64(e).unwrap())
                .collect::<Vec<_>>(),
            vals
        );
    }

    #[test]
    fn key_groups_cover_every_subtask_once() {
        for p in 1..=8 {
            let mut next = 0;
            for i in 0..p {
                let (s, e) = key_group_range(i, p);
                assert_eq!(s, next);
                for kg in s..e {
                    assert_eq!(subtask_for_key_group(kg, p), i);
                }
                next = e;
            }
            assert_eq!(next, KEY_GROUPS);
        }
    }
}
