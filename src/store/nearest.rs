//! Ranking the search index (`codes.rs`) against a query: which stored windows are worth
//! an exact rescore. Reads the code file only; knows nothing of SQLite.
//!
//! Rules, and why:
//! - **Every record is looked at, cheaply, and only a few closely**: Hamming distance for
//!   all, the centred query against the bits for a shortlist, exact cosines (by the caller)
//!   for the best of those — each step ~50× dearer per window than the one before.
//! - **Scanned where it lies, on every core**: 4 MiB reads into a reused buffer per
//!   thread, so memory does not grow with the file (720 MB at 10⁷ windows).

use std::collections::BinaryHeap;
use std::fs::File;
use std::path::Path;

use super::codes::{codes_path, header_len, read_space_from};

/// What ranking a code file found: the best candidates by Hamming distance to the query's
/// bits (nearest first, each id once), how many records were ranked, and the highest
/// window id the file has a code for (0 when none).
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub candidates: Vec<i64>,
    pub ranked: u64,
    pub last_id: i64,
}

/// Bytes each scanning thread reads at a time: big enough that a read costs nothing
/// beside the scan, small enough that a search's memory does not grow with the file.
const READ_CHUNK: usize = 4 << 20;

/// How many records each step of [`rank`] keeps, for a file of so many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub shortlist: usize,
    pub keep: usize,
}

/// Ranks every record of `<db>-codes` against `query` and returns the best candidates for
/// which `keep(id)` holds, in two steps over the codes alone (`counts(records)` says how
/// many each keeps):
/// 1. **Hamming distance** between the query's sign bits and each record's — a popcount of
///    a few words, so every record can afford it — keeps a shortlist;
/// 2. **the centred query against their sign bits** (the sum of the query's values less
///    the centre, with the sign of each bit: a table per byte, ~50× the cost of step 1, so
///    only for the shortlist) keeps the best. Symmetric Hamming throws away how strongly the query
///    leans in each dimension; this keeps it, so far fewer candidates need an exact
///    rescore for the same recall (see `scripts/bench-search.sh`).
///
/// The file is scanned where it lies, in [`READ_CHUNK`] reads, split between `threads`
/// threads (each its own stretch of records and its own shortlist, merged at the end): at
/// 10⁷ windows the file is 720 MB, and the popcounts over it are most of a search.
/// `None` when there is no readable file of `model_id` with the query's dimensions.
pub fn rank(
    db: &Path,
    model_id: &str,
    query: &[f32],
    counts: &dyn Fn(usize) -> Counts,
    threads: usize,
    keep: &(dyn Fn(i64) -> bool + Sync),
) -> Option<Ranked> {
    let file = File::open(codes_path(db)).ok()?;
    let space = read_space_from(&file)?;
    if space.model_id != model_id || space.dim() != query.len() {
        return None;
    }
    let mut bits = Vec::new();
    space.encode(query, &mut bits);
    // Against the centred query, as the bits are of the centred windows: measured at 10⁷
    // windows, the query as it is ranked worse than Hamming distance alone.
    let centred: Vec<f32> = query
        .iter()
        .zip(&space.centre)
        .map(|(q, c)| q - c)
        .collect();
    let tables = byte_tables(&centred, space.words() * 8);
    let start = header_len(space.dim());
    let record = space.record_len();
    // A torn last record (the writer was killed mid-append) is left out.
    let count = (file.metadata().ok()?.len().saturating_sub(start) / record as u64) as usize;
    let threads = threads.clamp(1, 16).min(count.max(1));
    let per_thread = count.div_ceil(threads);
    let Counts { shortlist, keep: k } = counts(count);
    // Per thread: each keeps the best of its own stretch.
    let shortlist = shortlist.max(k);
    let parts: Vec<std::io::Result<Scored>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (file, bits, tables) = (&file, &bits, &tables);
                let first = t * per_thread;
                let last = ((t + 1) * per_thread).min(count);
                scope.spawn(move || {
                    let stretch =
                        scan_stretch(file, start, record, first..last, bits, shortlist, keep)?;
                    Ok(stretch.scored(tables))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("scan panicked")))
            })
            .collect()
    });
    let mut scored: Vec<(f32, i64)> = Vec::with_capacity(shortlist * threads);
    let (mut ranked, mut last_id) = (0u64, 0i64);
    for part in parts {
        let part = part.ok()?;
        scored.extend(part.candidates);
        ranked += part.ranked;
        last_id = last_id.max(part.last_id);
    }
    // Best first: the highest estimated dot product.
    scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    // A window rewritten by a re-run has two records: it is a candidate once.
    let mut seen = std::collections::HashSet::with_capacity(scored.len());
    let candidates = scored
        .into_iter()
        .map(|(_, id)| id)
        .filter(|id| seen.insert(*id))
        .take(k)
        .collect();
    Some(Ranked {
        candidates,
        ranked,
        last_id,
    })
}

/// For each byte of a code, the query's contribution for each of the 256 values it can
/// take: +x for a set bit of dimension d (the window lies above the centre there), −x for
/// a clear one, 0 past the last dimension.
fn byte_tables(query: &[f32], bytes: usize) -> Vec<[f32; 256]> {
    (0..bytes)
        .map(|b| {
            let mut table = [0f32; 256];
            for (value, slot) in table.iter_mut().enumerate() {
                *slot = (0..8)
                    .filter_map(|bit| query.get(8 * b + bit).map(|x| (bit, *x)))
                    .map(|(bit, x)| if value >> bit & 1 == 1 { x } else { -x })
                    .sum();
            }
            table
        })
        .collect()
}

/// One thread's share of [`rank`], step 1: the shortlist by Hamming distance, with each
/// kept record's code copied into a slot of `codes` (a slot is reused when its record is
/// pushed out, so the scan allocates nothing per record).
struct Stretch {
    /// (distance, id, slot in `codes`).
    nearest: Vec<(u32, i64, u32)>,
    codes: Vec<u8>,
    code_len: usize,
    ranked: u64,
    last_id: i64,
}

/// Step 2 of one thread's share: its shortlist with the estimated dot products.
struct Scored {
    candidates: Vec<(f32, i64)>,
    ranked: u64,
    last_id: i64,
}

impl Stretch {
    fn scored(self, tables: &[[f32; 256]]) -> Scored {
        let candidates = self
            .nearest
            .iter()
            .map(|&(_, id, slot)| {
                let at = slot as usize * self.code_len;
                let code = &self.codes[at..at + self.code_len];
                let estimate = code
                    .iter()
                    .zip(tables)
                    .map(|(&byte, table)| table[byte as usize])
                    .sum::<f32>();
                (estimate, id)
            })
            .collect();
        Scored {
            candidates,
            ranked: self.ranked,
            last_id: self.last_id,
        }
    }
}

fn scan_stretch(
    file: &File,
    start: u64,
    record: usize,
    records: std::ops::Range<usize>,
    bits: &[u64],
    shortlist: usize,
    keep: &(dyn Fn(i64) -> bool + Sync),
) -> std::io::Result<Stretch> {
    use std::os::unix::fs::FileExt;
    let code_len = record - 8;
    let per_read = (READ_CHUNK / record).max(1);
    let mut buffer = vec![0u8; per_read * record];
    // A max-heap of the nearest so far: most records are one comparison with its top.
    let mut heap: BinaryHeap<(u32, i64, u32)> = BinaryHeap::with_capacity(shortlist + 1);
    let mut codes = vec![0u8; shortlist.min(records.len()) * code_len];
    let (mut ranked, mut last_id) = (0u64, 0i64);
    let mut at = records.start;
    while at < records.end {
        let n = per_read.min(records.end - at);
        let bytes = &mut buffer[..n * record];
        file.read_exact_at(bytes, start + (at * record) as u64)?;
        for r in bytes.chunks_exact(record) {
            let id = le_i64(&r[..8]);
            last_id = last_id.max(id);
            if !keep(id) {
                continue;
            }
            ranked += 1;
            let code = &r[8..];
            let d = hamming(code, bits);
            let slot = if heap.len() < shortlist {
                heap.len() as u32
            } else if heap.peek().is_some_and(|&(worst, _, _)| d < worst) {
                match heap.pop() {
                    Some((_, _, slot)) => slot,
                    None => continue,
                }
            } else {
                continue;
            };
            let from = slot as usize * code_len;
            codes[from..from + code_len].copy_from_slice(code);
            heap.push((d, id, slot));
        }
        at += n;
    }
    Ok(Stretch {
        nearest: heap.into_vec(),
        codes,
        code_len,
        ranked,
        last_id,
    })
}

/// Bits that differ between a code (as stored) and a query's code words.
fn hamming(code: &[u8], query: &[u64]) -> u32 {
    code.chunks_exact(8)
        .zip(query)
        .map(|(c, q)| (le_u64(c) ^ q).count_ones())
        .sum()
}

fn le_i64(b: &[u8]) -> i64 {
    le_u64(b) as i64
}

fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}
