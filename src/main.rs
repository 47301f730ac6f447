//! `cliptag`: argument parsing and wiring only; the work lives in the library.
//!
//! Exit codes are chosen for systemd's `Restart=on-failure`: 1 when a run processed
//! nothing (or a command failed for some of its inputs), 75 (EX_TEMPFAIL) for trouble worth
//! retrying, 78 (EX_CONFIG) for a broken config, model or labels file that a restart cannot
//! fix (list it in `RestartPreventExitStatus=`). A closed standard output (`| head -1`)
//! ends a command quietly with 0, as Unix tools do.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use cliptag::classify::ClassifyConfig;
use cliptag::clip::{ClipModel, ModelSettings, TextTower};
use cliptag::clock::{Clock, SystemClock};
use cliptag::daemon::config::default_path;
use cliptag::daemon::{self, Config, Progress, RunError, RunOptions, SourceReport};
use cliptag::ingest::SamplingSection;
use cliptag::query::search::{self, SearchFilters, SearchInput};
use cliptag::query::{
    occurrences, write_hits, write_occurrences, write_rows, write_source_states, Format,
    QueryFilters, OCCURRENCE_GAP,
};
use cliptag::store::{space, Store};
use cliptag::times::Zone;
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
    /// Tag video: the config's sources (files until they end, cameras until SIGTERM), or
    /// the files, directories and glob patterns given here.
    Run(RunArgs),
    /// Print what was seen: each window's labels, or with --group when each label showed up.
    Query(QueryArgs),
    /// Find the stored windows most like a text, a picture or another window; no video is
    /// decoded, the windows' stored embeddings answer.
    Search(SearchArgs),
    /// Show each source's state as the daemon last recorded it.
    Status {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List labels, their prompts, and whether their embeddings are cached; `labels
    /// backfill` rescores the stored windows with the labels file as it is now.
    Labels {
        #[command(subcommand)]
        action: Option<LabelsAction>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print one JSON line per sampled frame of each video or image with its CLIP embedding.
    Embed {
        #[command(flatten)]
        model: ModelSettings,
        #[command(flatten)]
        sampling: SamplingSection,
        /// Output JSON lines (the only format; accepted for symmetry with other commands)
        #[arg(long)]
        json: bool,
        /// Video or image files (or URIs)
        #[arg(required = true, value_name = "INPUT")]
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
        /// Output JSON lines (the only format; accepted for symmetry with other commands)
        #[arg(long)]
        json: bool,
        /// Texts to embed
        #[arg(required = true, value_name = "TEXT")]
        texts: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LabelsAction {
    /// Rescore every stored window of the config's model with the labels file as it is
    /// now, from the stored embeddings: no video is needed. Resumable; a running daemon
    /// does the same on SIGHUP.
    Backfill {
        /// The config [default: $CLIPTAG_CONFIG, else /etc/cliptag/cliptag.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
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
    Quantize {
        /// The fp32 model directory
        input: PathBuf,
        /// Where to write the int8 copy
        output: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The config [default: $CLIPTAG_CONFIG, else /etc/cliptag/cliptag.toml]
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Files, directories (walked for video files) or glob patterns to tag instead of the
    /// config's sources; each file is its own source, and files already tagged to the end,
    /// unchanged, with the same model and labels are skipped
    #[arg(value_name = "PATH")]
    paths: Vec<String>,
    /// Model directory (with PATHs: replaces the config's, or stands in for a config)
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Labels file (with PATHs: replaces the config's, or stands in for a config)
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Database (with PATHs: replaces the config's) [default without a config: cliptag.db]
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Accept a database that holds segments of another model.
    #[arg(long)]
    new_model_generation: bool,
}

#[derive(Args)]
struct DbArgs {
    /// The config whose database (and labels) to use [default: $CLIPTAG_CONFIG, else
    /// /etc/cliptag/cliptag.toml]
    #[arg(long, short, conflicts_with = "db")]
    config: Option<PathBuf>,
    /// A database file
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
}

#[derive(Args)]
struct OutputArgs {
    /// JSON lines: one object per line
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV with a header
    #[arg(long)]
    csv: bool,
}

#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    filters: QueryFilters,
    /// Merge back-to-back windows of a label into occurrences (first seen, last seen, best)
    #[arg(long)]
    group: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct SearchArgs {
    #[command(flatten)]
    db: DbArgs,
    /// What to look for, in words; several texts are one query (the mean of their
    /// embeddings, as a label's prompts are)
    #[arg(
        value_name = "TEXT",
        required_unless_present_any = ["image", "like"],
        conflicts_with_all = ["image", "like"]
    )]
    texts: Vec<String>,
    /// A picture (or a short video) to find moments like
    #[arg(long, value_name = "FILE", conflicts_with = "like")]
    image: Option<String>,
    /// A stored window (the ID column of a search) to find others like
    #[arg(long, value_name = "ID")]
    like: Option<i64>,
    /// Model directory [default: the config's, else the one the database recorded]
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Score every stored window exactly instead of letting the index pick candidates
    /// (slower; the reference the index is measured against)
    #[arg(long)]
    exact: bool,
    #[command(flatten)]
    filters: SearchFilters,
    #[command(flatten)]
    output: OutputArgs,
}

fn main() -> ExitCode {
    cliptag::memory::tune_allocator();
    cliptag::logging::init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            exit_code_for(&e)
        }
    }
}

/// The error and its causes on one line, each cause once: a cause whose text the message
/// already holds (a thiserror message that quotes its source) is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Standard output closed under us (`cliptag query --json | head -1`).
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
        Command::Run(args) => run(args),
        Command::Query(args) => query(args),
        Command::Search(args) => search(args),
        Command::Status { db, output } => status(db, Format::of(output.json, output.csv)),
        Command::Labels {
            action: Some(LabelsAction::Backfill { config }),
            ..
        } => labels_backfill(config),
        Command::Labels { action: None, db } => labels(db),
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

/// One progress bar per source on a terminal: a file's fills with its position, with the
/// percentage and the time left.
struct Bars {
    multi: indicatif::MultiProgress,
    bars: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl Progress for Bars {
    fn source_started(&self, name: &str, duration: Option<f64>) {
        let (bar, template) = match duration {
            Some(d) => (
                indicatif::ProgressBar::new(d.ceil() as u64),
                "{prefix:>12} [{bar:30}] {percent:>3}% {pos}/{len} s, {eta} left {msg}",
            ),
            None => (
                indicatif::ProgressBar::new_spinner(),
                "{prefix:>12} {spinner} {msg}",
            ),
        };
        let style = indicatif::ProgressStyle::with_template(template)
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
            match bar.length() {
                Some(_) => bar.set_position(end.round() as u64),
                None => bar.tick(),
            }
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

/// The config a command names, or the one found where it is kept by default.
fn config_path(given: &Option<PathBuf>) -> Option<PathBuf> {
    given.clone().or_else(default_path)
}

/// The config `run` works from: the config file, or (with paths, a model and labels) none,
/// with the paths as its sources.
fn run_config(args: &RunArgs) -> Result<Config> {
    let standalone = !args.paths.is_empty() && args.model.is_some() && args.labels.is_some();
    // An explicit --config always wins; a default config is used unless the arguments stand
    // in for one.
    let config_file = match (&args.config, standalone) {
        (Some(path), _) => Some(path.clone()),
        (None, false) => default_path(),
        (None, true) => None,
    };
    let mut config = match config_file {
        Some(path) => Config::load(&path)?,
        None if standalone => Config::for_files(
            ModelSettings::new(args.model.clone().unwrap_or_default()),
            args.labels.clone().unwrap_or_default(),
            args.db.clone().unwrap_or_else(|| PathBuf::from("cliptag.db")),
        ),
        None => anyhow::bail!(
            "no config: give --config FILE (or set CLIPTAG_CONFIG, or install /etc/cliptag/cliptag.toml), or tag files without one: cliptag run --model DIR --labels FILE PATH..."
        ),
    };
    if !args.paths.is_empty() {
        let cwd = std::env::current_dir().context("the current directory")?;
        let files =
            cliptag::ingest::files::expand_all(&args.paths, &cwd).map_err(anyhow::Error::msg)?;
        config = config.with_files(&files);
        if let Some(model) = &args.model {
            config.model.dir = model.clone();
        }
        if let Some(labels) = &args.labels {
            config.labels_path = labels.clone();
        }
        if let Some(db) = &args.db {
            config.database = db.clone();
        }
    }
    Ok(config)
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let config = run_config(&args)?;
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        Arc::new(Bars {
            multi: indicatif::MultiProgress::new(),
            bars: Mutex::new(Default::default()),
        })
    } else {
        Arc::new(daemon::LogProgress::new(config.daemon.progress_interval))
    };
    let env = daemon::Environment::system(progress).context("cannot install signal handlers")?;
    let report = daemon::run(
        &config,
        &RunOptions {
            new_model_generation: args.new_model_generation,
            skip_tagged_files: !args.paths.is_empty(),
        },
        env,
    )?;
    for s in &report.sources {
        // Failures were logged as they happened.
        if s.error.is_none() {
            tracing::info!(source = %s.name, windows = s.windows, frames = s.frames, dropped = s.frames_dropped, reconnects = s.reconnects, retries = s.retries, state = %s.state, "source");
        }
    }
    let skipped = match report.skipped.len() {
        0 => String::new(),
        n => format!("; {n} file(s) already tagged, unchanged, skipped"),
    };
    eprintln!(
        "tagged {} window(s) from {} of {} source(s) into {} (model {}, {} labels){skipped}",
        report.sources.iter().map(|s| s.windows).sum::<u64>(),
        report.sources_with_windows(),
        report.sources.len(),
        config.database.display(),
        report.model_id,
        report.labels,
    );
    if report.stopped_by_signal || (report.sources.is_empty() && !report.skipped.is_empty()) {
        // Asked to stop (a clean drain is success even if nothing was tagged yet), or
        // nothing left to do.
        return Ok(ExitCode::SUCCESS);
    }
    if !report.anything_processed() {
        return Err(RunError::NothingProcessed.into());
    }
    Ok(ExitCode::SUCCESS)
}

fn database_path(db: &DbArgs) -> Result<(PathBuf, Option<Config>)> {
    if let Some(path) = &db.db {
        return Ok((path.clone(), None));
    }
    match config_path(&db.config) {
        Some(path) => {
            let config = Config::load(&path)?;
            Ok((config.database.clone(), Some(config)))
        }
        None => anyhow::bail!(
            "name the database with --db FILE or --config FILE (or set CLIPTAG_CONFIG; /etc/cliptag/cliptag.toml does not exist)"
        ),
    }
}

fn query(args: QueryArgs) -> Result<ExitCode> {
    let (path, _) = database_path(&args.db)?;
    let store = Store::open_existing(&path)?;
    let zone = Zone::local();
    let q = args
        .filters
        .to_query(&store.known_names()?, SystemClock.now(), &zone)
        .map_err(anyhow::Error::msg)?;
    let rows = store.query(&q)?;
    let format = Format::of(args.output.json, args.output.csv);
    let mut out = std::io::stdout().lock();
    if args.group {
        write_occurrences(&mut out, &occurrences(&rows, OCCURRENCE_GAP), format, &zone)?;
    } else {
        write_rows(&mut out, &rows, format, &zone)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn search(args: SearchArgs) -> Result<ExitCode> {
    let (path, config) = database_path(&args.db)?;
    let store = Store::open_existing(&path)?;
    let templates = config.as_ref().map_or_else(
        || ClassifyConfig::default().prompt_templates,
        |c| c.classify.prompt_templates.clone(),
    );
    let like_alone = args
        .like
        .filter(|_| args.model.is_none() && config.is_none());
    let settings = match (args.model, config) {
        (Some(dir), _) => ModelSettings::new(dir),
        (None, Some(config)) => config.model,
        (None, None) => match search::current_model(&store)? {
            Some((_, dir)) => ModelSettings::new(PathBuf::from(dir)),
            None => anyhow::bail!("database {} holds no windows yet", path.display()),
        },
    };
    let zone = Zone::local();
    let filter = args
        .filters
        .to_filter(&store.known_names()?.0, SystemClock.now(), &zone)
        .map_err(anyhow::Error::msg)?;
    let input = match (args.image, args.like) {
        (Some(image), _) => SearchInput::Image(image),
        (None, Some(id)) => SearchInput::Like(id),
        (None, None) => SearchInput::Texts(args.texts),
    };
    // A stored window needs no model: its own model is the one searched.
    let (model_id, query) = match like_alone {
        Some(id) => search::window_query(&store, id)?,
        None => {
            let model = ClipModel::load_with(&settings, TextTower::WhenNeeded)?;
            let query = search::query_vector(&model, &store, &input, &templates)?;
            (model.id, query)
        }
    };
    let exclude = match input {
        SearchInput::Like(id) => Some(id),
        _ => None,
    };
    let answer = search::search(
        &store,
        &model_id,
        &query,
        &filter,
        args.filters.limit,
        exclude,
        args.exact,
    )?;
    let mut out = std::io::stdout().lock();
    write_hits(
        &mut out,
        &answer.hits,
        Format::of(args.output.json, args.output.csv),
        &zone,
    )?;
    out.flush()?;
    // What was looked at goes to stderr: stdout stays the answer alone.
    eprintln!(
        "{} window(s) of model {} searched ({})",
        answer.searched,
        answer.model_id,
        answer.method.as_str()
    );
    for (model_id, windows) in &answer.skipped {
        eprintln!("{windows} window(s) of model {model_id} skipped: another model's embeddings cannot be compared");
    }
    Ok(ExitCode::SUCCESS)
}

fn status(db: DbArgs, format: Format) -> Result<ExitCode> {
    let (path, _) = database_path(&db)?;
    let store = Store::open_existing(&path)?;
    let states = store.source_states()?;
    let mut out = std::io::stdout().lock();
    write_source_states(&mut out, &states, format, SystemClock.now(), &Zone::local())?;
    if format == Format::Table {
        // On a full disk the daemon cannot refresh the states above; this says why.
        if let Some(free) = space::free_bytes(&path) {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            writeln!(
                out,
                "database {}: {}, {} free on its disk{}",
                path.display(),
                space::human_bytes(size),
                space::human_bytes(free),
                if free < space::NEARLY_FULL_BYTES {
                    " — the disk is full: a running daemon has paused tagging until there is room"
                } else {
                    ""
                }
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn labels_backfill(config: Option<PathBuf>) -> Result<ExitCode> {
    let Some(path) = config_path(&config) else {
        anyhow::bail!("name the config with --config FILE (or set CLIPTAG_CONFIG; /etc/cliptag/cliptag.toml does not exist)");
    };
    let config = Config::load(&path)?;
    let report = daemon::backfill::backfill_stored(&config)?;
    println!(
        "rescored {} window(s) with the labels of {} in {:.2} s ({:.0} windows/s)",
        report.windows,
        config.labels_path.display(),
        report.seconds,
        report.windows as f64 / report.seconds.max(1e-9)
    );
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
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(inputs.len() as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:30}] {pos}/{len} inputs, {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let mut out = std::io::stdout().lock();
    let mut failures = 0;
    let mut frames = 0u64;
    for input in &inputs {
        let mut write_err = None;
        let result = cliptag::embed::embed_media(&model, input, sampling, |e| {
            frames += 1;
            if let Some(bar) = &bar {
                bar.set_message(format!("{frames} frames"));
            }
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
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        if let Err(e) = result {
            failures += 1;
            let line = format!("error: {e}");
            match &bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out.flush()?;
    if failures > 0 {
        eprintln!("{failures} of {} input(s) failed", inputs.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag and argument of every command says what it is for.
    #[test]
    fn every_flag_is_explained() {
        fn walk(command: &clap::Command, path: &str, checked: &mut usize) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                *checked += 1;
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "{path}: --{id} has no help text"
                );
            }
            for sub in command.get_subcommands() {
                assert!(
                    sub.get_about().is_some(),
                    "{path} {}: no about",
                    sub.get_name()
                );
                walk(sub, &format!("{path} {}", sub.get_name()), checked);
            }
        }
        let mut checked = 0;
        walk(&Cli::command(), "cliptag", &mut checked);
        assert!(checked >= 40, "only {checked} arguments seen");
    }
}
