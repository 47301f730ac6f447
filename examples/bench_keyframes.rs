//! Keyframe benchmark: CLIP calls per minute of video and CLIP time for every selection and
//! aggregation mode, and how close each mode's window embedding is to the all-frames mean.
//!
//!   cargo run --example bench_keyframes -- MODEL_DIR [--minutes M] CLIP...
//!
//! The clips are played back to back as one stream (so `--minutes 10` over a 60 s clip and
//! the real clips is the "10-minute concatenation"), sampled at 1 fps into 10 s windows.
//! Every sampled frame is embedded once (the all-frames baseline, timed); keyframe modes
//! reuse those embeddings for their selected frames, so their CLIP time is calls × the
//! measured time per image — the frames and the encoder are the same. Grid runs its own
//! CLIP pass per window. Nothing here asserts: `scripts/bench-keyframes.sh` prints the table.

use std::time::{Duration, Instant};

use cliptag::classify::mean_embedding;
use cliptag::clip::{cosine, preprocess, super_image, ClipModel, ModelVariant};
use cliptag::ingest::{Frame, FrameSource, GstSource, Sampling};
use cliptag::keyframes::{
    scene_unchanged, thumbnail_lab, ClusterSelector, KeyframeSelector, DEFAULT_SCENE_THRESHOLD,
};

#[derive(Default)]
struct Mode {
    calls: usize,
    clip_time: Duration,
    select_time: Duration,
    cosines: Vec<f32>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: bench_keyframes MODEL_DIR [--minutes M] CLIP..."
    );
    let model = ClipModel::load(std::path::Path::new(&args[0]), ModelVariant::Fp32, 0)?;
    let (minutes, clips): (f64, Vec<String>) = match args.get(1).map(String::as_str) {
        Some("--minutes") => (args[2].parse()?, args[3..].to_vec()),
        _ => (0.0, args[1..].to_vec()),
    };

    // Decode the clips back to back, once, keeping the 1 fps frames with continuous times.
    let mut frames: Vec<Frame> = Vec::new();
    let mut offset = 0.0;
    'outer: loop {
        for clip in &clips {
            let mut source = GstSource::open(clip, clip, Sampling::Fps(1.0))?;
            let mut last = 0.0;
            while let Some(mut f) = source.next_frame()? {
                last = f.pts;
                f.pts += offset;
                frames.push(f);
            }
            offset += source.duration().unwrap_or(last + 1.0).max(last + 1.0);
            if minutes <= 0.0 || offset >= minutes * 60.0 {
                break 'outer;
            }
        }
    }
    let video_minutes = offset / 60.0;

    let names = [
        "all frames",
        "k=3",
        "k=5",
        "k=9",
        "grid (k=9)",
        "k=5 + skip",
    ];
    let mut modes: Vec<Mode> = names.iter().map(|_| Mode::default()).collect();
    let mut previous: Option<(Vec<Vec<f32>>, Vec<f32>)> = None;
    let mut start = 0usize;
    while start < frames.len() {
        let window_index = (frames[start].pts / 10.0).floor();
        let end = start
            + frames[start..]
                .iter()
                .take_while(|f| (f.pts / 10.0).floor() == window_index)
                .count();
        let window = &frames[start..end];
        start = end;

        let t = Instant::now();
        let features: Vec<Vec<f32>> = window.iter().map(|f| thumbnail_lab(&f.image)).collect();
        let feature_time = t.elapsed();
        let t = Instant::now();
        let embeddings =
            model.embed_frames(&window.iter().map(|f| &f.image).collect::<Vec<_>>())?;
        let all = &mut modes[0];
        all.clip_time += t.elapsed();
        all.calls += window.len();
        let reference = mean_embedding(embeddings.iter().map(Vec::as_slice)).unwrap_or_default();
        all.cosines.push(1.0);
        let per_image = t.elapsed() / window.len() as u32;

        for (slot, k) in [(1usize, 3usize), (2, 5), (3, 9)] {
            let t = Instant::now();
            let chosen = ClusterSelector::new(k).select(window, &features);
            let mode = &mut modes[slot];
            mode.select_time += t.elapsed() + feature_time;
            mode.calls += chosen.len();
            mode.clip_time += per_image * chosen.len() as u32;
            let e = mean_embedding(chosen.iter().map(|&i| embeddings[i].as_slice()))
                .unwrap_or_default();
            mode.cosines.push(cosine(&e, &reference));
        }

        let t = Instant::now();
        let chosen = ClusterSelector::new(9).select(window, &features);
        let select_time = t.elapsed() + feature_time;
        let t = Instant::now();
        let images: Vec<_> = chosen.iter().map(|&i| &window[i].image).collect();
        let grid = preprocess(
            &super_image(&images, model.preprocess.crop.0),
            &model.preprocess,
        );
        let e = model.embed_pixels(&[grid])?;
        let mode = &mut modes[4];
        mode.clip_time += t.elapsed();
        mode.select_time += select_time;
        mode.calls += 1;
        mode.cosines.push(cosine(&e[0], &reference));

        let t = Instant::now();
        let chosen = ClusterSelector::new(5).select(window, &features);
        let keyframe_features: Vec<Vec<f32>> =
            chosen.iter().map(|&i| features[i].clone()).collect();
        let mode = &mut modes[5];
        mode.select_time += t.elapsed() + feature_time;
        let reuse = previous
            .as_ref()
            .filter(|(f, _)| scene_unchanged(f, &keyframe_features, DEFAULT_SCENE_THRESHOLD));
        let e = match reuse {
            Some((_, e)) => e.clone(),
            None => {
                mode.calls += chosen.len();
                mode.clip_time += per_image * chosen.len() as u32;
                let e = mean_embedding(chosen.iter().map(|&i| embeddings[i].as_slice()))
                    .unwrap_or_default();
                previous = Some((keyframe_features, e.clone()));
                e
            }
        };
        mode.cosines.push(cosine(&e, &reference));
    }

    println!(
        "{} frames at 1 fps, {:.1} min of video, {} windows",
        frames.len(),
        video_minutes,
        modes[0].cosines.len()
    );
    println!(
        "{:<12} {:>10} {:>9} {:>11} {:>11} {:>10} {:>10}",
        "mode", "calls/min", "vs all", "clip_s", "select_ms", "cos_mean", "cos_min"
    );
    let base = modes[0].calls as f64;
    for (name, m) in names.iter().zip(&modes) {
        let mean = m.cosines.iter().sum::<f32>() / m.cosines.len().max(1) as f32;
        let min = m.cosines.iter().copied().fold(1.0f32, f32::min);
        println!(
            "{:<12} {:>10.1} {:>8.1}x {:>11.2} {:>11.1} {:>10.4} {:>10.4}",
            name,
            m.calls as f64 / video_minutes,
            base / m.calls.max(1) as f64,
            m.clip_time.as_secs_f64(),
            m.select_time.as_secs_f64() * 1000.0,
            mean,
            min
        );
    }
    Ok(())
}
