//! Keyframe selection, the unchanged-scene skip and the grid super image on real decoded
//! clips, with the real tract encoder underneath a call-counting seam.

use std::cell::Cell;
use std::time::Duration;

use crate::common::*;
use cliptag::classify::{expand_labels, ClassifyConfig, LabelSet};
use cliptag::clip::{
    super_image, window_pixels, ClipError, ClipModel, ImageEmbedder, ModelVariant,
};
use cliptag::daemon::{Tagger, WindowContent, WindowJob, WindowStamp};
use cliptag::ingest::{FrameSource, GstSource, Sampling, SourceKind};
use cliptag::keyframes::{Aggregation, KeyframeConfig, LastScene, Selection, Window, Windower};
use cliptag::store::{EmbeddingKind, NewSegment};

fn windows(file: &str, sampling: Sampling, keyframes: &KeyframeConfig) -> Vec<Window> {
    let mut source = GstSource::open(file, clips().join(file).to_str().unwrap(), sampling).unwrap();
    let mut windower = Windower::new(Duration::from_secs(10), keyframes.selector());
    let mut out = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        out.extend(windower.push(frame));
    }
    out.extend(windower.finish(source.duration()));
    out
}

fn cluster(k: usize) -> KeyframeConfig {
    KeyframeConfig {
        select: Selection::Cluster,
        k,
        ..KeyframeConfig::default()
    }
}

#[test]
fn three_scenes_give_one_keyframe_each_and_the_same_ones_twice() {
    // three_scenes_10s.mp4: red 0-3 s, checkerboard 3-6 s, colour bars 6-10 s.
    let first = windows("three_scenes_10s.mp4", Sampling::Fps(2.0), &cluster(3));
    assert_eq!(first.len(), 1);
    let times: Vec<f64> = first[0].keyframes.iter().map(|f| f.pts).collect();
    assert_eq!(first[0].sampled, 20);
    assert_eq!(times.len(), 3, "{times:?}");
    let scene = |t: f64| {
        if t < 3.0 {
            0
        } else if t < 6.0 {
            1
        } else {
            2
        }
    };
    assert_eq!(
        times.iter().map(|t| scene(*t)).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "{times:?}"
    );
    let again = windows("three_scenes_10s.mp4", Sampling::Fps(2.0), &cluster(3));
    assert_eq!(
        again[0].keyframes.iter().map(|f| f.pts).collect::<Vec<_>>(),
        times
    );
    // Asking for more clusters than there are scenes still gives one frame per scene.
    let many = windows("three_scenes_10s.mp4", Sampling::Fps(2.0), &cluster(9));
    assert_eq!(many[0].keyframes.len(), 3);
}

/// Counts CLIP image passes; the real tract encoder does the work.
struct Counting<'a> {
    inner: &'a ClipModel,
    calls: Cell<usize>,
}

impl ImageEmbedder for Counting<'_> {
    fn embed_pixels(&self, tensors: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ClipError> {
        self.calls.set(self.calls.get() + tensors.len());
        self.inner.embed_pixels(tensors)
    }
}

fn new_tagger<E: ImageEmbedder>(
    embedder: E,
    model: &ClipModel,
    config: &KeyframeConfig,
) -> Tagger<E> {
    Tagger::new(
        embedder,
        model.id.clone(),
        labels(model),
        config,
        &ClassifyConfig::default(),
    )
}

/// One window the way the daemon handles it: the source decides from the cheap features
/// whether the scene changed (and only then preprocesses), inference tags the job.
fn tag<E: ImageEmbedder>(
    tagger: &mut Tagger<E>,
    model: &ClipModel,
    config: &KeyframeConfig,
    scene: &mut LastScene,
    window: Window,
) -> NewSegment {
    let content = if scene.unchanged(config, &window.features) {
        WindowContent::Unchanged
    } else {
        scene.remember(window.features.clone());
        WindowContent::Pixels(window_pixels(
            &window.keyframe_images(),
            config.aggregate,
            &model.preprocess,
        ))
    };
    tagger
        .tag(WindowJob::new(
            &WindowStamp {
                source: "clip",
                shown_uri: "clip.mp4",
                kind: SourceKind::File,
                recorded_at: None,
                processed_at: 0.0,
                started_at: 0.0,
            },
            &window,
            content,
        ))
        .unwrap()
}

fn labels(model: &ClipModel) -> LabelSet {
    let labels = expand_labels(
        &[
            "dog".into(),
            "car".into(),
            "a colourful test pattern".into(),
        ],
        &ClassifyConfig::default().prompt_templates,
    );
    LabelSet::build(labels, |p| {
        model
            .embed_texts(&[p.to_string()])
            .map(|mut v| v.remove(0).1)
    })
    .unwrap()
}

#[test]
fn a_static_scene_costs_one_clip_call_in_total() {
    let model = ClipModel::load(&tiny_model(), ModelVariant::Fp32, 1).unwrap();
    let config = cluster(5);
    let wins = windows("static_30s.mp4", Sampling::Fps(1.0), &config);
    assert_eq!(wins.len(), 3);
    assert!(
        wins.iter().all(|w| w.keyframes.len() == 1),
        "{:?}",
        wins.iter().map(|w| w.keyframes.len()).collect::<Vec<_>>()
    );
    let counting = Counting {
        inner: &model,
        calls: Cell::new(0),
    };
    let mut tagger = new_tagger(&counting, &model, &config);
    let mut scene = LastScene::default();
    let mut per_window = Vec::new();
    let mut segments = Vec::new();
    for w in wins {
        let before = counting.calls.get();
        let segment = tag(&mut tagger, &model, &config, &mut scene, w);
        per_window.push(counting.calls.get() - before);
        segments.push(segment);
    }
    assert_eq!(per_window, vec![1, 0, 0]);
    assert_eq!(
        segments.iter().map(|s| s.clip_calls).collect::<Vec<_>>(),
        vec![1, 0, 0]
    );
    assert_eq!(
        segments
            .iter()
            .map(|s| s.embedding_kind)
            .collect::<Vec<_>>(),
        [
            EmbeddingKind::Mean,
            EmbeddingKind::Reused,
            EmbeddingKind::Reused
        ]
    );
    // The reused windows carry the same embedding and labels.
    assert_eq!(segments[1].embedding, segments[0].embedding);
    assert_eq!(segments[2].matches[0].label, segments[0].matches[0].label);

    // With the skip off, every window is embedded.
    let counting = Counting {
        inner: &model,
        calls: Cell::new(0),
    };
    let no_skip = KeyframeConfig {
        skip_unchanged: false,
        ..config
    };
    let mut tagger = new_tagger(&counting, &model, &no_skip);
    let mut scene = LastScene::default();
    for w in windows("static_30s.mp4", Sampling::Fps(1.0), &no_skip) {
        tag(&mut tagger, &model, &no_skip, &mut scene, w);
    }
    assert_eq!(counting.calls.get(), 3);
}

#[test]
fn grid_mode_tiles_keyframes_and_makes_one_clip_call() {
    let model = ClipModel::load(&tiny_model(), ModelVariant::Fp32, 1).unwrap();
    let config = KeyframeConfig {
        aggregate: Aggregation::Grid,
        skip_unchanged: false,
        ..cluster(3)
    };
    let wins = windows("three_scenes_10s.mp4", Sampling::Fps(2.0), &config);
    let keyframes: Vec<_> = wins[0].keyframes.iter().map(|f| &f.image).collect();
    assert_eq!(keyframes.len(), 3);

    // 3 frames → a 2×2 grid of 224-pixel tiles, in time order, the fourth cell black.
    let grid = super_image(&keyframes, 224);
    assert_eq!((grid.width, grid.height), (448, 448));
    let pixel =
        |x: u32, y: u32| &grid.data[((y * 448 + x) * 3) as usize..((y * 448 + x) * 3 + 3) as usize];
    let red = pixel(112, 112);
    assert!(
        red[0] > 200 && red[1] < 60 && red[2] < 60,
        "first tile is the red scene: {red:?}"
    );
    assert_eq!(
        pixel(448 - 112, 448 - 112),
        &[0, 0, 0],
        "unused cell stays black"
    );
    // Each tile is its keyframe, centre-cropped to a square and resized to the tile.
    for (n, frame) in keyframes.iter().enumerate() {
        let short = frame.width.min(frame.height);
        let square =
            cliptag::clip::center_crop(frame, short, short, cliptag::clip::CropRounding::Floor);
        let tile = cliptag::clip::resize(&square, 224, 224, cliptag::clip::Filter::Bicubic);
        let (ox, oy) = ((n as u32 % 2) * 224, (n as u32 / 2) * 224);
        for y in (0..224).step_by(37) {
            for x in (0..224).step_by(41) {
                let want =
                    &tile.data[((y * 224 + x) * 3) as usize..((y * 224 + x) * 3 + 3) as usize];
                assert_eq!(pixel(ox + x, oy + y), want, "tile {n} at ({x},{y})");
            }
        }
    }
    let nine: Vec<_> = std::iter::repeat_n(keyframes[0], 9).collect();
    assert_eq!(super_image(&nine, 10).width, 30);

    let counting = Counting {
        inner: &model,
        calls: Cell::new(0),
    };
    let mut tagger = new_tagger(&counting, &model, &config);
    let first = wins.into_iter().next().unwrap();
    let segment = tag(
        &mut tagger,
        &model,
        &config,
        &mut LastScene::default(),
        first,
    );
    assert_eq!(counting.calls.get(), 1);
    assert_eq!(segment.clip_calls, 1);
    assert_eq!(segment.keyframes_ms.len(), 3);
    assert_eq!(segment.embedding_kind, EmbeddingKind::Grid);
}

#[test]
fn max_mode_keeps_each_labels_best_frame() {
    let model = ClipModel::load(&tiny_model(), ModelVariant::Fp32, 1).unwrap();
    let config = KeyframeConfig {
        aggregate: Aggregation::Max,
        skip_unchanged: false,
        ..cluster(3)
    };
    let set = labels(&model);
    let wins = windows("three_scenes_10s.mp4", Sampling::Fps(2.0), &config);
    let frames: Vec<_> = wins[0].keyframes.iter().map(|f| &f.image).collect();
    let per_frame = model.embed_frames(&frames).unwrap();
    let mut tagger = new_tagger(&model, &model, &config);
    let first = wins.into_iter().next().unwrap();
    let segment = tag(
        &mut tagger,
        &model,
        &config,
        &mut LastScene::default(),
        first,
    );
    // Every label of the set (top_k 3 of 3 labels, no probability floor).
    assert_eq!(segment.matches.len(), 3);
    for m in &segment.matches {
        let best = per_frame
            .iter()
            .map(|e| {
                set.score(e)
                    .into_iter()
                    .find(|s| s.label == m.label)
                    .unwrap()
                    .probability
            })
            .fold(0.0f32, f32::max);
        assert!(
            (m.probability - best).abs() < 1e-6,
            "{}: {} vs {best}",
            m.label,
            m.probability
        );
    }
    assert_eq!(segment.clip_calls, 3);
    // Labels were scored per keyframe; the stored embedding is still the mean, and the
    // keyframes' own are kept for a backfill.
    assert_eq!(segment.embedding_kind, EmbeddingKind::Mean);
    assert_eq!(segment.keyframe_embeddings, per_frame);
}
