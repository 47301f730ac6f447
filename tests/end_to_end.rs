//! End to end through the real binary: generated and broken clips + the tiny CLIP model →
//! SQLite → `cliptag query`, checked against the model run directly on the same frames.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;
use cliptag::store::Store;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(labels: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("labels.txt"), labels).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a config with the given `(name, file)` sources and returns its path.
    fn config(&self, name: &str, sources: &[(&str, PathBuf)], extra: &str) -> PathBuf {
        let mut text = format!(
            "labels = \"labels.txt\"\ndatabase = \"tags.db\"\n{extra}\n[model]\ndir = {:?}\nthreads = 1\n\n[sampling]\nfps = 1.0\n\n[window]\nseconds = 10.0\n\n[keyframes]\n# every sampled frame, so windows compare with the all-frames mean\nselect = \"all\"\nskip_unchanged = false\n\n[classify]\ntop_k = 3\n",
            tiny_model()
        );
        for (source, file) in sources {
            text.push_str(&format!(
                "\n[[source]]\nname = {source:?}\nuri = {:?}\n",
                file
            ));
        }
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn run(args: &[&str]) -> Output {
    cliptag().args(args).output().expect("cliptag runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn query_json(config: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["query", "--config", config.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "query failed: {}", stderr(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const LABELS: &str =
    "# test labels\ndog\ncar\na person walking in the street\ncolour bars\n\nsunset\n";

#[test]
fn tags_clips_and_skips_broken_ones() {
    let clips = clips();
    let setup = Setup::new(LABELS);
    let good = [
        ("scenes", "scenes_720p_h264.mp4", 60.0),
        ("vp9", "vp9.webm", 10.0),
        ("mjpeg", "mjpeg_5fps.avi", 10.0),
    ];
    let broken = [
        ("empty", "empty.mp4"),
        ("text", "text.mp4"),
        ("audio", "audio_only.wav"),
        ("truncated", "truncated.mp4"),
    ];
    let mut sources: Vec<(&str, PathBuf)> =
        good.iter().map(|(n, f, _)| (*n, clips.join(f))).collect();
    sources.extend(broken.iter().map(|(n, f)| (*n, clips.join(f))));
    let config = setup.config("cliptag.toml", &sources, "");

    let o = run(&["run", "--config", config.to_str().unwrap()]);
    let err = stderr(&o);
    assert!(o.status.success(), "run failed: {err}");
    for (name, _) in broken {
        assert!(
            err.contains(&format!("source {name:?}")),
            "broken source {name} not reported: {err}"
        );
    }

    // Every stored row, the near-zero tail included.
    let rows = query_json(&config, &["--min-prob", "0"]);
    let mut windows: BTreeMap<(String, i64), Vec<&serde_json::Value>> = BTreeMap::new();
    for r in &rows {
        let key = (
            r["source"].as_str().unwrap().to_string(),
            (r["offset_s"].as_f64().unwrap() * 1000.0) as i64,
        );
        windows.entry(key).or_default().push(r);
    }
    for (name, _, duration) in good {
        let mine: Vec<_> = windows.iter().filter(|((s, _), _)| s == name).collect();
        let expected = (duration / 10.0_f64).ceil() as usize;
        assert_eq!(mine.len(), expected, "{name}: windows");
        // Windows tile the clip: consecutive, starting at 0, ending at the clip's end.
        let mut end = 0.0;
        for (_, matches) in &mine {
            assert!(
                (matches[0]["offset_s"].as_f64().unwrap() - end).abs() < 1e-6,
                "{name}: gap before {end}"
            );
            end = matches[0]["offset_end_s"].as_f64().unwrap();
        }
        assert!(
            (end - duration).abs() < 0.5,
            "{name}: windows end at {end}, clip lasts {duration}"
        );
    }
    for ((source, start), matches) in &windows {
        assert_eq!(matches.len(), 3, "{source}@{start}: top-3");
        let probs: Vec<f64> = matches
            .iter()
            .map(|m| m["probability"].as_f64().unwrap())
            .collect();
        assert!(
            probs.windows(2).all(|p| p[0] >= p[1]),
            "{source}@{start}: not sorted: {probs:?}"
        );
        assert!(probs.iter().sum::<f64>() <= 1.0 + 1e-6);
        assert_eq!(
            matches
                .iter()
                .map(|m| m["rank"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    // Stored window embeddings are unit norm and equal the mean of the frames' embeddings
    // computed directly by `cliptag embed` on the same file.
    let store = Store::open_existing(&setup.path("tags.db")).unwrap();
    let segments = store.segments(Some("scenes")).unwrap();
    assert_eq!(segments.len(), 6);
    let o = run(&[
        "embed",
        "--model",
        tiny_model().to_str().unwrap(),
        "--threads",
        "1",
        "--fps",
        "1",
        "--json",
        clips.join("scenes_720p_h264.mp4").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let frames: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 60);
    for seg in &segments {
        let norm: f32 = seg.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let inside: Vec<Vec<f32>> = frames
            .iter()
            .filter(|f| {
                let t = f["pts"].as_f64().unwrap() * 1000.0;
                t >= seg.start_ms as f64 && t < seg.end_ms as f64
            })
            .map(|f| floats(&f["embedding"]))
            .collect();
        assert_eq!(inside.len() as u32, seg.frame_count);
        assert_eq!(
            seg.clip_calls, seg.frame_count,
            "all-frames mode embeds every sampled frame"
        );
        let mean = cliptag::classify::mean_embedding(inside.iter().map(Vec::as_slice)).unwrap();
        let cos = cosine(&mean, &seg.embedding);
        assert!(
            cos >= 0.9999,
            "segment at {} ms: cosine {cos}",
            seg.start_ms
        );
    }

    // Running again replaces windows instead of duplicating them, and reuses cached prompts.
    let before = store.segment_count().unwrap();
    let o = run(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(store.segment_count().unwrap(), before);
    let labels = run(&["labels", "--config", config.to_str().unwrap()]);
    let listing = String::from_utf8(labels.stdout).unwrap();
    assert!(listing.contains("dog  [5/5 prompts cached]"), "{listing}");
    assert!(
        listing.contains("a person walking in the street  [1/1 prompts cached]"),
        "{listing}"
    );

    // Filters and the other formats.
    let top = query_json(&config, &["--source", "vp9", "--top"]);
    assert_eq!(top.len(), 1);
    let later = query_json(&config, &["--source", "scenes", "--since", "0:30", "--top"]);
    assert_eq!(
        later
            .iter()
            .map(|r| r["offset_s"].as_f64().unwrap())
            .collect::<Vec<_>>(),
        vec![30.0, 40.0, 50.0]
    );
    let csv = run(&[
        "query",
        "--config",
        config.to_str().unwrap(),
        "--csv",
        "--limit",
        "2",
    ]);
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.starts_with("source,uri,kind,start,start_unix,end,end_unix,offset_s,offset_end_s,"),
        "{csv}"
    );
    let table = run(&[
        "query",
        "--config",
        config.to_str().unwrap(),
        "--source",
        "mjpeg",
        "--min-prob",
        "0",
    ]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.lines().next().unwrap().starts_with("SOURCE"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 1 + 3);
}

#[test]
fn nothing_processed_fails_and_keeps_the_database() {
    let clips = clips();
    let setup = Setup::new("dog\ncat\n");
    let good = setup.config("good.toml", &[("vp8", clips.join("vp8.webm"))], "");
    assert!(run(&["run", "--config", good.to_str().unwrap()])
        .status
        .success());
    let bad = setup.config(
        "bad.toml",
        &[
            ("random", clips.join("random.mp4")),
            ("missing", setup.path("nope.mp4")),
        ],
        "",
    );
    let o = run(&["run", "--config", bad.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("source \"random\"") && err.contains("determine type"),
        "{err}"
    );
    assert!(
        err.contains("source \"missing\"") && err.contains("nope.mp4"),
        "{err}"
    );
    let store = Store::open_existing(&setup.path("tags.db")).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert_eq!(store.segment_count().unwrap(), 1);
}

#[test]
fn bad_inputs_are_named_with_the_reason() {
    let clips = clips();
    let setup = Setup::new("dog\ncat\n");
    let sources = [("vp8", clips.join("vp8.webm"))];

    // A labels line with a control character.
    std::fs::write(setup.path("bad-labels.txt"), "dog\n# fine\nca\u{7}t\n").unwrap();
    let cfg = setup
        .config("labels.toml", &sources, "")
        .to_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("labels.txt", "bad-labels.txt");
    std::fs::write(&cfg, text).unwrap();
    let o = run(&["run", "--config", &cfg]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("bad-labels.txt") && err.contains("line 3"),
        "{err}"
    );

    // An unknown config key, with its line.
    let cfg = setup.config("unknown.toml", &sources, "colour = \"blue\"");
    let o = run(&["run", "--config", cfg.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(err.contains("colour") && err.contains("line 3"), "{err}");

    // A model directory without its tokenizer.
    let model = setup.path("model");
    std::fs::create_dir_all(model.join("onnx")).unwrap();
    for f in [
        "onnx/vision_model.onnx",
        "onnx/text_model.onnx",
        "preprocessor_config.json",
        "config.json",
    ] {
        std::fs::copy(tiny_model().join(f), model.join(f)).unwrap();
    }
    let o = run(&[
        "embed-text",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "dog",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("tokenizer.json") && err.contains("missing"),
        "{err}"
    );

    // A corrupt ONNX file.
    std::fs::copy(
        tiny_model().join("tokenizer.json"),
        model.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(model.join("onnx/vision_model.onnx"), b"not a protobuf").unwrap();
    let o = run(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--json",
        clips.join("still.png").to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("vision_model.onnx") && err.contains("tract cannot use"),
        "{err}"
    );
}

#[test]
fn a_different_model_needs_a_new_generation() {
    let clips = clips();
    let setup = Setup::new("dog\ncat\n");
    let sources = [("vp8", clips.join("vp8.webm"))];
    let with_variant = |name: &str, variant: &str| {
        let path = setup.config(name, &sources, "");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "threads = 1",
            &format!("threads = 1\nvariant = \"{variant}\""),
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let fp32 = with_variant("fp32.toml", "fp32");
    assert!(run(&["run", "--config", fp32.to_str().unwrap()])
        .status
        .success());
    // The default, "auto", would pick the int8 files; on a database of this model's fp32
    // embeddings it stays on fp32 instead of refusing to start.
    let auto = setup.config("auto.toml", &sources, "");
    let o = run(&["run", "--config", auto.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("fp32 files are used"), "{}", stderr(&o));
    let store = Store::open_existing(&setup.path("tags.db")).unwrap();
    assert_eq!(store.models_with_segments().unwrap().len(), 1);
    drop(store);
    let int8 = with_variant("int8.toml", "quantized");
    let o = run(&["run", "--config", int8.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(err.contains("--new-model-generation"), "{err}");
    let o = run(&[
        "run",
        "--config",
        int8.to_str().unwrap(),
        "--new-model-generation",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let store = Store::open_existing(&setup.path("tags.db")).unwrap();
    assert_eq!(store.models_with_segments().unwrap().len(), 2);
}

#[test]
fn embed_text_prints_ids_and_unit_embeddings() {
    let o = run(&[
        "embed-text",
        "--model",
        tiny_model().to_str().unwrap(),
        "--json",
        "a photo of a cat",
        "dog",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let ids = lines[1]["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    let e = floats(&lines[0]["embedding"]);
    assert_eq!(e.len(), 24, "width comes from the graph");
    assert!((e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
}
