//! Everything a run sets up before the first frame: the model, the database and its single
//! writer (with retention applied once), and the label set; then the tagger built on them.
//!
//! Rules: the order is chosen so that a mistake stops the run before anything slow or
//! irreversible happens — the model generation is checked before anything is written, and
//! the labels (and any tuned head) are checked before the first source opens.

use std::sync::Arc;

use super::config::Config;
use super::error::RunError;
use super::generation::{check_model_generation, keep_fp32_generation};
use super::labels::prepare_labels;
use super::report::RunOptions;
use super::tagger::Tagger;
use crate::clip::{ClipModel, PreprocessConfig, TextTower};
use crate::clock::Clock;
use crate::ingest::FileIdentity;
use crate::store::{ModelRecord, Store, StoreWriter, WriterOptions};

/// What the inference side of a run starts with.
pub(super) struct Prepared {
    pub tagger: Tagger<ClipModel>,
    /// The daemon's own read connection (label cache look-ups on reload).
    pub store: Store,
    pub writer: Arc<StoreWriter>,
    pub model_id: String,
    /// How the source threads preprocess keyframes for this model.
    pub recipe: PreprocessConfig,
    pub labels: usize,
    pub prompts_encoded: usize,
    /// File sources to leave out (see [`RunOptions::skip_tagged_files`]).
    pub skipped: Vec<String>,
}

pub(super) fn prepare(
    config: &Config,
    options: &RunOptions,
    clock: &Arc<dyn Clock>,
) -> Result<Prepared, RunError> {
    // The text tower loads only if some label's prompts are not in the database's cache,
    // and is released once they are embedded: the daemon then holds the vision tower alone.
    let mut model = ClipModel::load_with(&config.model, TextTower::WhenNeeded)?;
    let store = Store::open(&config.database)?;
    if let Some(fp32) = keep_fp32_generation(config, &model, &store, options)? {
        model = fp32;
    }
    tracing::info!(model = %model.id, variant = ?model.spec.variant, device = %model.device, dim = model.embedding_dim, load_ms = model.load_time.as_millis() as u64, "model loaded");
    check_model_generation(&store, &model.id, options)?;
    let writer = Arc::new(StoreWriter::spawn_with(
        &config.database,
        WriterOptions {
            retention: config.retention,
            clock: clock.clone(),
            ..WriterOptions::default()
        },
    )?);
    if config.retention.limits_anything() {
        let r = writer.enforce_retention(clock.now())?;
        if r.segments_deleted > 0 {
            tracing::info!(segments = r.segments_deleted, "retention at start-up");
        }
    }
    writer.register_model(ModelRecord {
        id: model.id.clone(),
        path: model.dir.display().to_string(),
        embedding_dim: model.embedding_dim,
    })?;
    let (labels, prompts_encoded) = prepare_labels(
        &model,
        &store,
        &writer,
        &config.labels_path,
        &config.classify,
    )?;
    tracing::info!(
        labels = labels.labels.len(),
        prompts_encoded,
        "labels ready"
    );
    let model_id = model.id.clone();
    let recipe = model.preprocess.clone();
    let label_count = labels.labels.len();
    let skipped = if options.skip_tagged_files {
        already_tagged(
            config,
            &store,
            &format!("{model_id}:{}", labels.fingerprint()),
        )?
    } else {
        Vec::new()
    };
    Ok(Prepared {
        tagger: Tagger::new(
            model,
            model_id.clone(),
            labels,
            &config.keyframes,
            &config.classify,
        ),
        store,
        writer,
        model_id,
        recipe,
        labels: label_count,
        prompts_encoded,
        skipped,
    })
}

/// File sources the database has as tagged to their end, unchanged since, with the same
/// model and label set.
fn already_tagged(
    config: &Config,
    store: &Store,
    tagged_with: &str,
) -> Result<Vec<String>, RunError> {
    let mut skipped = Vec::new();
    for source in config.sources.iter().filter(|s| !s.is_live()) {
        let Some(now) = FileIdentity::of(source.location.secret()) else {
            continue;
        };
        let Some(then) = store.tagged_file(&source.name, source.location.shown())? else {
            continue;
        };
        if then.size == now.size && then.mtime == now.mtime && then.tagged_with == tagged_with {
            tracing::info!(source = %source.name, "already tagged, unchanged: skipped");
            skipped.push(source.name.clone());
        }
    }
    Ok(skipped)
}
