//! cliptag-tune: adapt CLIP to your own labelled videos on a workstation; the daemon loads
//! what it writes. Argument parsing, printing and wiring only; the work is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cliptag::keyframes::{Aggregation, KeyframeConfig};
use cliptag_tune::eval_run::{metric_cells, run_eval, write_csvs, METRIC_COLUMNS};
use cliptag_tune::export::Precisions;
use cliptag_tune::finetune::{FinetuneSettings, TrainingDevice, TrainingSetup, TrainingVideo};
use cliptag_tune::{DataOptions, Dataset, EmbedSettings, PromptSettings, Session, Split};

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
        data: DataOptions,
        /// Where to write the head (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Learn the labels' embeddings on frozen video embeddings, starting from zero-shot: a
    /// file the daemon loads with `[classify] label_embeddings = "..."`.
    Prompts {
        #[command(flatten)]
        data: DataOptions,
        /// Where to write the label embeddings (JSON).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        settings: PromptSettings,
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
        #[command(flatten)]
        settings: FinetuneSettings,
        /// Sampling rate and keyframes per video (the daemon's defaults).
        #[arg(long, default_value_t = 1.0)]
        fps: f64,
        #[arg(long, default_value_t = 5)]
        keyframes: usize,
        /// Where to train: `cuda` needs a build with `-p cliptag-tune --features cuda`;
        /// `auto` takes GPU 0 when there is one.
        #[arg(long, value_enum, default_value_t)]
        device: TrainingDevice,
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
        data: DataOptions,
        /// A probe head from `cliptag-tune probe`.
        #[arg(long)]
        head: Option<PathBuf>,
        /// Label embeddings from `cliptag-tune prompts`.
        #[arg(long)]
        label_embeddings: Option<PathBuf>,
        /// Aggregations to compare: the mean of keyframe embeddings, and the 3×3 grid image.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "mean,grid")]
        aggregations: Vec<Aggregation>,
        /// Write metrics.csv, per_class.csv and one confusion matrix CSV per row here.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
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
            settings,
        } => {
            settings.validate()?;
            prompts(&data, &out, &settings)
        }
        Command::Finetune {
            data,
            base,
            out,
            settings,
            fps,
            keyframes,
            device,
        } => {
            settings.validate()?;
            anyhow::ensure!(fps > 0.0 && fps.is_finite(), "--fps must be positive");
            let embed = EmbedSettings {
                sampling: cliptag::ingest::Sampling::Fps(fps),
                keyframes: KeyframeConfig {
                    k: keyframes.max(1),
                    ..Default::default()
                },
            };
            let device = device.open()?;
            eprintln!("training on {device:?}");
            finetune(&data, &base, &out, &settings, &embed, device)
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
            let report = cliptag_tune::export::export_model_dir(&hf_dir, &out_dir, precisions)?;
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
    device: candle_core::Device,
) -> Result<ExitCode> {
    cliptag::ingest::init()?;
    let mut setup = TrainingSetup::open(base, device)?;
    let dataset = Dataset::load(data, settings.seed)?;
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
        cliptag_tune::finetune::accuracy(&setup.clip, &class_ids, videos, &setup.device)
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
    let log = cliptag_tune::finetune::finetune(
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
    cliptag_tune::curves::write_finetune_log(out, &log)?;
    eprintln!(
        "trained weights written to {}, training curves to {}",
        out.display(),
        out.join("training_curves.png").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The session opened and embedded with its own settings, the counts said as they were.
fn prepare(data: &DataOptions) -> Result<(Session, cliptag_tune::EmbeddedDataset)> {
    let mut session = data.open()?;
    report_dataset(data, &session);
    let settings = session.settings.clone();
    let embedded = embed(&mut session, &settings)?;
    Ok((session, embedded))
}

fn report_dataset(data: &DataOptions, session: &Session) {
    let d = &session.dataset;
    eprintln!(
        "dataset {}: {} classes, {} train / {} val / {} test videos; model {}",
        data.data.display(),
        d.classes.len(),
        d.count(Split::Train),
        d.count(Split::Val),
        d.count(Split::Test),
        session.model.id
    );
}

fn embed(session: &mut Session, settings: &EmbedSettings) -> Result<cliptag_tune::EmbeddedDataset> {
    let embedded = session.embed(settings)?;
    eprintln!(
        "embeddings ({:?}): {} from the cache, {} computed, {} videos skipped",
        settings.keyframes.aggregate,
        embedded.from_cache,
        embedded.computed,
        embedded.skipped.len()
    );
    Ok(embedded)
}

fn eval(
    data: &DataOptions,
    head: Option<&Path>,
    label_embeddings: Option<&Path>,
    aggregations: &[Aggregation],
    out_dir: Option<&Path>,
) -> Result<ExitCode> {
    let mut session = data.open()?;
    report_dataset(data, &session);
    let rows = run_eval(&mut session, head, label_embeddings, aggregations)?;
    println!("{}", METRIC_COLUMNS.map(|h| format!("{h:>9}")).join(" "));
    for row in &rows {
        println!(
            "{}",
            metric_cells(row)
                .iter()
                .map(|c| format!("{c:>9}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some(dir) = out_dir {
        write_csvs(dir, &session.dataset.classes, &rows)?;
        eprintln!(
            "metrics, per-class accuracy and confusion matrices written to {}",
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn probe(data: &DataOptions, out: &Path) -> Result<ExitCode> {
    let (s, embedded) = prepare(data)?;
    let outcome =
        cliptag_tune::run_probe(&s.model, &s.dataset, &embedded, &s.templates, data.seed)?;
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

fn prompts(data: &DataOptions, out: &Path, settings: &PromptSettings) -> Result<ExitCode> {
    let (s, embedded) = prepare(data)?;
    let outcome =
        cliptag_tune::run_prompts(&s.model, &s.dataset, &embedded, &s.templates, settings)?;
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
    cliptag_tune::curves::write_prompts_curve(out, &outcome.learned.curve)?;
    eprintln!(
        "label embeddings written to {} (model {}); use them with [classify] label_embeddings = \"{}\"",
        out.display(),
        outcome.file.model_id,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
