//! cliptag-tune: adapt CLIP to your own labelled videos on a workstation; the daemon loads
//! what it writes. Argument parsing and wiring only; the work is in `cliptag::tune`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cliptag::classify::{expand_labels, ClassifyConfig, LearnedLabels, ProbeHead};
use cliptag::clip::{ClipModel, ModelSettings, ModelVariant, TextTower};
use cliptag::config::Config;
use cliptag::keyframes::{Aggregation, KeyframeConfig};
use cliptag::tune::eval::{cosine_scores, evaluate, head_scores, Evaluation};
use cliptag::tune::export::Precisions;
use cliptag::tune::finetune::{FinetuneSettings, TrainingDevice, TrainingSetup, TrainingVideo};
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
    /// ViFi-CLIP fine-tuning of both towers from Hugging Face weights; writes Hugging Face
    /// weights (`cliptag-tune export` turns them into a model directory the daemon loads).
    Finetune {
        /// The dataset CSV (`path,label[,split]`).
        #[arg(long)]
        data: PathBuf,
        /// Hugging Face CLIP directory to start from (config.json, model.safetensors,
        /// tokenizer.json, preprocessor_config.json).
        #[arg(long)]
        base: PathBuf,
        /// Output directory for the trained weights (same layout as --base).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        /// Videos per step.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 1e-5)]
        learning_rate: f64,
        #[arg(long, default_value_t = 0.001)]
        weight_decay: f64,
        /// Fraction of the steps spent warming the learning rate up.
        #[arg(long, default_value_t = 0.1)]
        warmup: f64,
        /// Global gradient-norm cap.
        #[arg(long, default_value_t = 1.0)]
        clip_norm: f64,
        /// Patch dropout keep rate (1 = off; paper 002 uses 0.5).
        #[arg(long, default_value_t = 0.5)]
        patch_keep: f64,
        /// Leave the embeddings and this many lower blocks of each tower frozen.
        #[arg(long, default_value_t = 0)]
        freeze_layers: usize,
        /// Sampling rate and keyframes per video (the daemon's defaults).
        #[arg(long, default_value_t = 1.0)]
        fps: f64,
        #[arg(long, default_value_t = 5)]
        keyframes: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Checkpoint after every epoch here, and resume from it when it holds one.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Where to train: `cuda` needs a build with `--features tune-cuda`; `auto` takes
        /// GPU 0 when there is one.
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceArg,
    },
    /// Hugging Face CLIP weights (tuned or not) → a model directory the daemon loads:
    /// ONNX vision and text encoders (fp32 and int8) in the Xenova layout, written from Rust.
    Export {
        /// Hugging Face CLIP directory (config.json, model.safetensors, tokenizer and
        /// preprocessor files), e.g. the output of `finetune`.
        hf_dir: PathBuf,
        /// The model directory to write.
        out_dir: PathBuf,
        /// Write only the int8 encoders (what the daemon runs by default), not fp32 too.
        #[arg(long)]
        int8_only: bool,
    },
    /// Top-1/top-5, per-class accuracy, confusion and video↔text retrieval on the test
    /// split, for zero-shot and for the given head and label embeddings, per aggregation.
    Eval {
        #[command(flatten)]
        data: DataArgs,
        /// A probe head from `cliptag-tune probe`.
        #[arg(long)]
        head: Option<PathBuf>,
        /// Label embeddings from `cliptag-tune prompts`.
        #[arg(long)]
        label_embeddings: Option<PathBuf>,
        /// Aggregations to compare: the mean of keyframe embeddings, and the 3×3 grid image.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "mean,grid")]
        aggregations: Vec<AggregationArg>,
        /// Write metrics.csv, per_class.csv and one confusion matrix CSV per row here.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

/// Window aggregations to evaluate.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum AggregationArg {
    Mean,
    Grid,
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

/// The model, dataset and settings, before any video is embedded.
struct Setup {
    model: ClipModel,
    dataset: Dataset,
    settings: EmbedSettings,
    templates: Vec<String>,
    cache: EmbeddingCache,
}

impl Setup {
    fn embed(&mut self, settings: &EmbedSettings) -> Result<EmbeddedDataset> {
        let (hits, misses) = (self.cache.hits, self.cache.misses);
        let embedded =
            cliptag::tune::embed_dataset(&self.model, &self.dataset, settings, &mut self.cache)?;
        eprintln!(
            "embeddings ({:?}): {} from the cache, {} computed, {} videos skipped",
            settings.keyframes.aggregate,
            self.cache.hits - hits,
            self.cache.misses - misses,
            embedded.skipped.len()
        );
        Ok(embedded)
    }
}

impl DataArgs {
    fn prepare(&self) -> Result<Prepared> {
        let mut setup = self.setup()?;
        let settings = setup.settings.clone();
        let embedded = setup.embed(&settings)?;
        Ok(Prepared {
            model: setup.model,
            dataset: setup.dataset,
            embedded,
            templates: setup.templates,
        })
    }

    fn setup(&self) -> Result<Setup> {
        cliptag::ingest::init()?;
        let (model, settings, classify) = match (&self.source.config, &self.source.model) {
            (Some(path), _) => {
                let config = Config::load(path)?;
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
        Ok(Setup {
            model,
            dataset,
            settings,
            templates: classify.prompt_templates,
            cache: EmbeddingCache::new(&cache_dir)?,
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
        Command::Finetune {
            data,
            base,
            out,
            epochs,
            batch,
            learning_rate,
            weight_decay,
            warmup,
            clip_norm,
            patch_keep,
            freeze_layers,
            fps,
            keyframes,
            seed,
            checkpoints,
            device,
        } => {
            anyhow::ensure!(
                patch_keep > 0.0 && patch_keep <= 1.0,
                "--patch-keep must be in (0, 1], got {patch_keep}"
            );
            anyhow::ensure!(fps > 0.0 && fps.is_finite(), "--fps must be positive");
            let settings = FinetuneSettings {
                epochs,
                batch_videos: batch.max(1),
                learning_rate,
                weight_decay,
                warmup_fraction: warmup,
                clip_norm,
                patch_keep,
                freeze_layers,
                seed,
                checkpoint_dir: checkpoints,
            };
            let embed = EmbedSettings {
                sampling: cliptag::ingest::Sampling::Fps(fps),
                keyframes: KeyframeConfig {
                    k: keyframes.max(1),
                    ..Default::default()
                },
            };
            let device = match device {
                DeviceArg::Auto => TrainingDevice::Auto,
                DeviceArg::Cpu => TrainingDevice::Cpu,
                DeviceArg::Cuda => TrainingDevice::Cuda,
            }
            .open()?;
            eprintln!("training on {device:?}");
            finetune(&data, &base, &out, &settings, &embed, seed, device)
        }
        Command::Export {
            hf_dir,
            out_dir,
            int8_only,
        } => {
            let precisions = if int8_only {
                Precisions::Int8Only
            } else {
                Precisions::Both
            };
            let report = cliptag::tune::export::export_model_dir(&hf_dir, &out_dir, precisions)?;
            for (path, bytes) in report {
                println!("{:>12}  {}", bytes, path.display());
            }
            eprintln!(
                "check it with: cliptag model check {}; use it with [model] dir = {:?}",
                out_dir.display(),
                out_dir.display().to_string()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            data,
            head,
            label_embeddings,
            aggregations,
            out_dir,
        } => eval(
            &data,
            head.as_deref(),
            label_embeddings.as_deref(),
            &aggregations,
            out_dir.as_deref(),
        ),
    }
}

fn finetune(
    data: &Path,
    base: &Path,
    out: &Path,
    settings: &FinetuneSettings,
    embed: &EmbedSettings,
    seed: u64,
    device: candle_core::Device,
) -> Result<ExitCode> {
    cliptag::ingest::init()?;
    let mut setup = TrainingSetup::open(base, device)?;
    let dataset = Dataset::load(data, seed)?;
    let class_ids = setup.class_ids(&dataset.classes)?;
    let decode = |split| setup.videos(&dataset, split, embed);
    let (train, val, test) = (
        decode(Split::Train)?,
        decode(Split::Val)?,
        decode(Split::Test)?,
    );
    anyhow::ensure!(!train.is_empty(), "{}: no training videos", data.display());
    eprintln!(
        "dataset {}: {} classes, {} train / {} val / {} test videos",
        data.display(),
        dataset.classes.len(),
        train.len(),
        val.len(),
        test.len()
    );
    let accuracy = |videos: &[TrainingVideo]| {
        cliptag::tune::finetune::accuracy(&setup.clip, &class_ids, videos, &setup.device)
    };
    let before = accuracy(&test)?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] loss {msg} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let log = cliptag::tune::finetune::finetune(
        &setup.clip,
        &mut setup.varmap,
        &class_ids,
        &train,
        &val,
        settings,
        &setup.device,
        &mut |step, total, loss, rate| {
            bar.set_length(total as u64);
            bar.set_position(step as u64);
            bar.set_message(format!("{loss:.4} ({rate:.1} videos/s)"));
        },
    )?;
    bar.finish_and_clear();
    let after = accuracy(&test)?;
    let train_after = accuracy(&train)?;
    println!(
        "{:>5} {:>6} {:>10} {:>8} {:>10}",
        "epoch", "steps", "loss", "val", "videos/s"
    );
    for e in &log {
        println!(
            "{:>5} {:>6} {:>10.4} {:>7.1}% {:>10.2}",
            e.epoch,
            e.steps,
            e.train_loss,
            100.0 * e.val_accuracy,
            e.videos_per_second
        );
    }
    println!(
        "test top-1: {:.1}% before, {:.1}% after (train {:.1}%; {} epochs, {:.0} s)",
        100.0 * before,
        100.0 * after,
        100.0 * train_after,
        log.len(),
        started.elapsed().as_secs_f64()
    );
    setup.save(base, out)?;
    cliptag::tune::curves::write_finetune_log(out, &log)?;
    eprintln!(
        "trained weights written to {}, training curves to {}",
        out.display(),
        out.join("training_curves.png").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn eval(
    data: &DataArgs,
    head: Option<&Path>,
    label_embeddings: Option<&Path>,
    aggregations: &[AggregationArg],
    out_dir: Option<&Path>,
) -> Result<ExitCode> {
    let mut setup = data.setup()?;
    let classes = setup.dataset.classes.clone();
    let head = head
        .map(|path| -> Result<ProbeHead> {
            let head = ProbeHead::load(path)?;
            check_model(path, &head.model_id, &setup.model.id)?;
            let labels = expand_labels(&classes, &[]);
            Ok(head.for_labels(&labels, path)?)
        })
        .transpose()?;
    let learned = label_embeddings
        .map(|path| -> Result<Vec<Vec<f32>>> {
            let learned = LearnedLabels::load(path)?;
            check_model(path, &learned.model_id, &setup.model.id)?;
            classes
                .iter()
                .map(|c| {
                    learned.get(c).map(<[f32]>::to_vec).with_context(|| {
                        format!("{}: no learned embedding for class {c:?}", path.display())
                    })
                })
                .collect()
        })
        .transpose()?;
    let zero_shot = cliptag::tune::zero_shot_embeddings(&setup.model, &classes, &setup.templates)?;

    let mut rows: Vec<(String, String, Evaluation)> = Vec::new();
    for aggregation in aggregations {
        let mut settings = setup.settings.clone();
        settings.keyframes.aggregate = match aggregation {
            AggregationArg::Mean => Aggregation::Mean,
            AggregationArg::Grid => Aggregation::Grid,
        };
        let test = setup.embed(&settings)?.test;
        let name = format!("{:?}", settings.keyframes.aggregate).to_lowercase();
        let n = classes.len();
        rows.push((
            "zero-shot".into(),
            name.clone(),
            evaluate(&cosine_scores(&zero_shot, &test.x), &test.y, n, true),
        ));
        if let Some(learned) = &learned {
            rows.push((
                "prompts".into(),
                name.clone(),
                evaluate(&cosine_scores(learned, &test.x), &test.y, n, true),
            ));
        }
        if let Some(head) = &head {
            rows.push((
                "probe".into(),
                name.clone(),
                evaluate(&head_scores(head, &test.x), &test.y, n, false),
            ));
        }
    }

    let percent = |v: f64| format!("{:.1}", 100.0 * v);
    let retrieval = |r: &Option<cliptag::tune::eval::Retrieval>| match r {
        Some(r) => [
            percent(r.recall_at[0]),
            percent(r.recall_at[1]),
            percent(r.recall_at[2]),
            format!("{}", r.median_rank),
        ],
        None => ["-".into(), "-".into(), "-".into(), "-".into()],
    };
    let header = [
        "method",
        "aggregation",
        "videos",
        "top1",
        "top5",
        "v2t_r1",
        "v2t_r5",
        "v2t_r10",
        "v2t_medr",
        "t2v_r1",
        "t2v_r5",
        "t2v_r10",
        "t2v_medr",
    ];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(method, aggregation, e)| {
            let mut row = vec![
                method.clone(),
                aggregation.clone(),
                e.videos.to_string(),
                percent(e.top1),
                percent(e.top5),
            ];
            row.extend(retrieval(&e.video_to_text));
            row.extend(retrieval(&e.text_to_video));
            row
        })
        .collect();
    println!("{}", header.map(|h| format!("{h:>9}")).join(" "));
    for row in &table {
        println!(
            "{}",
            row.iter()
                .map(|c| format!("{c:>9}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut metrics = header.join(",") + "\n";
        for row in &table {
            metrics += &(row.join(",") + "\n");
        }
        std::fs::write(dir.join("metrics.csv"), metrics)?;
        let mut per_class = String::from("method,aggregation,class,correct,videos\n");
        for (method, aggregation, e) in &rows {
            for (class, (correct, videos)) in classes.iter().zip(&e.per_class) {
                per_class += &format!("{method},{aggregation},\"{class}\",{correct},{videos}\n");
            }
            let mut confusion = String::from("truth\\predicted");
            for class in &classes {
                confusion += &format!(",\"{class}\"");
            }
            confusion.push('\n');
            for (class, counts) in classes.iter().zip(&e.confusion) {
                confusion += &format!("\"{class}\"");
                for c in counts {
                    confusion += &format!(",{c}");
                }
                confusion.push('\n');
            }
            std::fs::write(
                dir.join(format!("confusion_{method}_{aggregation}.csv")),
                confusion,
            )?;
        }
        std::fs::write(dir.join("per_class.csv"), per_class)?;
        eprintln!(
            "metrics, per-class accuracy and confusion matrices written to {}",
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A tuned file must come from the model the evaluation runs.
fn check_model(path: &Path, file_model: &str, model: &str) -> Result<()> {
    anyhow::ensure!(
        file_model == model,
        "{}: made for model {file_model}, but the evaluation runs model {model}",
        path.display()
    );
    Ok(())
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
    cliptag::tune::curves::write_prompts_curve(out, &outcome.learned.curve)?;
    eprintln!(
        "label embeddings written to {} (model {}); use them with [classify] label_embeddings = \"{}\"",
        out.display(),
        outcome.file.model_id,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
