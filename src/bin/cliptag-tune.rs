//! cliptag-tune: adapt CLIP to your own labelled videos on a workstation; the daemon loads
//! what it writes. Argument parsing and wiring only; the work is in `cliptag::tune`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cliptag::clip::{ClipModel, LoadOptions, TextTower};
use cliptag::config::{ClassifyConfig, Config, ModelVariant};
use cliptag::tune::{
    Dataset, EmbedSettings, EmbeddedDataset, EmbeddingCache, PromptSettings, Split,
};

#[derive(Parser)]
#[command(name = "cliptag-tune", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Linear probe on frozen video embeddings (paper 002): a head file the daemon loads
    /// with `[classify] head = "..."`.
    Probe {
        #[command(flatten)]
        data: DataArgs,
        /// Where to write the head (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Learn the labels' embeddings on frozen video embeddings, starting from zero-shot: a
    /// file the daemon loads with `[classify] label_embeddings = "..."`.
    Prompts {
        #[command(flatten)]
        data: DataArgs,
        /// Where to write the label embeddings (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Weight of the learned embeddings against the zero-shot ones (0 = zero-shot,
        /// 1 = learned only).
        #[arg(long, default_value_t = 0.5)]
        interpolation: f64,
        #[arg(long, default_value_t = 300)]
        epochs: usize,
        #[arg(long, default_value_t = 2e-3)]
        learning_rate: f64,
    },
}

/// The dataset and the model whose frozen embeddings it is tuned on.
#[derive(Args)]
struct DataArgs {
    /// The dataset: a CSV with columns `path,label[,split]` (paths relative to it).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    source: ModelSource,
    /// Seed of the train/val/test split (when the CSV has none) and of the k-shot subsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Embedding cache directory [default: .cliptag-cache beside the CSV].
    #[arg(long)]
    cache: Option<PathBuf>,
}

/// The model and stage settings: the daemon's own config (so the output matches the model
/// id and the embeddings the daemon computes), or a model directory with the defaults.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct ModelSource {
    /// The daemon's config: model, sampling, keyframes and prompt templates come from it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A model directory, with the daemon's default settings (variant auto, 1 fps, 5
    /// keyframes).
    #[arg(long)]
    model: Option<PathBuf>,
}

/// Everything a mode needs: the model, the dataset and its embeddings.
struct Prepared {
    model: ClipModel,
    dataset: Dataset,
    embedded: EmbeddedDataset,
    templates: Vec<String>,
}

impl DataArgs {
    fn prepare(&self) -> Result<Prepared> {
        cliptag::ingest::init()?;
        let (model, settings, classify) = match (&self.source.config, &self.source.model) {
            (Some(path), _) => {
                let config = Config::load(path)?;
                let model = ClipModel::load_with(
                    &config.model.dir,
                    &LoadOptions::from_config(&config.model, TextTower::WhenNeeded),
                )?;
                let settings = EmbedSettings {
                    sampling: config.sampling,
                    keyframes: config.keyframes.clone(),
                };
                (model, settings, config.classify)
            }
            (None, Some(dir)) => {
                let options = LoadOptions {
                    text_tower: TextTower::WhenNeeded,
                    ..LoadOptions::cpu(ModelVariant::Auto, 0)
                };
                let model = ClipModel::load_with(dir, &options)?;
                (model, EmbedSettings::default(), ClassifyConfig::default())
            }
            (None, None) => anyhow::bail!("give --config or --model"),
        };
        let dataset = Dataset::load(&self.data, self.seed)?;
        eprintln!(
            "dataset {}: {} classes, {} train / {} val / {} test videos; model {}",
            self.data.display(),
            dataset.classes.len(),
            dataset.count(Split::Train),
            dataset.count(Split::Val),
            dataset.count(Split::Test),
            model.id
        );
        let cache_dir = self.cache.clone().unwrap_or_else(|| {
            self.data
                .parent()
                .map(|p| p.join(".cliptag-cache"))
                .unwrap_or_else(|| PathBuf::from(".cliptag-cache"))
        });
        let mut cache = EmbeddingCache::new(&cache_dir)?;
        let embedded = cliptag::tune::embed_dataset(&model, &dataset, &settings, &mut cache)?;
        eprintln!(
            "embeddings: {} from the cache, {} computed, {} videos skipped",
            cache.hits,
            cache.misses,
            embedded.skipped.len()
        );
        Ok(Prepared {
            model,
            dataset,
            embedded,
            templates: classify.prompt_templates,
        })
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLIPTAG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tract_linalg=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Probe { data, out } => probe(&data, &out),
        Command::Prompts {
            data,
            out,
            interpolation,
            epochs,
            learning_rate,
        } => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&interpolation),
                "--interpolation must be in [0, 1], got {interpolation}"
            );
            let settings = PromptSettings {
                epochs,
                learning_rate,
                interpolation,
            };
            prompts(&data, &out, &settings)
        }
    }
}

fn probe(data: &DataArgs, out: &Path) -> Result<ExitCode> {
    let p = data.prepare()?;
    let outcome =
        cliptag::tune::run_probe(&p.model, &p.dataset, &p.embedded, &p.templates, data.seed)?;
    println!(
        "{:<10} {:>6} {:>8} {:>8} {:>8}",
        "shots", "train", "l2", "val", "test"
    );
    for row in &outcome.report.rows {
        let shots = row.shots.map_or("all".to_string(), |s| s.to_string());
        println!(
            "{:<10} {:>6} {:>8.0e} {:>7.1}% {:>7.1}%",
            shots,
            row.train_size,
            row.l2,
            100.0 * row.val_accuracy,
            100.0 * row.test_accuracy
        );
    }
    println!(
        "{:<10} {:>6} {:>8} {:>8} {:>7.1}%",
        "zero-shot",
        0,
        "-",
        "-",
        100.0 * outcome.zero_shot_test_accuracy
    );
    outcome
        .head
        .save(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "head written to {} (model {}); use it with [classify] head = \"{}\"",
        out.display(),
        outcome.head.model_id,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn prompts(data: &DataArgs, out: &Path, settings: &PromptSettings) -> Result<ExitCode> {
    let p = data.prepare()?;
    let outcome =
        cliptag::tune::run_prompts(&p.model, &p.dataset, &p.embedded, &p.templates, settings)?;
    println!("{:<16} {:>8} {:>8}", "labels", "val", "test");
    println!(
        "{:<16} {:>7.1}% {:>7.1}%",
        "zero-shot",
        100.0 * outcome.zero_shot_val_accuracy,
        100.0 * outcome.zero_shot_test_accuracy
    );
    println!(
        "{:<16} {:>7.1}% {:>7.1}%",
        format!("learned α={}", settings.interpolation),
        100.0 * outcome.val_accuracy,
        100.0 * outcome.test_accuracy
    );
    eprintln!(
        "best epoch {} of {} (training loss {:.3} → {:.3})",
        outcome.learned.best_epoch,
        settings.epochs,
        outcome.learned.curve.first().map_or(f64::NAN, |c| c.0),
        outcome.learned.curve.last().map_or(f64::NAN, |c| c.0),
    );
    outcome
        .file
        .save(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "label embeddings written to {} (model {}); use them with [classify] label_embeddings = \"{}\"",
        out.display(),
        outcome.file.model_id,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
