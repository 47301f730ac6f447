//! The shipped example configs and labels stay valid.

mod common;

use cliptag::config::{Config, ModelVariant};
use cliptag::ingest::Sampling;

#[test]
fn example_configs_parse() {
    let example = Config::load(&common::repo().join("examples/cliptag.example.toml")).unwrap();
    assert_eq!(example.sampling, Sampling::Fps(1.0));
    assert_eq!(example.model.variant, ModelVariant::Auto);
    assert_eq!(example.classify.prompt_templates.len(), 5);
    assert_eq!(
        (example.keyframes.k, example.keyframes.skip_unchanged),
        (5, true)
    );
    let demo = Config::load(&common::repo().join("examples/demo.toml")).unwrap();
    assert!(demo.model.dir.ends_with("models/tiny-clip"));
    assert_eq!(demo.sources.len(), 1);
    let labels = cliptag::classify::load_labels(&demo.labels_path).unwrap();
    assert!(labels.len() >= 5);
    // The service's config: every source commented out until the user adds a camera.
    let service = Config::load(&common::repo().join("systemd/cliptag.toml")).unwrap();
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
