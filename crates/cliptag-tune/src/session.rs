//! A tuning session: the model whose frozen embeddings are tuned on, the dataset, the
//! daemon's stage settings, and the embedding cache; opened from the daemon's own config (so
//! what is written matches the model id and the embeddings the daemon computes) or from a
//! model directory with the daemon's defaults.

use std::path::PathBuf;

use cliptag::classify::{expand_labels, ClassifyConfig, LabelSet};
use cliptag::clip::{ClipModel, ModelSettings, ModelVariant, TextTower};
use cliptag::daemon::Config;
use cliptag::Disposition;

use super::dataset::{Dataset, Split};
use super::embed::{EmbedSettings, EmbeddingCache};
use super::error::TuneError;
use super::probe::Labelled;

/// The dataset and the model whose frozen embeddings it is tuned on: the flags of every
/// frozen-encoder mode.
#[derive(Debug, Clone, clap::Args)]
pub struct DataOptions {
    /// The dataset: a CSV with columns `path,label[,split]` (paths relative to it).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub source: ModelSource,
    /// Seed of the train/val/test split (when the CSV has none) and of the k-shot subsets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Embedding cache directory [default: .cliptag-cache beside the CSV].
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Where the model and stage settings come from.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ModelSource {
    /// The daemon's config: model, sampling, keyframes and prompt templates come from it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// A model directory, with the daemon's default settings (variant auto, 1 fps, 5
    /// keyframes).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// The model, dataset and settings of a run, before any video is embedded.
pub struct Session {
    pub model: ClipModel,
    pub dataset: Dataset,
    pub settings: EmbedSettings,
    /// The prompt templates zero-shot embeddings are built with.
    pub templates: Vec<String>,
    pub cache: EmbeddingCache,
}

impl DataOptions {
    pub fn open(&self) -> Result<Session, TuneError> {
        cliptag::ingest::init().map_err(|e| TuneError::Training(e.to_string()))?;
        let (model, settings, classify) = match (&self.source.config, &self.source.model) {
            (Some(path), _) => {
                let config = Config::load(path).map_err(|e| TuneError::Model {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let model = ClipModel::load_with(&config.model, TextTower::WhenNeeded)?;
                let settings = EmbedSettings {
                    sampling: config.sampling,
                    keyframes: config.keyframes.clone(),
                };
                (model, settings, config.classify)
            }
            (None, Some(dir)) => {
                let model = ClipModel::load_with(
                    &ModelSettings::cpu(dir, ModelVariant::Auto, 0),
                    TextTower::WhenNeeded,
                )?;
                (model, EmbedSettings::default(), ClassifyConfig::default())
            }
            (None, None) => {
                return Err(TuneError::Model {
                    path: self.data.display().to_string(),
                    reason: "give --config or --model".into(),
                })
            }
        };
        let dataset = Dataset::load(&self.data, self.seed)?;
        let cache_dir = self.cache.clone().unwrap_or_else(|| {
            self.data
                .parent()
                .map(|p| p.join(".cliptag-cache"))
                .unwrap_or_else(|| PathBuf::from(".cliptag-cache"))
        });
        Ok(Session {
            model,
            dataset,
            settings,
            templates: classify.prompt_templates,
            cache: EmbeddingCache::new(&cache_dir)?,
        })
    }
}

impl Session {
    /// The dataset's embeddings under `settings` (the session's own, or a variation such as
    /// another aggregation), through the cache.
    pub fn embed(&mut self, settings: &EmbedSettings) -> Result<EmbeddedDataset, TuneError> {
        let (hits, misses) = (self.cache.hits, self.cache.misses);
        let mut embedded = embed_dataset(&self.model, &self.dataset, settings, &mut self.cache)?;
        embedded.from_cache = self.cache.hits - hits;
        embedded.computed = self.cache.misses - misses;
        Ok(embedded)
    }
}

/// A dataset's video embeddings by split, through the cache.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedDataset {
    pub train: Labelled,
    pub val: Labelled,
    pub test: Labelled,
    /// Videos that could not be decoded, with the reason; they are left out.
    pub skipped: Vec<String>,
    /// Videos whose embedding came from the cache, and those decoded and embedded now.
    pub from_cache: usize,
    pub computed: usize,
}

/// Embed every video of the dataset; undecodable videos are skipped with a warning, and
/// each split must keep at least one video.
pub fn embed_dataset(
    model: &ClipModel,
    dataset: &Dataset,
    settings: &EmbedSettings,
    cache: &mut EmbeddingCache,
) -> Result<EmbeddedDataset, TuneError> {
    let mut out = EmbeddedDataset::default();
    for example in &dataset.examples {
        match cache.video_embedding(model, settings, &example.path) {
            Ok(embedding) => {
                let set = match example.split {
                    Split::Train => &mut out.train,
                    Split::Val => &mut out.val,
                    Split::Test => &mut out.test,
                };
                set.x.push(embedding);
                set.y.push(example.class);
            }
            Err(e) if e.disposition() == Disposition::Skip => {
                tracing::warn!("skipped: {e}");
                out.skipped.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    for (split, set) in [
        (Split::Train, &out.train),
        (Split::Val, &out.val),
        (Split::Test, &out.test),
    ] {
        if set.y.is_empty() {
            return Err(TuneError::Dataset {
                path: dataset.csv.display().to_string(),
                reason: format!(
                    "no usable video in the {} split; tuning needs train, val and test videos",
                    split.name()
                ),
            });
        }
    }
    Ok(out)
}

/// The classes' zero-shot embeddings: prompt ensembles as the daemon builds them.
pub fn zero_shot_embeddings(
    model: &ClipModel,
    classes: &[String],
    templates: &[String],
) -> Result<Vec<Vec<f32>>, TuneError> {
    let labels = expand_labels(classes, templates);
    let prompts: Vec<String> = labels.iter().flat_map(|l| l.prompts.clone()).collect();
    let encoded: std::collections::HashMap<String, Vec<f32>> = prompts
        .iter()
        .cloned()
        .zip(model.embed_texts(&prompts)?.into_iter().map(|(_, e)| e))
        .collect();
    let set = LabelSet::build(labels, |p| {
        encoded.get(p).cloned().ok_or(TuneError::Cache {
            path: p.to_string(),
            reason: "prompt not encoded".into(),
        })
    })?;
    Ok(set.embeddings)
}
