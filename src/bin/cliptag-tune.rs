//! cliptag-tune: adapt CLIP to your own labelled videos on a workstation; the daemon loads
//! what it writes. Argument parsing and wiring only; the work is in `cliptag::tune`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cliptag::clip::{ClipModel, LoadOptions, TextTower};
use cliptag::config::{ClassifyConfig, Config, ModelVariant};
use cliptag::tune::{Dataset, EmbedSettings, EmbeddingCache, Split};

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
    Probe(ProbeArgs),
}

#[derive(Args)]
struct ProbeArgs {
    /// The dataset: a CSV with columns `path,label[,split]` (paths relative to it).
    #[arg(long)]
    data: PathBuf,
    /// Where to write the head (JSON).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    source: ModelSource,
    /// Seed of the train/val/test split (when the CSV has none) and of the k-shot subsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Embedding cache directory [default: .cliptag-cache beside the CSV].
    #[arg(long)]
    cache: Option<PathBuf>,
}

/// The model and stage settings: the daemon's own config (so the head matches the model id
/// and the embeddings the daemon computes), or a model directory with the defaults.
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
        Command::Probe(args) => probe(args),
    }
}

fn probe(args: ProbeArgs) -> Result<ExitCode> {
    cliptag::ingest::init()?;
    let (model, settings, classify) = match (&args.source.config, &args.source.model) {
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
    let dataset = Dataset::load(&args.data, args.seed)?;
    eprintln!(
        "dataset {}: {} classes, {} train / {} val / {} test videos; model {}",
        args.data.display(),
        dataset.classes.len(),
        dataset.count(Split::Train),
        dataset.count(Split::Val),
        dataset.count(Split::Test),
        model.id
    );
    let cache_dir = args.cache.clone().unwrap_or_else(|| {
        args.data
            .parent()
            .map(|p| p.join(".cliptag-cache"))
            .unwrap_or_else(|| PathBuf::from(".cliptag-cache"))
    });
    let mut cache = EmbeddingCache::new(&cache_dir)?;
    let outcome = cliptag::tune::run_probe(
        &model,
        &dataset,
        &settings,
        &mut cache,
        &classify.prompt_templates,
        args.seed,
    )?;
    eprintln!(
        "embeddings: {} from the cache, {} computed, {} videos skipped",
        outcome.cache_hits,
        outcome.cache_misses,
        outcome.skipped.len()
    );
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
        .save(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "head written to {} (model {}); use it with [classify] head = \"{}\"",
        args.out.display(),
        outcome.head.model_id,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
