//! `cliptag`: argument parsing and wiring only; the work lives in the library.
//!
//! Exit codes are chosen for systemd's `Restart=on-failure`: 1 when a run processed
//! nothing, 75 (EX_TEMPFAIL) for trouble worth retrying, 78 (EX_CONFIG) for a broken
//! config, model or labels file that a restart cannot fix (list it in
//! `RestartPreventExitStatus=`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use cliptag::clip::{ClipModel, ModelSettings, TextTower};
use cliptag::clock::{Clock, SystemClock};
use cliptag::daemon::Config;
use cliptag::daemon::{self, Progress, RunError, RunOptions, SourceReport};
use cliptag::ingest::SamplingSection;
use cliptag::query::{parse_time_bound, write_rows, write_source_states, Format};
use cliptag::store::{MatchQuery, Store};
use cliptag::Disposition;

#[derive(Parser)]
#[command(
    name = "cliptag",
    version,
    about = "Tag video with CLIP and keep a queryable log in SQLite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tag the configured sources: files until they end, cameras until SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Accept a database that holds segments of another model.
        #[arg(long)]
        new_model_generation: bool,
    },
    /// Print what was seen.
    Query(QueryArgs),
    /// Show each source's state as the daemon last recorded it.
    Status {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        #[arg(long)]
        csv: bool,
    },
    /// List labels, their prompts, and whether their embeddings are cached.
    Labels {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print one JSON line per sampled frame with its CLIP embedding.
    Embed {
        #[command(flatten)]
        model: ModelSettings,
        #[command(flatten)]
        sampling: SamplingSection,
        /// Output JSON lines (the only format).
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        inputs: Vec<String>,
    },
    /// Inspect model directories.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Print token ids and the CLIP text embedding of each text as JSON lines.
    EmbedText {
        #[command(flatten)]
        model: ModelSettings,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        texts: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Load a model as the daemon would, describe it and self-test it; non-zero exit with the
    /// reason when it is unusable.
    Check {
        #[command(flatten)]
        model: ModelSettings,
    },
    /// Write a copy of an fp32 model directory with int8 encoders (per-column symmetric int8
    /// weights, activations quantized at run time), loadable by onnxruntime too.
    Quantize { input: PathBuf, output: PathBuf },
}

#[derive(Args)]
struct DbArgs {
    /// The config whose database (and labels) to use.
    #[arg(long, short, conflicts_with = "db")]
    config: Option<PathBuf>,
    /// A database file.
    #[arg(long)]
    db: Option<PathBuf>,
}

#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Exact label, or a SQL LIKE pattern when it contains %.
    #[arg(long)]
    label: Option<String>,
    #[arg(long)]
    source: Option<String>,
    /// Media time (90, 1:30) or wall-clock time (2026-11-22T10:00:00Z, @unix).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    min_prob: Option<f32>,
    #[arg(long)]
    limit: Option<usize>,
    /// Only each window's best label.
    #[arg(long)]
    top: bool,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    #[arg(long)]
    csv: bool,
}

fn main() -> ExitCode {
    cliptag::memory::tune_allocator();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // journald and log files want plain text; colour only for a person at a terminal.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLIPTAG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tract_linalg=warn")),
        )
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code_for(&e)
        }
    }
}

fn exit_code_for(e: &anyhow::Error) -> ExitCode {
    let disposition = e.chain().find_map(|c| {
        if let Some(r) = c.downcast_ref::<RunError>() {
            return Some(r.disposition());
        }
        if let Some(c) = c.downcast_ref::<cliptag::daemon::ConfigError>() {
            return Some(c.disposition());
        }
        if let Some(c) = c.downcast_ref::<cliptag::clip::ClipError>() {
            return Some(c.disposition());
        }
        if let Some(s) = c.downcast_ref::<cliptag::store::StoreError>() {
            return Some(s.disposition());
        }
        None
    });
    match disposition {
        Some(Disposition::Retry) => ExitCode::from(75),
        Some(Disposition::Stop)
            if !matches!(
                e.downcast_ref::<RunError>(),
                Some(RunError::NothingProcessed)
            ) =>
        {
            ExitCode::from(78)
        }
        _ => ExitCode::from(1),
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run {
            config,
            new_model_generation,
        } => run(&config, new_model_generation),
        Command::Query(args) => query(args),
        Command::Status { db, json, csv } => status(db, format_of(json, csv)),
        Command::Labels { db } => labels(db),
        Command::Model {
            command: ModelCommand::Check { model },
        } => {
            let report = cliptag::clip::check::check_model(&model)?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Model {
            command: ModelCommand::Quantize { input, output },
        } => {
            let report = cliptag::clip::quantize_dir::quantize_model_dir(&input, &output)?;
            for (path, layers, before, after) in &report.files {
                println!(
                    "{}: {layers} layers int8, {:.1} MB -> {:.1} MB",
                    path.display(),
                    *before as f64 / 1e6,
                    *after as f64 / 1e6
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed {
            model,
            sampling,
            json: _,
            inputs,
        } => embed(model, sampling, inputs),
        Command::EmbedText {
            model,
            json: _,
            texts,
        } => embed_text(model, texts),
    }
}

/// One progress bar per source, on a terminal only.
struct Bars {
    multi: indicatif::MultiProgress,
    bars: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl Progress for Bars {
    fn source_started(&self, name: &str, duration: Option<f64>) {
        let bar = match duration {
            Some(d) => indicatif::ProgressBar::new(d.ceil() as u64),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style =
            indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} s {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let bar = self.multi.add(
            bar.with_style(style.progress_chars("=> "))
                .with_prefix(name.to_string()),
        );
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(name.to_string(), bar);
        }
    }
    fn window_done(&self, source: &str, end: f64) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(source).cloned()) {
            bar.set_position(end.round() as u64);
        }
    }
    fn source_finished(&self, report: &SourceReport) {
        if let Some(bar) = self
            .bars
            .lock()
            .ok()
            .and_then(|b| b.get(&report.name).cloned())
        {
            bar.finish_with_message(if report.error.is_some() {
                "failed"
            } else {
                "done"
            });
        }
    }
}

fn run(config_path: &Path, new_model_generation: bool) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        Arc::new(Bars {
            multi: indicatif::MultiProgress::new(),
            bars: Mutex::new(Default::default()),
        })
    } else {
        Arc::new(daemon::NoProgress)
    };
    let env = daemon::Environment::system(progress).context("cannot install signal handlers")?;
    let report = daemon::run(
        &config,
        &RunOptions {
            new_model_generation,
        },
        env,
    )?;
    for s in &report.sources {
        // Failures were logged as they happened.
        if s.error.is_none() {
            tracing::info!(source = %s.name, windows = s.windows, frames = s.frames, dropped = s.frames_dropped, reconnects = s.reconnects, state = %s.state, "source");
        }
    }
    let failed = report.sources.iter().filter(|s| s.error.is_some()).count();
    eprintln!(
        "tagged {} window(s) from {} of {} source(s) into {} (model {}, {} labels)",
        report.sources.iter().map(|s| s.windows).sum::<u64>(),
        report.sources.len() - failed,
        report.sources.len(),
        config.database.display(),
        report.model_id,
        report.labels,
    );
    if report.stopped_by_signal {
        // Asked to stop: a clean drain is success even if nothing was tagged yet.
        return Ok(ExitCode::SUCCESS);
    }
    if !report.anything_processed() {
        return Err(RunError::NothingProcessed.into());
    }
    Ok(ExitCode::SUCCESS)
}

fn database_path(db: &DbArgs) -> Result<(PathBuf, Option<Config>)> {
    match (&db.db, &db.config) {
        (Some(path), _) => Ok((path.clone(), None)),
        (None, Some(config)) => {
            let config = Config::load(config)?;
            Ok((config.database.clone(), Some(config)))
        }
        (None, None) => anyhow::bail!("name the database with --db FILE or --config FILE"),
    }
}

fn query(args: QueryArgs) -> Result<ExitCode> {
    let (path, _) = database_path(&args.db)?;
    let store = Store::open_existing(&path)?;
    let bound = |v: &Option<String>| {
        v.as_deref()
            .map(parse_time_bound)
            .transpose()
            .map_err(anyhow::Error::msg)
    };
    let q = MatchQuery {
        label: args.label,
        source: args.source,
        since: bound(&args.since).context("--since")?,
        until: bound(&args.until).context("--until")?,
        min_probability: args.min_prob,
        limit: args.limit,
        top_only: args.top,
    };
    let rows = store.query(&q)?;
    let format = if args.json {
        Format::Json
    } else if args.csv {
        Format::Csv
    } else {
        Format::Table
    };
    let mut out = std::io::stdout().lock();
    write_rows(&mut out, &rows, format)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn format_of(json: bool, csv: bool) -> Format {
    if json {
        Format::Json
    } else if csv {
        Format::Csv
    } else {
        Format::Table
    }
}

fn status(db: DbArgs, format: Format) -> Result<ExitCode> {
    let (path, _) = database_path(&db)?;
    let store = Store::open_existing(&path)?;
    let states = store.source_states()?;
    let mut out = std::io::stdout().lock();
    write_source_states(&mut out, &states, format, SystemClock.now())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn labels(db: DbArgs) -> Result<ExitCode> {
    let (path, config) = database_path(&db)?;
    let mut out = std::io::stdout().lock();
    if let Some(config) = config {
        // The labels file as it stands now, and whether a run would need to encode anything.
        let plan = daemon::labels_plan(&config)?;
        writeln!(
            out,
            "labels file {} (model {})",
            config.labels_path.display(),
            plan.model_id
        )?;
        for (l, cached) in &plan.labels {
            writeln!(
                out,
                "{}  [{}/{} prompts cached]",
                l.text,
                cached,
                l.prompts.len()
            )?;
            for p in &l.prompts {
                writeln!(out, "    {p}")?;
            }
        }
    } else {
        for l in Store::open_existing(&path)?.labels(None)? {
            writeln!(
                out,
                "{}  [model {}, {}, {}]",
                l.text,
                l.model_id,
                if l.active { "active" } else { "removed" },
                if l.cached { "cached" } else { "not cached" }
            )?;
            for p in &l.prompts {
                writeln!(out, "    {p}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn embed(model: ModelSettings, sampling: SamplingSection, inputs: Vec<String>) -> Result<ExitCode> {
    let sampling = sampling
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {}", e.flag(), e.reason))?;
    cliptag::ingest::init()?;
    // Image-only: the text tower is never needed.
    let model = ClipModel::load_with(&model, TextTower::WhenNeeded)?;
    let mut out = std::io::stdout().lock();
    let mut failures = 0;
    for input in &inputs {
        let mut write_err = None;
        let result = cliptag::embed::embed_media(&model, input, sampling, |e| {
            if write_err.is_none() {
                write_err = serde_json::to_writer(&mut out, &e)
                    .map_err(anyhow::Error::from)
                    .and_then(|_| Ok(writeln!(out)?))
                    .err();
            }
        });
        if let Some(e) = write_err {
            return Err(e);
        }
        if let Err(e) = result {
            failures += 1;
            eprintln!("error: {input}: {e}");
        }
    }
    out.flush()?;
    Ok(if failures == inputs.len() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn embed_text(model: ModelSettings, texts: Vec<String>) -> Result<ExitCode> {
    // Loaded by the first text to embed.
    let model = ClipModel::load_with(&model, TextTower::WhenNeeded)?;
    let mut out = std::io::stdout().lock();
    for (text, (ids, embedding)) in texts.iter().zip(model.embed_texts(&texts)?) {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"text": text, "ids": ids, "embedding": embedding}),
        )?;
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}
