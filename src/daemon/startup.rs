//! Everything a run sets up before the first frame: the model, the database and its single
//! writer (with retention applied once), and the label set; then the tagger built on them.
//!
//! Rules: the order is chosen so that a mistake stops the run before anything slow or
//! irreversible happens — the model generation is checked before anything is written, and
//! the labels (and any tuned head) are checked before the first source opens.
//!
//! A box that starts with a full disk (the database cannot even be opened: SQLite's WAL
//! index needs a few pages) waits here for room, telling systemd it is up and waiting,
//! pinging the watchdog and answering SIGTERM — rather than exiting 75 into a restart
//! loop that loads the model every ten seconds. Its reserve file, when `min_free_mb`
//! left one, is handed back first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::Config;
use super::environment::Environment;
use super::error::RunError;
use super::generation::{check_model_generation, keep_fp32_generation};
use super::labels::prepare_labels;
use super::report::RunOptions;
use super::signals::ControlEvent;
use super::tagger::Tagger;
use crate::clip::{ClipModel, PreprocessConfig, TextTower};
use crate::ingest::FileIdentity;
use crate::store::space::{self, human_bytes};
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
    env: &Environment,
) -> Result<Prepared, RunError> {
    let clock = &env.clock;
    // The text tower loads only if some label's prompts are not in the database's cache,
    // and is released once they are embedded: the daemon then holds the vision tower alone.
    let mut model = ClipModel::load_with(&config.model, TextTower::WhenNeeded)?;
    // This connection stays open for the whole run, so the WAL index it made stays too.
    let store = open_when_room(config, env)?;
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
        match writer.enforce_retention(clock.now()) {
            Ok(r) if r.segments_deleted > 0 => {
                tracing::info!(segments = r.segments_deleted, "retention at start-up")
            }
            Ok(_) => {}
            // The writer pauses at its first write and makes room from there.
            Err(e) if e.is_out_of_space() => {
                tracing::warn!("retention at start-up could not run: {e}")
            }
            Err(e) => return Err(e.into()),
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

/// How often a start on a full disk looks for room again.
const ROOM_POLL: Duration = Duration::from_secs(5);

/// Opens the database, waiting for room on its disk when there is none (see the module
/// rules); SIGTERM/SIGINT while waiting ends the run with [`RunError::StoppedWaitingForRoom`].
fn open_when_room(config: &Config, env: &Environment) -> Result<Store, RunError> {
    let path = &config.database;
    let mut waiting_since: Option<Instant> = None;
    loop {
        let error = match Store::open(path) {
            Ok(store) => {
                if let Some(since) = waiting_since {
                    tracing::info!(
                        waited = %humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
                        free = %human_bytes(space::free_bytes(path).unwrap_or(0)),
                        "room on the disk: starting"
                    );
                }
                return Ok(store);
            }
            Err(e) if e.is_out_of_space() => e,
            Err(e) => return Err(e.into()),
        };
        if config.retention.min_free_bytes.is_some() && space::release_reserve(path) {
            continue;
        }
        let since = *waiting_since.get_or_insert_with(|| {
            let line = format!(
                "tagging paused: the disk holding the database is full ({} free)",
                human_bytes(space::free_bytes(path).unwrap_or(0))
            );
            tracing::warn!(error = %error, "{line}; waiting for room, looking again every {}s", ROOM_POLL.as_secs());
            // Up, and saying why it does nothing, rather than a start that times out.
            env.notifier.ready(&line);
            Instant::now()
        });
        env.notifier.status(&format!(
            "tagging paused for {}: the disk holding the database is full ({} free)",
            crate::times::duration(since.elapsed().as_secs_f64()),
            human_bytes(space::free_bytes(path).unwrap_or(0))
        ));
        let until = Instant::now() + ROOM_POLL;
        while Instant::now() < until {
            env.notifier.watchdog_ping();
            let step = env
                .notifier
                .watchdog()
                .map_or(ROOM_POLL, |w| w / 4)
                .min(until.saturating_duration_since(Instant::now()));
            if let Ok(ControlEvent::Shutdown) = env.events.recv_timeout(step) {
                return Err(RunError::StoppedWaitingForRoom {
                    database: path.display().to_string(),
                });
            }
        }
    }
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
