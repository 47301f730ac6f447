//! Model generations: a database holds one model's embeddings, since cosines of two models
//! cannot be compared; a run with another model refuses to start unless told to begin a
//! new generation.

use super::config::Config;
use super::error::RunError;
use super::report::RunOptions;
use crate::clip::{ClipModel, ModelSettings, ModelVariant, TextTower};
use crate::store::Store;

/// `variant = "auto"` picks the int8 files, but a database built before that default by the
/// fp32 files of the same model would then refuse to start. In that one case the daemon
/// stays on fp32 and says so; switching is a deliberate `variant = "quantized"` plus
/// `--new-model-generation`.
pub(super) fn keep_fp32_generation(
    config: &Config,
    model: &ClipModel,
    store: &Store,
    options: &RunOptions,
) -> Result<Option<ClipModel>, RunError> {
    if config.model.variant != ModelVariant::Auto
        || model.spec.variant == ModelVariant::Fp32
        || options.new_model_generation
    {
        return Ok(None);
    }
    let existing = store.models_with_segments()?;
    if existing.is_empty() || existing.contains(&model.id) {
        return Ok(None);
    }
    let fp32_id = crate::clip::model_id(
        &config.model.dir,
        ModelVariant::Fp32,
        config.model.layout.forced(),
    )?;
    if !existing.contains(&fp32_id) {
        return Ok(None);
    }
    tracing::info!(
        db = %store.path().display(),
        "variant \"auto\": the database holds this model's fp32 embeddings, so the fp32 files are used; set variant = \"quantized\" and start once with --new-model-generation to move to int8"
    );
    Ok(Some(ClipModel::load_with(
        &ModelSettings {
            variant: ModelVariant::Fp32,
            ..config.model.clone()
        },
        TextTower::WhenNeeded,
    )?))
}

/// Refuse to mix two models' embeddings in one database unless asked to.
pub(super) fn check_model_generation(
    store: &Store,
    model_id: &str,
    options: &RunOptions,
) -> Result<(), RunError> {
    if options.new_model_generation {
        return Ok(());
    }
    if let Some(existing) = store
        .models_with_segments()?
        .into_iter()
        .find(|m| m != model_id)
    {
        return Err(RunError::ModelChanged {
            db: store.path().display().to_string(),
            existing,
            new: model_id.to_string(),
        });
    }
    Ok(())
}
