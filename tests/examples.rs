//! The shipped example configs and labels stay valid.

use cliptag::clip::ModelVariant;
use cliptag::daemon::Config;
use cliptag::ingest::Sampling;

#[test]
fn example_configs_parse() {
    let example =
        Config::load(&crate::common::repo().join("examples/cliptag.example.toml")).unwrap();
    assert_eq!(example.sampling, Sampling::Fps(1.0));
    assert_eq!(example.model.variant, ModelVariant::Auto);
    assert_eq!(example.classify.prompt_templates.len(), 5);
    assert_eq!(
        (example.keyframes.k, example.keyframes.skip_unchanged),
        (5, true)
    );
    let demo = Config::load(&crate::common::repo().join("examples/demo.toml")).unwrap();
    assert!(demo.model.dir.ends_with("models/synthetic-clip"));
    assert_eq!(demo.sources.len(), 1);
    let labels = cliptag::classify::load_labels(&demo.labels_path).unwrap();
    assert_eq!(labels.len(), 8);
    // The service's config: every source commented out until the user adds a camera.
    let service = Config::load(&crate::common::repo().join("systemd/cliptag.toml")).unwrap();
    assert_eq!(
        service.database.to_str(),
        Some("/var/lib/cliptag/cliptag.sqlite")
    );
    assert_eq!(
        service.daemon.shutdown_timeout,
        std::time::Duration::from_secs(10)
    );
    assert!(service.retention.max_age.is_some() && service.retention.max_db_bytes.is_some());
    assert!(service.sources.is_empty());
    assert!(example.sources.len() == 1 && !example.sources[0].is_live());
}

/// The README demo is right, not just running: the fine-tuned tiny model names each of the
/// demo clip's five segments (rendered by scripts/make-synthetic-demo.sh, none of them a
/// training clip) by the class it was rendered from.
#[test]
fn demo_tags_each_segment_with_its_class() {
    let repo = crate::common::repo();
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo.join("examples/demo.toml"))
        .unwrap()
        .replace(
            "../target/demo/tags.db",
            dir.path().join("demo.db").to_str().unwrap(),
        )
        .replace("\"../", &format!("\"{}/", repo.display()))
        .replace(
            "\"synthetic-",
            &format!("\"{}/examples/synthetic-", repo.display()),
        );
    let path = dir.path().join("demo.toml");
    std::fs::write(&path, config).unwrap();
    let run = crate::common::cliptag()
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let store = cliptag::store::Store::open_existing(&dir.path().join("demo.db")).unwrap();
    let top: Vec<String> = store
        .segments(None)
        .unwrap()
        .iter()
        .map(|s| s.matches[0].label.clone())
        .collect();
    assert_eq!(
        top,
        [
            "bouncing ball",
            "colour bars",
            "spokes",
            "checkerboard",
            "zone plate"
        ]
    );
}
