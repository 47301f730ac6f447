//! A set of window ids as one bit per id between the smallest and the largest: what a
//! filtered search asks of every record of the index ("is this window picked?").
//!
//! Window ids are dense integers (SQLite row ids, only ever growing), so the picked windows
//! of a 10⁷-window database fit in ~1.2 MB, where a hash set of them took ~300 MB and a
//! hashing per record. Ids spread far apart (a row id set by hand) are kept sorted
//! instead, so the bits never outgrow the ids themselves.

/// Ids from a slice; membership in O(1) (dense) or O(log n) (sparse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSet {
    Dense { first: i64, bits: Vec<u64> },
    Sparse(Vec<i64>),
}

impl IdSet {
    pub fn new(ids: &[i64]) -> IdSet {
        let (Some(&first), Some(&last)) = (ids.iter().min(), ids.iter().max()) else {
            return IdSet::Sparse(Vec::new());
        };
        // Bits only while they take no more room than the ids as i64s would.
        let span = last.abs_diff(first).saturating_add(1);
        if span > 64 * ids.len() as u64 {
            let mut sorted = ids.to_vec();
            sorted.sort_unstable();
            return IdSet::Sparse(sorted);
        }
        let mut bits = vec![0u64; (span as usize).div_ceil(64)];
        for &id in ids {
            let at = (id - first) as usize;
            bits[at / 64] |= 1 << (at % 64);
        }
        IdSet::Dense { first, bits }
    }

    pub fn contains(&self, id: i64) -> bool {
        match self {
            IdSet::Dense { first, bits } => {
                let Some(at) = id.checked_sub(*first).filter(|at| *at >= 0) else {
                    return false;
                };
                let at = at as usize;
                bits.get(at / 64)
                    .is_some_and(|word| word >> (at % 64) & 1 == 1)
            }
            IdSet::Sparse(sorted) => sorted.binary_search(&id).is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_its_ids_dense_or_sparse() {
        let dense = [
            70_000_000_005,
            70_000_000_000,
            70_000_000_063,
            70_000_000_064,
        ];
        let sparse = [3, 70_000_000_000, i64::MAX];
        for ids in [&dense[..], &sparse[..]] {
            let set = IdSet::new(ids);
            for id in (69_999_999_990..70_000_000_080).chain([0, 3, i64::MAX, i64::MIN]) {
                assert_eq!(set.contains(id), ids.contains(&id), "{id} in {ids:?}");
            }
        }
        assert!(matches!(IdSet::new(&dense), IdSet::Dense { .. }));
        assert!(matches!(IdSet::new(&sparse), IdSet::Sparse(_)));
        assert!(!IdSet::new(&[]).contains(0));
    }
}
