//! Short events and search, for scripts/bench-short-events.sh: does keeping each keyframe's
//! embedding (not only the window's mean) find windows where something is visible briefly?
//!
//!   bench_short_events MODEL_DIR CLIP LAYOUT [QUERY]
//!
//! LAYOUT says what the clip (rendered by the script) holds, one entry per 10 s window:
//! `0` for background only, `E` for a window whose background is interrupted by E seconds
//! of the query's pattern in its middle. The clip is read the way the daemon reads it (1
//! fps, 10 s windows, the default keyframe selection), each window's keyframes are
//! embedded, and the windows are ranked against the query text (its prompt ensemble, as
//! `cliptag search` makes it) two ways: by the cosine of the window's stored mean (what
//! search ranks now), and by the best cosine of any of its keyframes (what storing the
//! keyframes would allow). Nothing asserts; it prints one table row per event length.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use cliptag::classify::{mean_embedding, prompts_for, ClassifyConfig};
use cliptag::clip::{dot, ClipModel, ModelVariant};
use cliptag::ingest::{FrameSource, GstSource, Sampling};
use cliptag::keyframes::{KeyframeConfig, Windower};

const WINDOW_S: f64 = 10.0;

/// A window: its event's seconds, whether a keyframe fell in the event, the query's cosine
/// with the window's mean, and its best cosine with a keyframe.
type Scored = (u32, bool, f32, f32);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    ensure!(
        args.len() >= 3,
        "usage: bench_short_events MODEL_DIR CLIP LAYOUT [QUERY]"
    );
    let model = ClipModel::load(std::path::Path::new(&args[0]), ModelVariant::Auto, 0)?;
    let layout: Vec<u32> = args[2]
        .split(',')
        .map(|e| e.parse().context("LAYOUT: comma-separated whole seconds"))
        .collect::<Result<_>>()?;
    let query_text = args.get(3).map_or("zone plate", String::as_str);

    let prompts = prompts_for(query_text, &ClassifyConfig::default().prompt_templates);
    let encoded = model.embed_texts(&prompts)?;
    let query = mean_embedding(encoded.iter().map(|(_, e)| e.as_slice())).context("no prompt")?;

    let keyframes = KeyframeConfig::default();
    let mut source = GstSource::open("clip", &args[1], Sampling::Fps(1.0))?;
    let mut windower = Windower::new(Duration::from_secs_f64(WINDOW_S), keyframes.selector());
    let mut windows = Vec::new();
    while let Some(frame) = source.next_frame()? {
        windows.extend(windower.push(frame));
    }
    windows.extend(windower.finish(source.duration()));
    ensure!(
        windows.len() == layout.len(),
        "the clip has {} windows, LAYOUT {}",
        windows.len(),
        layout.len()
    );

    // Per window: (event seconds, the event had a keyframe, cosine of the mean, best
    // keyframe cosine).
    let mut scored: Vec<Scored> = Vec::with_capacity(windows.len());
    for (w, &event) in windows.iter().zip(&layout) {
        let per_keyframe = model.embed_frames(&w.keyframe_images())?;
        let mean = mean_embedding(per_keyframe.iter().map(Vec::as_slice)).context("no keyframe")?;
        let best = per_keyframe
            .iter()
            .map(|e| dot(&query, e))
            .fold(f32::MIN, f32::max);
        // Where make-synthetic-demo.sh puts the event: after (10 - E) / 2 whole seconds.
        let from = w.start + ((WINDOW_S as u32 - event) / 2) as f64;
        let caught = event > 0
            && w.keyframes
                .iter()
                .any(|f| f.pts >= from && f.pts < from + event as f64);
        scored.push((event, caught, dot(&query, &mean), best));
    }

    let events = layout.iter().filter(|&&e| e > 0).count();
    let rank_by = |key: &dyn Fn(&Scored) -> f32| -> Vec<usize> {
        let mut order: Vec<usize> = (0..scored.len()).collect();
        order.sort_by(|&a, &b| key(&scored[b]).total_cmp(&key(&scored[a])));
        let mut rank = vec![0; scored.len()];
        for (r, i) in order.into_iter().enumerate() {
            rank[i] = r + 1;
        }
        rank
    };
    let by_mean = rank_by(&|s| s.2);
    let by_keyframe = rank_by(&|s| s.3);
    let mut per_length: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, s) in scored.iter().enumerate() {
        if s.0 > 0 {
            per_length.entry(s.0).or_default().push(i);
        }
    }
    println!(
        "{} windows, {events} with an event; query {query_text:?}; a window is found when it \
         ranks within the first {events}",
        scored.len()
    );
    println!(
        "| event | windows | event in a keyframe | found by the mean | found by the best keyframe | median rank, mean | median rank, best keyframe |"
    );
    println!("|---|---|---|---|---|---|---|");
    let median = |mut v: Vec<usize>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    for (length, members) in &per_length {
        let found = |rank: &[usize]| members.iter().filter(|&&i| rank[i] <= events).count();
        println!(
            "| {length} s | {} | {} | {} | {} | {} | {} |",
            members.len(),
            members.iter().filter(|&&i| scored[i].1).count(),
            found(&by_mean),
            found(&by_keyframe),
            median(members.iter().map(|&i| by_mean[i]).collect()),
            median(members.iter().map(|&i| by_keyframe[i]).collect()),
        );
    }
    Ok(())
}
