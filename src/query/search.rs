//! `cliptag search`: the stored windows most like a text, a picture or another window,
//! ranked by cosine similarity of their CLIP embeddings — answers from what was already
//! seen, with no video decoded.
//!
//! Rules, and why:
//! - **One model.** Cosines of two models mean nothing to each other, so only windows of
//!   the model searched with are ranked; how many windows of other models were left out
//!   is reported, never mixed in.
//! - **The query is a unit vector made like a window's**: a text is expanded by the prompt
//!   templates exactly as a label is (a caption stays as written), and several texts and
//!   their prompts are one ensemble (the re-normalised mean of their normalised
//!   embeddings), so "zone plate" searches the way the label "zone plate" scores; a
//!   picture or a video is the mean of its sampled frames' embeddings, through the same
//!   preprocessing as keyframes; `--like` takes a stored window's embedding as it is
//!   (and leaves that window out of the answer).
//! - **The index picks candidates, the embeddings decide.** With a search index for the
//!   model (`store::codes`: 64 bytes of sign bits per ViT-B/32 window), every picked window
//!   is ranked by Hamming distance to the query's bits, the nearest are ranked again by
//!   the query against their bits, and the best of those ([`counts`]) are rescored
//!   exactly from their stored embeddings; windows written after the index's last are
//!   scored exactly too, so a window is never missed because the index lags (after a
//!   kill). Without an index, or with `--exact`, every
//!   picked window is scored exactly. Either way a score is the true cosine (a dot
//!   product of unit vectors) and filters are applied in SQL before a vector is read.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::classify::{mean_embedding, prompts_for};
use crate::clip::{dot, l2_normalized, ClipModel};
use crate::embed::{embed_media, EmbedError};
use crate::ingest::Sampling;
use crate::store::{nearest, SegmentRow, Store, StoreError, WindowFilter};
use crate::times::Zone;

use super::filters::WindowArgs;
use super::id_set::IdSet;

/// What to look for.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchInput {
    /// Texts, one prompt ensemble.
    Texts(Vec<String>),
    /// A picture (or a short video) to find moments like.
    Image(String),
    /// A stored window (its segment id) to find others like.
    Like(i64),
}

/// The filters of `cliptag search`, as the command line gives them.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchFilters {
    #[command(flatten)]
    pub window: WindowArgs,
    /// How many windows to show, best first
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub limit: usize,
}

impl SearchFilters {
    /// The windows these filters pick; `known_sources` is what the database holds.
    pub fn to_filter(
        &self,
        known_sources: &[String],
        now: f64,
        zone: &Zone,
    ) -> Result<WindowFilter, String> {
        if self.limit == 0 {
            return Err("--limit 0 shows nothing; give at least 1".into());
        }
        self.window.to_filter(known_sources, now, zone)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the query picture {path}: {source}")]
    Image {
        path: String,
        #[source]
        source: Box<EmbedError>,
    },
    #[error("the query picture {path} has no frame to embed")]
    EmptyImage { path: String },
    #[error(transparent)]
    Clip(#[from] crate::clip::ClipError),
    #[error("no stored window has id {id}; `cliptag search` shows each window's id")]
    NoWindow { id: i64 },
    #[error("window {id} is of model {window_model}, this search is of model {model}: their embeddings cannot be compared")]
    OtherModel {
        id: i64,
        window_model: String,
        model: String,
    },
    #[error("no query: give a text, --image FILE or --like ID")]
    Empty,
}

/// One window found, with its cosine to the query.
#[derive(Debug, Clone)]
pub struct Hit {
    pub score: f32,
    pub window: SegmentRow,
}

/// What a search found and what it looked at.
#[derive(Debug, Clone)]
pub struct SearchAnswer {
    pub model_id: String,
    pub method: Method,
    pub hits: Vec<Hit>,
    /// Windows of the model that the filters picked and were ranked (by the index or
    /// exactly).
    pub searched: u64,
    /// Windows of other models, left out: (model id, count).
    pub skipped: Vec<(String, u64)>,
}

/// The query as a unit vector of `model`'s space (see the module rules).
pub fn query_vector(
    model: &ClipModel,
    store: &Store,
    input: &SearchInput,
    templates: &[String],
) -> Result<Vec<f32>, SearchError> {
    match input {
        SearchInput::Texts(texts) if texts.is_empty() => Err(SearchError::Empty),
        SearchInput::Texts(texts) => {
            let prompts: Vec<String> = texts
                .iter()
                .flat_map(|t| prompts_for(t, templates))
                .collect();
            let encoded = model.embed_texts(&prompts)?;
            mean_embedding(encoded.iter().map(|(_, e)| e.as_slice())).ok_or(SearchError::Empty)
        }
        SearchInput::Image(path) => {
            let mut frames: Vec<Vec<f32>> = Vec::new();
            embed_media(model, path, Sampling::Fps(1.0), |f| {
                frames.push(f.embedding)
            })
            .map_err(|source| SearchError::Image {
                path: path.clone(),
                source: Box::new(source),
            })?;
            mean_embedding(frames.iter().map(Vec::as_slice))
                .ok_or_else(|| SearchError::EmptyImage { path: path.clone() })
        }
        SearchInput::Like(id) => {
            let (window_model, embedding) = window_query(store, *id)?;
            if window_model != model.id {
                return Err(SearchError::OtherModel {
                    id: *id,
                    window_model,
                    model: model.id.clone(),
                });
            }
            Ok(embedding)
        }
    }
}

/// A stored window as the query: its model and its embedding (re-normalised). Needs no
/// model loaded, so `--like` works where the model directory is gone.
pub fn window_query(store: &Store, id: i64) -> Result<(String, Vec<f32>), SearchError> {
    let window = store
        .segments_by_id(&[id])?
        .pop()
        .ok_or(SearchError::NoWindow { id })?;
    Ok((window.model_id, l2_normalized(window.embedding)))
}

/// How many windows the index's two steps keep, of `records` (see `store::nearest::rank`),
/// for an answer of `limit`: Hamming distance keeps a shortlist of [`SHORTLIST_MIN`] or a
/// [`SHORTLIST_SHARE`]th of the records, if more; the centred query against their bits
/// keeps the candidates that are rescored exactly: [`CANDIDATES_MIN`], or a
/// [`CANDIDATES_SHARE`]th of the records, or ten per answer, if more.
/// `CLIPTAG_SEARCH_SHORTLIST` and `CLIPTAG_SEARCH_CANDIDATES` set them for benchmarks.
///
/// Measured on generated ViT-B/32-like data (scripts/bench-search.sh; 16 cameras × 64
/// scenes, so 10⁴ near-duplicates per scene at 10⁷ windows), recall@10 against the exact
/// scan: the shortlist never limited it (10⁷: 20 000, 50 000 and 200 000 gave the same);
/// the candidates did — see the README's table.
fn counts(records: usize, limit: usize) -> nearest::Counts {
    let from_env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    nearest::Counts {
        shortlist: from_env("CLIPTAG_SEARCH_SHORTLIST")
            .unwrap_or(SHORTLIST_MIN.max(records / SHORTLIST_SHARE)),
        keep: from_env("CLIPTAG_SEARCH_CANDIDATES")
            .unwrap_or(CANDIDATES_MIN.max(records / CANDIDATES_SHARE))
            .max(limit * 10),
    }
}

/// See [`counts`].
pub const SHORTLIST_MIN: usize = 10_000;
/// See [`counts`].
pub const SHORTLIST_SHARE: usize = 500;
/// See [`counts`].
pub const CANDIDATES_MIN: usize = 1000;
/// See [`counts`].
pub const CANDIDATES_SHARE: usize = 2500;

/// Threads that scan the index: every core the process may use (a search is a short
/// burst; the daemon's inference thread gives way for a fraction of a second).
fn scan_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How a search ranked the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The sign-bit index picked candidates; they were rescored exactly.
    Index,
    /// Every window was scored exactly.
    Exact,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Index => "index",
            Method::Exact => "exact scan",
        }
    }
}

/// The `limit` windows of `model_id` most like `query` (a unit vector), best first; with
/// the search index when there is one for the model, unless `exact`.
pub fn search(
    store: &Store,
    model_id: &str,
    query: &[f32],
    filter: &WindowFilter,
    limit: usize,
    exclude: Option<i64>,
    exact: bool,
) -> Result<SearchAnswer, SearchError> {
    let mut best = TopK::new(limit);
    let mut offer = |id: i64, embedding: &[f32]| {
        if Some(id) != exclude && embedding.len() == query.len() {
            best.offer(id, dot(query, embedding));
        }
    };
    let allowed: Option<IdSet> = (!exact && !filter.picks_everything())
        .then(|| store.window_ids(model_id, filter))
        .transpose()?
        .map(|ids| IdSet::new(&ids));
    let keep = |id: i64| allowed.as_ref().is_none_or(|a| a.contains(id));
    let index = (!exact)
        .then(|| {
            nearest::rank(
                store.path(),
                model_id,
                query,
                &|records| counts(records, limit),
                scan_threads(),
                &keep,
            )
        })
        .flatten();
    let (method, searched) = match index {
        None => (
            Method::Exact,
            store.scan_embeddings(model_id, filter, &mut offer)?,
        ),
        Some(index) => {
            for (id, embedding) in store.embeddings_by_id(&index.candidates)? {
                offer(id, &embedding);
            }
            let newer = WindowFilter {
                after_id: Some(index.last_id),
                ..filter.clone()
            };
            let tail = store.scan_embeddings(model_id, &newer, &mut offer)?;
            (Method::Index, index.ranked + tail)
        }
    };
    let ranked = best.into_sorted();
    let ids: Vec<i64> = ranked.iter().map(|&(id, _)| id).collect();
    let windows = store.segments_by_id(&ids)?;
    let hits = ranked
        .iter()
        .filter_map(|&(id, score)| {
            windows.iter().find(|w| w.id == id).map(|w| Hit {
                score,
                window: w.clone(),
            })
        })
        .collect();
    let mut skipped = Vec::new();
    for (other, _) in store.models_with_windows()? {
        if other != model_id {
            let n = store.windows_of_model(&other)?;
            skipped.push((other, n));
        }
    }
    Ok(SearchAnswer {
        model_id: model_id.to_string(),
        method,
        hits,
        searched,
        skipped,
    })
}

/// The model a database's windows were last tagged with: the newest of its models that
/// has windows (a new generation is added after the old one).
pub fn current_model(store: &Store) -> Result<Option<(String, String)>, StoreError> {
    Ok(store.models_with_windows()?.pop())
}

/// The best `k` (id, score) pairs seen, in a min-heap so each offer is O(log k) and
/// most are one comparison with the worst kept.
struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f32,
    id: i64,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    /// Reversed, so the heap's top is the worst kept; ties broken by id, lower id better.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.id.cmp(&other.id))
    }
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    fn offer(&mut self, id: i64, score: f32) {
        let item = Scored { score, id };
        if self.heap.len() < self.k {
            self.heap.push(item);
        } else if self.heap.peek().is_some_and(|worst| item < *worst) {
            self.heap.pop();
            self.heap.push(item);
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<(i64, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|s| (s.id, s.score))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_best_in_order() {
        let mut t = TopK::new(3);
        for (id, score) in [(1, 0.1), (2, 0.9), (3, 0.5), (4, 0.7), (5, 0.2), (6, 0.9)] {
            t.offer(id, score);
        }
        assert_eq!(t.into_sorted(), vec![(2, 0.9), (6, 0.9), (4, 0.7)]);
    }
}
