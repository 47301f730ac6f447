//! The store against real SQLite files in temporary directories.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cliptag::ingest::{RecordedFrom, SourceKind};
use cliptag::store::{
    blob_to_f32s, f32s_to_blob, EmbeddingKind, LabelRecord, MatchQuery, ModelRecord, NewMatch,
    NewSegment, Retention, SourceStateRecord, Store, StoreError, StoreWriter, WriterOptions,
    SCHEMA_VERSION, SOURCE_STATES,
};
use cliptag::times::TimeSpec;
use cliptag::Disposition;
use rusqlite::Connection;

const DIM: usize = 4;
const MODEL: &str = "sha256:m1";
const LABELS: [&str; 4] = ["dog", "cat", "red car", "blue car"];

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("cliptag.db")
}

fn emb(seed: f32) -> Vec<f32> {
    (0..DIM).map(|i| seed + i as f32 * 0.25).collect()
}

fn model() -> ModelRecord {
    ModelRecord {
        id: MODEL.into(),
        path: "/models/clip".into(),
        embedding_dim: DIM,
    }
}

fn label(text: &str, seed: f32) -> LabelRecord {
    LabelRecord {
        text: text.into(),
        prompts: vec![format!("a photo of a {text}"), format!("a {text}")],
        embedding: emb(seed),
    }
}

fn seg(source: &str, start_ms: i64, matches: &[(&str, u32, f32)]) -> NewSegment {
    NewSegment {
        source: source.into(),
        source_uri: format!("rtsp://***@{source}/stream"),
        model_id: MODEL.into(),
        start_ms,
        end_ms: start_ms + 2000,
        source_kind: SourceKind::File,
        // Recorded at 1000 s; tagged (the retention clock) at the same times.
        recorded_at: Some((1000.0, RecordedFrom::Config)),
        wall_start: 1000.0 + start_ms as f64 / 1000.0,
        wall_end: 1002.0 + start_ms as f64 / 1000.0,
        processed_at: 1000.0 + start_ms as f64 / 1000.0,
        frame_count: 50,
        keyframes_ms: vec![start_ms, start_ms + 1000],
        clip_calls: 2,
        embedding: emb(start_ms as f32),
        embedding_kind: EmbeddingKind::Mean,
        keyframe_embeddings: Vec::new(),
        matches: matches
            .iter()
            .map(|&(label, rank, probability)| NewMatch {
                label: label.into(),
                rank,
                cosine: 0.2 + probability / 10.0,
                probability,
            })
            .collect(),
        label_set: Some("set-1".into()),
    }
}

/// A writer with the model registered and the four labels active.
fn setup(path: &Path) -> StoreWriter {
    let w = StoreWriter::spawn(path).unwrap();
    w.register_model(model()).unwrap();
    let labels = LABELS
        .iter()
        .enumerate()
        .map(|(i, t)| label(t, i as f32))
        .collect();
    w.set_labels(MODEL, labels).unwrap();
    w.flush().unwrap();
    w
}

fn raw_user_version(path: &Path) -> u32 {
    raw_pragma(path, "user_version") as u32
}

fn raw_pragma(path: &Path, name: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .pragma_query_value(None, name, |r| r.get(0))
        .unwrap()
}

fn raw_count(path: &Path, sql: &str) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

const AUTO_VACUUM_NONE: i64 = 0;
const AUTO_VACUUM_INCREMENTAL: i64 = 2;

// ---- embeddings ---------------------------------------------------------

#[test]
fn blobs_are_little_endian_f32_and_length_checked() {
    assert_eq!(f32s_to_blob(&[1.0]), [0x00, 0x00, 0x80, 0x3f]);
    let v = vec![0.0, -1.5, f32::MAX, f32::MIN_POSITIVE, 3.25];
    assert_eq!(blob_to_f32s(&f32s_to_blob(&v)).unwrap(), v);
    assert!(blob_to_f32s(&[]).unwrap().is_empty());
    let e = blob_to_f32s(&[0; 5]).unwrap_err();
    assert!(matches!(e, StoreError::BadBlob { len: 5 }), "{e}");
    assert_eq!(e.disposition(), Disposition::Skip);
}

// ---- opening and migrations --------------------------------------------

#[test]
fn fresh_database_is_created_with_its_directory_at_the_latest_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/cliptag.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), path);
    assert_eq!(raw_user_version(&path), SCHEMA_VERSION);
    let journal: String = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    // Set before the first table, so no VACUUM was needed for it.
    assert_eq!(raw_pragma(&path, "auto_vacuum"), AUTO_VACUUM_INCREMENTAL);
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert_eq!(store.segment_count().unwrap(), 0);
    assert!(store.source_states().unwrap().is_empty());
}

#[test]
fn reopening_is_idempotent_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    w.write_segment(seg("cam1", 0, &[("dog", 1, 0.9)])).unwrap();
    w.close().unwrap();
    for _ in 0..3 {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.segment_count().unwrap(), 1);
        assert_eq!(store.labels(None).unwrap().len(), LABELS.len());
        drop(store);
        assert_eq!(raw_user_version(&path), SCHEMA_VERSION);
    }
    // A second writer on the same file (daemon restart) migrates nothing.
    let w = StoreWriter::spawn(&path).unwrap();
    w.close().unwrap();
    assert_eq!(
        Store::open_existing(&path)
            .unwrap()
            .segment_count()
            .unwrap(),
        1
    );
}

#[test]
fn empty_v0_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    std::fs::write(&path, b"").unwrap();
    let store = Store::open_existing(&path).unwrap();
    assert_eq!(raw_user_version(&path), SCHEMA_VERSION);
    assert!(store.models().unwrap().is_empty());
}

#[test]
fn too_new_database_is_refused_without_being_modified() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let future = SCHEMA_VERSION + 7;
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE from_the_future (x INTEGER); INSERT INTO from_the_future VALUES (1);",
        )
        .unwrap();
        c.pragma_update(None, "user_version", future).unwrap();
    }
    let before = std::fs::read(&path).unwrap();

    let e = Store::open(&path).unwrap_err();
    assert!(
        matches!(e, StoreError::TooNew { found, known, .. } if found == future && known == SCHEMA_VERSION)
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&future.to_string()) && msg.contains(&SCHEMA_VERSION.to_string()),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert_eq!(e.disposition(), Disposition::Stop);

    let e = StoreWriter::spawn(&path).unwrap_err();
    assert!(matches!(e, StoreError::TooNew { .. }), "{e}");
    assert!(Store::open_existing(&path).is_err());

    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!dir.path().join("cliptag.db-wal").exists());
    assert_eq!(raw_user_version(&path), future);
}

#[test]
fn database_made_by_migration_1_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        // Built the way a v1 cliptag built it, rows written by hand.
        let c = Connection::open(&path).unwrap();
        c.execute_batch(include_str!("../src/store/migrations/0001_initial.sql"))
            .unwrap();
        c.execute_batch(
            "INSERT INTO models VALUES ('sha256:m1', '/models/clip', 4, 1.0);
             INSERT INTO sources VALUES (1, 'cam1', 'rtsp://cam1');
             INSERT INTO text_embeddings VALUES ('sha256:m1', 'a dog', zeroblob(16));
             INSERT INTO segments VALUES (1, 1, 'sha256:m1', 0, 2000, 1000.5, 50, '[0,1000]', 2, zeroblob(16));
             INSERT INTO segments VALUES (2, 1, 'sha256:m1', 2000, 4000, 1002.5, 50, '[2000,3000]', 0, zeroblob(16));
             INSERT INTO segments VALUES (3, 1, 'sha256:m1', 4000, 6000, 1004.5, 50, '[4000,5000]', 1, zeroblob(16));
             INSERT INTO segments VALUES (4, 1, 'sha256:m1', 6000, 8000, 1006.5, 50, '[7000]', 1, zeroblob(16));",
        )
        .unwrap();
        c.execute(
            "INSERT INTO labels VALUES (1, 'sha256:m1', 'dog', '[\"a dog\"]', ?1, 1)",
            [f32s_to_blob(&emb(1.0))],
        )
        .unwrap();
        c.execute_batch("INSERT INTO matches VALUES (1, 1, 1, 0.3, 0.8); PRAGMA user_version = 1;")
            .unwrap();
    }
    let store = Store::open_existing(&path).unwrap();
    assert_eq!(raw_user_version(&path), SCHEMA_VERSION);
    let segs = store.segments(None).unwrap();
    assert_eq!(segs.len(), 4);
    assert_eq!(segs[0].keyframes_ms, [0, 1000]);
    // Windows from before the kind was stored: told from their CLIP passes per keyframe.
    assert_eq!(
        segs.iter().map(|s| s.embedding_kind).collect::<Vec<_>>(),
        [
            EmbeddingKind::Mean,
            EmbeddingKind::Reused,
            EmbeddingKind::Grid,
            EmbeddingKind::Mean
        ]
    );
    assert_eq!(segs[0].embedding, [0.0; 4]);
    assert_eq!(segs[0].matches[0].label, "dog");
    assert_eq!(segs[0].matches[0].probability, 0.8);
    let labels = store.labels(Some("sha256:m1")).unwrap();
    assert!(labels[0].cached && labels[0].active);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn version_1_database_gets_source_states_and_incremental_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        // What a v1 daemon left behind: WAL, auto_vacuum NONE, some segments.
        let c = Connection::open(&path).unwrap();
        let mode: String = c
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        c.execute_batch(include_str!("../src/store/migrations/0001_initial.sql"))
            .unwrap();
        c.execute_batch("PRAGMA user_version = 1;").unwrap();
    }
    drop(insert_v1_rows(&path));
    assert_eq!(raw_pragma(&path, "auto_vacuum"), AUTO_VACUUM_NONE);

    // `cliptag query` migrates the schema but leaves the rewrite to the
    // daemon: the same state as a daemon killed between the two steps.
    let store = Store::open_existing(&path).unwrap();
    assert_eq!(raw_user_version(&path), SCHEMA_VERSION);
    assert_eq!(raw_pragma(&path, "auto_vacuum"), AUTO_VACUUM_NONE);
    assert!(store.source_states().unwrap().is_empty());
    drop(store);

    let w = StoreWriter::spawn(&path).unwrap();
    assert_eq!(raw_user_version(&path), SCHEMA_VERSION);
    assert_eq!(raw_pragma(&path, "auto_vacuum"), AUTO_VACUUM_INCREMENTAL);
    w.close().unwrap();

    let store = Store::open(&path).unwrap();
    assert_eq!(store.segment_count().unwrap(), 20);
    assert_eq!(store.query(&MatchQuery::default()).unwrap().len(), 40);
    assert_eq!(store.labels(Some(MODEL)).unwrap().len(), LABELS.len());
    let segs = store.segments(Some("cam1")).unwrap();
    assert_eq!(segs[3].embedding, emb(6000.0));
    assert_eq!(segs[3].keyframes_ms, [6000, 7000]);
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert!(store.source_states().unwrap().is_empty());
}

/// Rows written into a v1 database through raw SQL, as a v1 writer would
/// have: a model, the four labels, 20 segments with two matches each.
fn insert_v1_rows(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute(
        "INSERT INTO models VALUES (?1, '/models/clip', ?2, 1.0)",
        rusqlite::params![MODEL, DIM],
    )
    .unwrap();
    for (i, l) in LABELS.iter().enumerate() {
        c.execute(
            "INSERT INTO labels (id, model_id, text, embedding) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![i as i64 + 1, MODEL, l, f32s_to_blob(&emb(i as f32))],
        )
        .unwrap();
    }
    c.execute_batch("INSERT INTO sources VALUES (1, 'cam1', 'rtsp://cam1');")
        .unwrap();
    for i in 0..20i64 {
        let start = i * 2000;
        c.execute(
            "INSERT INTO segments VALUES (?1, 1, ?2, ?3, ?4, ?5, 50, ?6, 2, ?7)",
            rusqlite::params![
                i + 1,
                MODEL,
                start,
                start + 2000,
                1000.0 + i as f64,
                format!("[{start},{}]", start + 1000),
                f32s_to_blob(&emb(start as f32))
            ],
        )
        .unwrap();
        c.execute(
            "INSERT INTO matches VALUES (?1, 1, 1, 0.3, 0.8), (?1, 2, 2, 0.2, 0.1)",
            [i + 1],
        )
        .unwrap();
    }
    c
}

#[test]
fn opening_an_up_to_date_database_does_not_wait_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(Store::open(&path).unwrap());
    // Someone else's long write transaction: opening (pragmas, migration
    // check) must not need the write lock, or every `cliptag query` would
    // stall behind the daemon's commits.
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t = Instant::now();
    let store = Store::open_existing(&path).unwrap();
    assert_eq!(store.segment_count().unwrap(), 0);
    drop(Store::open(&path).unwrap());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    other.execute_batch("COMMIT").unwrap();
}

#[test]
fn open_existing_names_a_missing_path_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope/cliptag.db");
    let e = Store::open_existing(&path).unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert_eq!(e.disposition(), Disposition::Stop);
    assert!(!dir.path().join("nope").exists());
}

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let junk = b"this is a video, not a database ".repeat(200);
    std::fs::write(&path, &junk).unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::Open { .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert_eq!(e.disposition(), Disposition::Stop);
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

// ---- writing and reading back -------------------------------------------

#[test]
fn segments_matches_labels_and_text_cache_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    w.put_text_embeddings(
        MODEL,
        vec![("a dog".into(), emb(9.0)), ("a cat".into(), emb(8.0))],
    )
    .unwrap();
    let s1 = seg("cam1", 4000, &[("dog", 1, 0.75), ("cat", 2, 0.25)]);
    let mut s2 = seg("cam1", 0, &[("red car", 1, 0.5)]);
    s2.clip_calls = 0;
    s2.keyframes_ms = vec![];
    s2.embedding_kind = EmbeddingKind::Reused;
    let s3 = seg("cam2", 0, &[]);
    for s in [&s1, &s2, &s3] {
        w.write_segment(s.clone()).unwrap();
    }
    w.flush().unwrap();

    let store = Store::open(&path).unwrap();
    assert_eq!(store.models().unwrap(), [model()]);
    assert_eq!(store.models_with_segments().unwrap(), [MODEL]);

    let texts: Vec<String> = ["a dog", "a cat", "a horse"].map(String::from).into();
    let cache = store.cached_text_embeddings(MODEL, &texts).unwrap();
    assert_eq!(cache.len(), 2);
    assert_eq!(cache["a dog"], emb(9.0));
    assert_eq!(cache["a cat"], emb(8.0));
    assert!(store
        .cached_text_embeddings("other", &texts)
        .unwrap()
        .is_empty());

    let segs = store.segments(None).unwrap();
    assert_eq!(segs.len(), 3);
    // Ordered by source then start.
    let order: Vec<_> = segs
        .iter()
        .map(|s| (s.source.as_str(), s.start_ms))
        .collect();
    assert_eq!(order, [("cam1", 0), ("cam1", 4000), ("cam2", 0)]);
    for (got, want) in segs.iter().zip([&s2, &s1, &s3]) {
        assert_eq!(got.model_id, want.model_id);
        assert_eq!(got.end_ms, want.end_ms);
        assert_eq!(
            (got.wall_start, got.wall_end, got.processed_at),
            (want.wall_start, want.wall_end, want.processed_at)
        );
        assert_eq!(got.frame_count, want.frame_count);
        assert_eq!(got.keyframes_ms, want.keyframes_ms);
        assert_eq!(got.clip_calls, want.clip_calls);
        assert_eq!(got.embedding, want.embedding);
        assert_eq!(got.embedding_kind, want.embedding_kind);
        assert_eq!(got.matches.len(), want.matches.len());
        for (gm, wm) in got.matches.iter().zip(&want.matches) {
            assert_eq!((gm.label.as_str(), gm.rank), (wm.label.as_str(), wm.rank));
            assert_eq!((gm.cosine, gm.probability), (wm.cosine, wm.probability));
            assert_eq!(gm.segment_id, got.id);
            assert_eq!(
                gm.offset,
                Some((want.start_ms as f64 / 1000.0, want.end_ms as f64 / 1000.0))
            );
        }
    }
    assert_eq!(store.segments(Some("cam2")).unwrap().len(), 1);
    assert!(store.segments(Some("cam9")).unwrap().is_empty());

    let stats = w.close().unwrap();
    assert_eq!(stats.segments_written, 3);
    assert_eq!(stats.failed_ops, 0);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn rewriting_a_window_replaces_it_and_its_matches() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    w.write_segment(seg("cam1", 0, &[("dog", 1, 0.6), ("cat", 2, 0.3)]))
        .unwrap();
    w.flush().unwrap();
    let store = Store::open(&path).unwrap();
    let first_id = store.segments(None).unwrap()[0].id;

    // Same (source, model, start): a re-run of the same file.
    let mut again = seg("cam1", 0, &[("cat", 1, 0.8)]);
    again.end_ms = 1500;
    again.embedding = emb(42.0);
    w.write_segment(seg("cam1", 2000, &[("dog", 1, 0.5)]))
        .unwrap();
    w.write_segment(again).unwrap();
    w.flush().unwrap();

    let segs = store.segments(Some("cam1")).unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].id, first_id, "the row id survives a rewrite");
    assert_eq!(segs[0].end_ms, 1500);
    assert_eq!(segs[0].embedding, emb(42.0));
    let m: Vec<_> = segs[0]
        .matches
        .iter()
        .map(|m| (m.label.as_str(), m.rank))
        .collect();
    assert_eq!(m, [("cat", 1)]);
    assert_eq!(store.query(&MatchQuery::default()).unwrap().len(), 2);

    // The same name at another location is another source: its window at 0 s does not
    // replace the first one's.
    let mut elsewhere = seg("cam1", 0, &[("dog", 1, 0.9)]);
    elsewhere.source_uri = "file:///new/place.mp4".into();
    w.write_segment(elsewhere).unwrap();
    w.close().unwrap();
    assert_eq!(store.segments(Some("cam1")).unwrap().len(), 3);
    let uris: Vec<String> = store
        .query(&MatchQuery::default())
        .unwrap()
        .into_iter()
        .map(|m| m.uri)
        .collect();
    assert_eq!(
        uris,
        [
            "file:///new/place.mp4",
            "rtsp://***@cam1/stream",
            "rtsp://***@cam1/stream"
        ]
    );
}

#[test]
fn labels_removed_from_the_file_become_inactive_and_keep_their_matches() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    w.write_segment(seg("cam1", 0, &[("cat", 1, 0.9)])).unwrap();
    // The label file now has dog and a new bird; cat and the cars are gone.
    w.set_labels(MODEL, vec![label("dog", 5.0), label("bird", 6.0)])
        .unwrap();
    w.put_text_embeddings(
        MODEL,
        vec![
            ("a photo of a dog".into(), emb(1.0)),
            ("a dog".into(), emb(2.0)),
        ],
    )
    .unwrap();
    w.flush().unwrap();

    let store = Store::open(&path).unwrap();
    let labels = store.labels(Some(MODEL)).unwrap();
    let summary: Vec<_> = labels
        .iter()
        .map(|l| (l.text.as_str(), l.active, l.cached))
        .collect();
    assert_eq!(
        summary,
        [
            ("bird", true, false),
            ("dog", true, true),
            ("blue car", false, false),
            ("cat", false, false),
            ("red car", false, false),
        ]
    );
    assert!(labels
        .iter()
        .all(|l| l.embedding_dim == DIM && l.model_id == MODEL));
    assert_eq!(labels[1].prompts, ["a photo of a dog", "a dog"]);
    assert!(store.labels(Some("other")).unwrap().is_empty());
    assert_eq!(store.labels(None).unwrap(), labels);

    let cat = MatchQuery {
        labels: vec!["cat".into()],
        ..Default::default()
    };
    assert_eq!(
        store.query(&cat).unwrap().len(),
        1,
        "old matches keep their label"
    );
    // Matches may still name an inactive label (a segment classified just
    // before the label file changed).
    w.write_segment(seg("cam1", 2000, &[("cat", 1, 0.7)]))
        .unwrap();
    // Re-adding a label reactivates the same row.
    w.set_labels(MODEL, vec![label("dog", 5.0), label("cat", 7.0)])
        .unwrap();
    w.flush().unwrap();
    assert_eq!(store.query(&cat).unwrap().len(), 2);
    let active: Vec<_> = store
        .labels(Some(MODEL))
        .unwrap()
        .into_iter()
        .filter(|l| l.active)
        .map(|l| l.text)
        .collect();
    assert_eq!(active, ["cat", "dog"]);
    w.close().unwrap();
}

// ---- queries --------------------------------------------------------------

fn query_fixture(path: &Path) -> Store {
    let w = setup(path);
    for s in [
        seg("cam1", 0, &[("dog", 1, 0.7), ("cat", 2, 0.2)]),
        seg("cam1", 2000, &[("red car", 1, 0.6), ("blue car", 2, 0.3)]),
        seg("cam1", 4000, &[("cat", 1, 0.9), ("dog", 2, 0.05)]),
        seg("cam2", 0, &[("blue car", 1, 0.5), ("dog", 2, 0.4)]),
    ] {
        w.write_segment(s).unwrap();
    }
    w.close().unwrap();
    Store::open_existing(path).unwrap()
}

fn keys(store: &Store, q: MatchQuery) -> Vec<(String, i64, String, u32)> {
    store
        .query(&q)
        .unwrap()
        .into_iter()
        .map(|m| {
            let (start, _) = m.offset.expect("file windows have a position");
            (m.source, (start * 1000.0).round() as i64, m.label, m.rank)
        })
        .collect()
}

fn k(source: &str, start_ms: i64, label: &str, rank: u32) -> (String, i64, String, u32) {
    (source.into(), start_ms, label.into(), rank)
}

#[test]
fn query_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = query_fixture(&db_path(&dir));
    let q = MatchQuery::default;

    let all = keys(&store, q());
    assert_eq!(
        all,
        [
            // By wall-clock start (1000 s + position), then source, then rank.
            k("cam1", 0, "dog", 1),
            k("cam1", 0, "cat", 2),
            k("cam2", 0, "blue car", 1),
            k("cam2", 0, "dog", 2),
            k("cam1", 2000, "red car", 1),
            k("cam1", 2000, "blue car", 2),
            k("cam1", 4000, "cat", 1),
            k("cam1", 4000, "dog", 2),
        ]
    );

    let label = |l: &str| MatchQuery {
        labels: vec![l.into()],
        ..q()
    };
    assert_eq!(
        keys(&store, label("dog")),
        [
            k("cam1", 0, "dog", 1),
            k("cam2", 0, "dog", 2),
            k("cam1", 4000, "dog", 2),
        ]
    );
    assert!(
        keys(&store, label("car")).is_empty(),
        "exact unless it has a %"
    );
    assert_eq!(
        keys(&store, label("%car")),
        [
            k("cam2", 0, "blue car", 1),
            k("cam1", 2000, "red car", 1),
            k("cam1", 2000, "blue car", 2),
        ]
    );
    assert_eq!(keys(&store, label("b%")).len(), 2);

    let source = MatchQuery {
        sources: vec!["cam2".into()],
        ..q()
    };
    assert_eq!(keys(&store, source), all[2..4]);

    // Media bounds keep windows overlapping [since, until).
    let media = |since: Option<f64>, until: Option<f64>| MatchQuery {
        sources: vec!["cam1".into()],
        since: since.map(TimeSpec::Media),
        until: until.map(TimeSpec::Media),
        ..q()
    };
    let cam1 = [&all[0..2], &all[4..]].concat();
    assert_eq!(keys(&store, media(Some(2.0), None)), all[4..]);
    assert_eq!(keys(&store, media(Some(1.5), None)), cam1);
    assert_eq!(keys(&store, media(None, Some(2.0))), all[0..2]);
    assert_eq!(keys(&store, media(None, Some(2.001))), cam1[0..4]);
    assert_eq!(keys(&store, media(Some(2.5), Some(3.0))), all[4..6]);

    // Wall bounds compare the wall-clock spans (1000 s + position in the fixture).
    let wall = |since: Option<f64>, until: Option<f64>| MatchQuery {
        since: since.map(TimeSpec::Wall),
        until: until.map(TimeSpec::Wall),
        ..q()
    };
    assert_eq!(keys(&store, wall(Some(1002.0), Some(1004.0))), all[4..6]);
    assert_eq!(keys(&store, wall(Some(1004.0), None)), all[6..]);
    assert_eq!(keys(&store, wall(None, Some(1000.5))), all[0..4]);

    let min_p = MatchQuery {
        min_probability: Some(0.5),
        ..q()
    };
    assert_eq!(
        keys(&store, min_p),
        [
            all[0].clone(),
            all[2].clone(),
            all[4].clone(),
            all[6].clone()
        ]
    );

    let limit = |n| MatchQuery {
        limit: Some(n),
        ..q()
    };
    // The newest rows, oldest first.
    assert_eq!(keys(&store, limit(3)), all[5..]);
    assert!(keys(&store, limit(0)).is_empty());

    let top = MatchQuery {
        top_only: true,
        ..q()
    };
    let tops = keys(&store, top);
    assert_eq!(tops.len(), 4);
    assert!(tops.iter().all(|t| t.3 == 1));

    let combined = MatchQuery {
        labels: vec!["dog".into()],
        top_only: true,
        min_probability: Some(0.1),
        ..q()
    };
    assert_eq!(keys(&store, combined), [k("cam1", 0, "dog", 1)]);

    let row = &store.query(&q()).unwrap()[0];
    assert_eq!(
        (row.offset, row.wall_start, row.wall_end),
        (Some((0.0, 2.0)), 1000.0, 1002.0)
    );
    assert_eq!(
        (row.kind, row.uri.as_str()),
        (SourceKind::File, "rtsp://***@cam1/stream")
    );
    assert_eq!(row.model_id, MODEL);
    assert_eq!(row.probability, 0.7);
    let json = serde_json::to_value(row).unwrap();
    assert_eq!(json["label"], "dog");
    assert_eq!(json["source"], "cam1");
}

// ---- the writer -------------------------------------------------------------

#[test]
fn one_bad_op_does_not_lose_the_rest_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    // Queued back to back, so they share a transaction.
    w.write_segment(seg("cam1", 0, &[("dog", 1, 0.9)])).unwrap();
    w.write_segment(seg("cam1", 2000, &[("dog", 1, 0.9), ("unicorn", 2, 0.1)]))
        .unwrap();
    w.write_segment(seg("cam1", 4000, &[("cat", 1, 0.9)]))
        .unwrap();
    let mut wrong_dim = seg("cam1", 6000, &[]);
    wrong_dim.embedding.push(1.0);
    w.write_segment(wrong_dim).unwrap();
    let mut unknown_model = seg("cam1", 8000, &[]);
    unknown_model.model_id = "sha256:nope".into();
    w.write_segment(unknown_model).unwrap();
    w.put_text_embeddings(MODEL, vec![("x".into(), vec![1.0])])
        .unwrap();
    w.write_segment(seg("cam2", 0, &[("cat", 1, 0.5)])).unwrap();

    let e = w.flush().unwrap_err();
    assert!(
        matches!(&e, StoreError::UnknownLabel { label, start_ms: 2000, .. } if label == "unicorn"),
        "{e}"
    );
    assert_eq!(e.disposition(), Disposition::Skip);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    // Reported once: the next flush starts clean.
    w.flush().unwrap();

    let store = Store::open(&path).unwrap();
    let landed: Vec<_> = store
        .segments(None)
        .unwrap()
        .into_iter()
        .map(|s| (s.source, s.start_ms))
        .collect();
    assert_eq!(
        landed,
        [
            ("cam1".into(), 0),
            ("cam1".into(), 4000),
            ("cam2".into(), 0)
        ]
    );
    // The failed segment left no stray matches behind.
    assert_eq!(store.query(&MatchQuery::default()).unwrap().len(), 3);
    assert!(store
        .cached_text_embeddings(MODEL, &["x".into()])
        .unwrap()
        .is_empty());

    let stats = w.close().unwrap();
    assert_eq!(stats.segments_written, 3);
    assert_eq!(stats.failed_ops, 4);
}

#[test]
fn bad_data_errors_are_skip_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    let cases: Vec<(NewSegment, &str)> = vec![
        (
            {
                let mut s = seg("cam1", 0, &[]);
                s.end_ms = -1;
                s
            },
            "before it starts",
        ),
        (seg("cam1", 0, &[("dog", 1, 0.5), ("cat", 1, 0.5)]), "ranks"),
        (seg("cam1", 0, &[("dog", 0, 0.5)]), "ranks"),
        (seg("cam1", 0, &[("dog", 1, f32::NAN)]), "probability"),
        (
            {
                let mut s = seg("cam1", 0, &[]);
                s.model_id = "sha256:nope".into();
                s
            },
            "not registered",
        ),
    ];
    for (s, needle) in cases {
        w.write_segment(s).unwrap();
        let e = w.flush().unwrap_err();
        assert_eq!(e.disposition(), Disposition::Skip, "{e}");
        assert!(e.to_string().contains(needle), "{e} lacks {needle}");
    }
    w.register_model(ModelRecord {
        embedding_dim: DIM + 1,
        ..model()
    })
    .unwrap();
    assert!(w.flush().unwrap_err().to_string().contains("embedding_dim"));
    w.close().unwrap();
    assert_eq!(Store::open(&path).unwrap().segment_count().unwrap(), 0);
}

#[test]
fn a_burst_of_segments_is_committed_in_few_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    let t = Instant::now();
    for i in 0..1000 {
        w.write_segment(seg("cam1", i * 2000, &[("dog", 1, 0.6), ("cat", 2, 0.4)]))
            .unwrap();
    }
    let stats = w.close().unwrap();
    eprintln!("1000 segments in {:?}: {stats:?}", t.elapsed());
    // +1 for the setup's transaction.
    assert_eq!(stats.segments_written, 1000);
    assert!(stats.transactions < 50, "{stats:?}");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.segment_count().unwrap(), 1000);
    assert_eq!(store.query(&MatchQuery::default()).unwrap().len(), 2000);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn readers_are_not_blocked_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    w.write_segment(seg("cam1", 0, &[("dog", 1, 0.6)])).unwrap();
    w.flush().unwrap();

    // A reader holding a snapshot open across the writer's commits: under a
    // rollback journal the commit would wait on it and time out.
    let snap = Connection::open(&path).unwrap();
    snap.execute_batch("BEGIN").unwrap();
    let count = |c: &Connection| -> i64 {
        c.query_row("SELECT count(*) FROM segments", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&snap), 1);
    let t = Instant::now();
    w.write_segment(seg("cam1", 2000, &[("dog", 1, 0.6)]))
        .unwrap();
    w.flush().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "writer waited on a reader"
    );
    assert_eq!(count(&snap), 1, "the snapshot is stable");
    snap.execute_batch("COMMIT").unwrap();
    assert_eq!(count(&snap), 2);

    // And a Store polling while a producer streams segments in.
    let store = Store::open(&path).unwrap();
    let total = 600;
    std::thread::scope(|sc| {
        let producer = sc.spawn(|| {
            for i in 2..total {
                w.write_segment(seg("cam2", i * 2000, &[("cat", 1, 0.5)]))
                    .unwrap();
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            w.flush()
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = 0;
        loop {
            let n = store.segment_count().unwrap();
            assert!(n >= last, "count went backwards");
            last = n;
            store
                .query(&MatchQuery {
                    sources: vec!["cam2".into()],
                    limit: Some(5),
                    ..Default::default()
                })
                .unwrap();
            if n == total as u64 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        producer.join().unwrap().unwrap();
    });
    assert_eq!(store.segment_count().unwrap(), total as u64);
    w.close().unwrap();
}

#[test]
fn close_and_drop_both_commit_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    for i in 0..5 {
        w.write_segment(seg("cam1", i * 2000, &[("dog", 1, 0.5)]))
            .unwrap();
    }
    let stats = w.close().unwrap();
    assert_eq!(stats.segments_written, 5);
    assert_eq!(Store::open(&path).unwrap().segment_count().unwrap(), 5);

    let w = StoreWriter::spawn(&path).unwrap();
    for i in 5..12 {
        w.write_segment(seg("cam1", i * 2000, &[("dog", 1, 0.5)]))
            .unwrap();
    }
    drop(w);
    assert_eq!(Store::open(&path).unwrap().segment_count().unwrap(), 12);
}

#[test]
fn close_reports_an_unflushed_error_after_committing_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    w.write_segment(seg("cam1", 0, &[("unicorn", 1, 0.5)]))
        .unwrap();
    w.write_segment(seg("cam1", 2000, &[("dog", 1, 0.5)]))
        .unwrap();
    let e = w.close().unwrap_err();
    assert!(matches!(e, StoreError::UnknownLabel { .. }), "{e}");
    assert_eq!(Store::open(&path).unwrap().segment_count().unwrap(), 1);
}

#[test]
fn the_writer_can_be_shared_between_pipeline_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<StoreWriter>();
    assert_send_sync::<StoreError>();

    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    std::thread::scope(|sc| {
        for cam in ["cam1", "cam2", "cam3"] {
            let w = &w;
            sc.spawn(move || {
                for i in 0..100 {
                    w.write_segment(seg(cam, i * 2000, &[("dog", 1, 0.5)]))
                        .unwrap();
                }
            });
        }
    });
    let stats = w.close().unwrap();
    assert_eq!(stats.segments_written, 300);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.segments(Some("cam3")).unwrap().len(), 100);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

// ---- source states ------------------------------------------------------------

fn state(name: &str, state: &str, frames: u64, updated_at: f64) -> SourceStateRecord {
    SourceStateRecord {
        name: name.into(),
        uri: format!("rtsp://***@{name}/stream"),
        state: state.into(),
        reason: None,
        last_frame_time: None,
        frames,
        frames_dropped: 0,
        reconnects: 0,
        retries: 0,
        updated_at,
    }
}

#[test]
fn source_states_are_upserted_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = StoreWriter::spawn(&path).unwrap();
    let mut failing = state("yard", "backing off", 0, 5.0);
    failing.reason = Some("connection refused".into());
    failing.reconnects = 3;
    w.put_source_state(failing.clone()).unwrap();
    w.put_source_state(state("door", "connecting", 0, 1.0))
        .unwrap();
    let mut streaming = state("door", "streaming", 1500, 61.5);
    streaming.uri = "rtsp://***@door/other".into();
    streaming.last_frame_time = Some(61.25);
    streaming.frames_dropped = 12;
    streaming.reconnects = 1;
    w.put_source_state(streaming.clone()).unwrap();
    w.flush().unwrap();

    let store = Store::open_existing(&path).unwrap();
    assert_eq!(store.source_states().unwrap(), [streaming, failing.clone()]);

    // The latest write wins in every column, NULLs included.
    let mut recovered = state("yard", "streaming", 10, 9.0);
    recovered.last_frame_time = Some(8.5);
    w.put_source_state(recovered.clone()).unwrap();
    w.flush().unwrap();
    assert_eq!(store.source_states().unwrap()[1], recovered);
    assert_eq!(
        raw_count(&path, "SELECT count(*) FROM source_states"),
        2,
        "one row per source"
    );

    // Big counters survive the trip through SQLite's signed integers.
    let big = state("zz", "finished", i64::MAX as u64, 1.0);
    w.put_source_state(big.clone()).unwrap();
    w.flush().unwrap();
    assert_eq!(store.source_states().unwrap()[2], big);
    w.close().unwrap();
}

#[test]
fn bad_source_states_are_refused_as_skip() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = StoreWriter::spawn(&path).unwrap();
    for s in SOURCE_STATES {
        w.put_source_state(state("cam", s, 0, 1.0)).unwrap();
    }
    w.flush().unwrap();
    let mut nan_frame = state("cam", "streaming", 0, 1.0);
    nan_frame.last_frame_time = Some(f64::NAN);
    let cases = [
        (state("cam", "backing_off", 0, 1.0), "backing_off"),
        (state("", "streaming", 0, 1.0), "empty source name"),
        (state("cam", "streaming", 0, f64::INFINITY), "updated_at"),
        (nan_frame, "last_frame_time"),
        (state("cam", "streaming", u64::MAX, 1.0), "state of source"),
    ];
    for (s, needle) in cases {
        w.put_source_state(s).unwrap();
        let e = w.flush().unwrap_err();
        assert_eq!(e.disposition(), Disposition::Skip, "{e}");
        assert!(e.to_string().contains(needle), "{e} lacks {needle}");
    }
    w.close().unwrap();
    let states = Store::open(&path).unwrap().source_states().unwrap();
    assert_eq!(states, [state("cam", "stopped", 0, 1.0)]);
}

// ---- retention ------------------------------------------------------------------

fn with_retention(retention: Retention) -> WriterOptions {
    WriterOptions {
        retention,
        // Only the explicit enforce_retention calls run it in these tests.
        retention_interval: Duration::from_secs(3600),
        ..WriterOptions::default()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn retention_by_age_deletes_old_segments_and_their_matches() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    setup(&path).close().unwrap();
    let w = StoreWriter::spawn_with(
        &path,
        with_retention(Retention {
            max_age: Some(Duration::from_secs(600)),
            max_db_bytes: None,
            min_free_bytes: None,
        }),
    )
    .unwrap();
    w.put_text_embeddings(MODEL, vec![("a dog".into(), emb(9.0))])
        .unwrap();
    // processed_at is 1000 s + start: 1000, 1002, ... 1018.
    for i in 0..10 {
        w.write_segment(seg("cam1", i * 2000, &[("dog", 1, 0.6), ("cat", 2, 0.3)]))
            .unwrap();
    }
    w.write_segment(seg("cam2", 0, &[("dog", 1, 0.6)])).unwrap();
    w.put_source_state(state("cam1", "streaming", 1, 1.0))
        .unwrap();

    // Cut-off 1010: strictly older goes; 1010 itself stays. The writes
    // above are committed first (no flush needed).
    let report = w.enforce_retention(1010.0 + 600.0).unwrap();
    assert_eq!(report.segments_deleted, 6, "{report:?}");
    assert!(report.bytes_after <= report.bytes_before, "{report:?}");
    w.flush().unwrap();

    let store = Store::open(&path).unwrap();
    let left: Vec<_> = store
        .segments(None)
        .unwrap()
        .into_iter()
        .map(|s| (s.source, s.start_ms))
        .collect();
    let want: Vec<_> = (5..10).map(|i| ("cam1".to_string(), i * 2000)).collect();
    assert_eq!(left, want);
    assert_eq!(raw_count(&path, "SELECT count(*) FROM matches"), 10);
    assert_eq!(
        raw_count(
            &path,
            "SELECT count(*) FROM matches WHERE segment_id NOT IN (SELECT id FROM segments)"
        ),
        0
    );
    // Everything that is not a segment is kept.
    assert_eq!(store.labels(Some(MODEL)).unwrap().len(), LABELS.len());
    assert_eq!(store.models().unwrap(), [model()]);
    assert_eq!(
        store
            .cached_text_embeddings(MODEL, &["a dog".into()])
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.source_states().unwrap().len(), 1);
    assert_eq!(raw_count(&path, "SELECT count(*) FROM sources"), 2);

    // Nothing more is due at the same clock reading.
    assert_eq!(w.enforce_retention(1610.0).unwrap().segments_deleted, 0);
    // Writing an old window again is allowed; the next run removes it.
    w.write_segment(seg("cam1", 0, &[("dog", 1, 0.6)])).unwrap();
    assert_eq!(w.enforce_retention(1610.0).unwrap().segments_deleted, 1);
    assert_eq!(store.integrity_check().unwrap(), "ok");
    w.close().unwrap();
}

const BIG_MODEL: &str = "sha256:big";
const BIG_DIM: usize = 512;

fn big_emb(seed: f32) -> Vec<f32> {
    (0..BIG_DIM).map(|i| seed + i as f32 * 1e-3).collect()
}

fn big_seg(i: i64) -> NewSegment {
    NewSegment {
        model_id: BIG_MODEL.into(),
        embedding: big_emb(i as f32),
        ..seg("cam1", i * 2000, &[("dog", 1, 0.6), ("cat", 2, 0.3)])
    }
}

#[test]
fn retention_by_size_shrinks_the_file_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let wal = dir.path().join("cliptag.db-wal");
    let n = 3000;
    {
        let w = StoreWriter::spawn(&path).unwrap();
        w.register_model(ModelRecord {
            id: BIG_MODEL.into(),
            path: "/models/big".into(),
            embedding_dim: BIG_DIM,
        })
        .unwrap();
        w.set_labels(
            BIG_MODEL,
            vec![
                LabelRecord {
                    embedding: big_emb(1.0),
                    ..label("dog", 0.0)
                },
                LabelRecord {
                    embedding: big_emb(2.0),
                    ..label("cat", 0.0)
                },
            ],
        )
        .unwrap();
        for i in 0..n {
            w.write_segment(big_seg(i)).unwrap();
        }
        w.close().unwrap();
    }
    let before = std::fs::metadata(&path).unwrap().len();
    // Each 2 KB embedding fills most of a 4 KB page.
    assert!(before > 8_000_000, "{before}");

    let limit = 2_000_000;
    let w = StoreWriter::spawn_with(
        &path,
        with_retention(Retention {
            max_age: None,
            max_db_bytes: Some(limit),
            min_free_bytes: None,
        }),
    )
    .unwrap();
    let t = Instant::now();
    let report = w.enforce_retention(unix_now()).unwrap();
    eprintln!("{report:?} in {:?}", t.elapsed());
    assert!(report.bytes_before > 8_000_000, "{report:?}");
    assert!(report.bytes_after <= limit, "{report:?}");

    // The space is back on the filesystem already, not only inside the file.
    let page = raw_pragma(&path, "page_size") as u64;
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after <= limit + 4 * page, "{after} bytes on disk");
    assert_eq!(after, report.bytes_after, "no free pages left in the file");
    assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);

    let store = Store::open(&path).unwrap();
    let kept: Vec<i64> = store
        .segments(None)
        .unwrap()
        .iter()
        .map(|s| s.start_ms / 2000)
        .collect();
    assert_eq!(kept.len() as u64, n as u64 - report.segments_deleted);
    // The newest, contiguously: nothing deleted from the middle.
    assert_eq!(kept, (n - kept.len() as i64..n).collect::<Vec<_>>());
    // Not far more than needed either: with ~1 segment per page, at least
    // half the budget is still segments.
    assert!(kept.len() > 200, "kept only {}", kept.len());
    assert_eq!(
        store.query(&MatchQuery::default()).unwrap().len(),
        2 * kept.len()
    );
    assert_eq!(store.labels(Some(BIG_MODEL)).unwrap().len(), 2);
    assert_eq!(store.integrity_check().unwrap(), "ok");

    // Under the limit now: a second run deletes nothing.
    assert_eq!(w.enforce_retention(unix_now()).unwrap().segments_deleted, 0);
    w.close().unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[test]
fn size_retention_stops_when_only_labels_are_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    setup(&path).close().unwrap();
    let w = StoreWriter::spawn_with(
        &path,
        with_retention(Retention {
            max_age: None,
            max_db_bytes: Some(1),
            min_free_bytes: None,
        }),
    )
    .unwrap();
    for i in 0..10 {
        w.write_segment(seg("cam1", i * 2000, &[("dog", 1, 0.6)]))
            .unwrap();
    }
    let report = w.enforce_retention(unix_now()).unwrap();
    assert_eq!(report.segments_deleted, 10);
    assert!(report.bytes_after > 1, "{report:?}");
    w.close().unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.segment_count().unwrap(), 0);
    assert_eq!(store.labels(None).unwrap().len(), LABELS.len());
}

#[test]
fn retention_without_limits_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let w = setup(&path);
    w.write_segment(seg("cam1", 0, &[("dog", 1, 0.6)])).unwrap();
    let report = w.enforce_retention(1e12).unwrap();
    assert_eq!(report.segments_deleted, 0);
    assert_eq!(report.bytes_before, report.bytes_after);
    let e = w.enforce_retention(f64::NAN).unwrap_err();
    assert_eq!(e.disposition(), Disposition::Skip, "{e}");
    w.close().unwrap();
    assert_eq!(Store::open(&path).unwrap().segment_count().unwrap(), 1);
}

#[test]
fn the_writer_applies_retention_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    setup(&path).close().unwrap();
    let w = StoreWriter::spawn_with(
        &path,
        WriterOptions {
            retention: Retention {
                max_age: Some(Duration::from_secs(600)),
                max_db_bytes: None,
                min_free_bytes: None,
            },
            retention_interval: Duration::from_millis(100),
            ..WriterOptions::default()
        },
    )
    .unwrap();
    let now = unix_now();
    for i in 0..20 {
        let mut s = seg("cam1", i * 2000, &[("dog", 1, 0.6)]);
        // Half an hour ago for the first ten, now for the rest.
        s.processed_at = if i < 10 { now - 1800.0 } else { now };
        w.write_segment(s).unwrap();
    }
    w.flush().unwrap();
    let store = Store::open(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.segment_count().unwrap() > 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<i64> = store
        .segments(None)
        .unwrap()
        .iter()
        .map(|s| s.start_ms / 2000)
        .collect();
    assert_eq!(left, (10..20).collect::<Vec<_>>());
    w.close().unwrap();
}

/// Migration 0003 converts a v2 database: a camera's windows (capture times in unix ms)
/// get their wall-clock spans from those times, a file's windows keep their position and
/// are placed at when they were tagged (all that was known), and `v_matches` reads them.
#[test]
fn version_2_database_gets_the_time_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(include_str!("../src/store/migrations/0001_initial.sql"))
            .unwrap();
        c.execute_batch(include_str!("../src/store/migrations/0002_daemon.sql"))
            .unwrap();
        c.execute_batch("PRAGMA user_version = 2;").unwrap();
    }
    let c = insert_v1_rows(&path);
    // A camera: capture times 2026-12-07T12:00:00Z + 10 s, tagged a second later.
    c.execute_batch(
        "INSERT INTO sources VALUES (2, 'door', 'rtsp://***@door/s');
         INSERT INTO segments VALUES (100, 2, 'sha256:m1', 1796644800000, 1796644810000,
                                      1796644811.0, 10, '[]', 1, x'00000000');
         INSERT INTO matches VALUES (100, 3, 1, 0.4, 0.9);",
    )
    .unwrap();
    drop(c);

    let w = StoreWriter::spawn(&path).unwrap();
    w.close().unwrap();
    assert_eq!(raw_user_version(&path), SCHEMA_VERSION);
    let store = Store::open_existing(&path).unwrap();
    let door = store
        .query(&MatchQuery {
            sources: vec!["door".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(door.len(), 1);
    assert_eq!(door[0].kind, SourceKind::Live);
    assert_eq!(
        (door[0].wall_start, door[0].wall_end),
        (1_796_644_800.0, 1_796_644_810.0)
    );
    assert_eq!(door[0].offset, None);
    assert_eq!(door[0].processed_at, 1_796_644_811.0);

    let cam1 = store
        .query(&MatchQuery {
            sources: vec!["cam1".into()],
            top_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(cam1.len(), 20);
    for (i, m) in cam1.iter().enumerate() {
        // Tagged at 1000 + i; a 2 s window ending then.
        let tagged = 1000.0 + i as f64;
        assert_eq!(m.kind, SourceKind::File);
        assert_eq!((m.wall_start, m.wall_end), (tagged - 2.0, tagged));
        assert_eq!(m.offset, Some((i as f64 * 2.0, i as f64 * 2.0 + 2.0)));
    }

    let c = Connection::open(&path).unwrap();
    let (utc_start, offset, label): (String, Option<f64>, String) = c
        .query_row(
            "SELECT utc_start, offset_s, label FROM v_matches WHERE source = 'door'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (utc_start.as_str(), offset, label.as_str()),
        ("2026-12-07T12:00:00.000Z", None, "red car")
    );
    let rows: i64 = c
        .query_row("SELECT count(*) FROM v_matches", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 41);
}

/// Version 3 counted every attempt as a reconnect: those counts move to `retries`.
#[test]
fn version_3_states_keep_their_attempts_as_retries() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let c = Connection::open(&path).unwrap();
        for sql in [
            include_str!("../src/store/migrations/0001_initial.sql"),
            include_str!("../src/store/migrations/0002_daemon.sql"),
            include_str!("../src/store/migrations/0003_time_model.sql"),
            "PRAGMA user_version = 3;
             INSERT INTO source_states (name, uri, state, reason, last_frame_time, frames,
                                        frames_dropped, reconnects, updated_at)
             VALUES ('door', 'rtsp://***@door/s', 'backing off', NULL, NULL, 0, 0, 34, 1.0);",
        ] {
            c.execute_batch(sql).unwrap();
        }
    }
    let w = StoreWriter::spawn(&path).unwrap();
    w.close().unwrap();
    assert_eq!(raw_user_version(&path), SCHEMA_VERSION);
    let states = Store::open_existing(&path)
        .unwrap()
        .source_states()
        .unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!((states[0].reconnects, states[0].retries), (0, 34));
}
