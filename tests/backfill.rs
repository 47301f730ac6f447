//! Backfill: a label added after the fact finds its matches in windows tagged before it,
//! from their stored embeddings, with the video gone — offline (`cliptag labels backfill`),
//! on SIGHUP to a running daemon, and across a SIGKILL half-way.
//!
//! The clip is rendered here (scripts/make-synthetic-demo.sh) and tagged by
//! models/synthetic-clip through the real daemon; what is right comes from the clip's
//! layout.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::child::{free_port, wait_until, Daemon};
use crate::common::home::{text, Home};
use crate::common::repo;
use crate::common::windows::{copy_windows, render_patterns};

/// (class, seconds) in order; 1 s windows.
const LAYOUT: [(&str, u32); 3] = [
    ("bouncing ball", 3),
    ("checkerboard", 4),
    ("colour bars", 3),
];

fn labels_without(missing: &str) -> String {
    std::fs::read_to_string(repo().join("examples/synthetic-labels.txt"))
        .unwrap()
        .lines()
        .filter(|l| *l != missing)
        .map(|l| format!("{l}\n"))
        .collect()
}

fn config(home: &Home, sources: &str) -> PathBuf {
    let path = home.path("cliptag.toml");
    std::fs::write(
        &path,
        format!(
            "labels = \"labels.txt\"\ndatabase = \"tags.db\"\n[model]\ndir = {:?}\nthreads = 1\n\
             [sampling]\nfps = 4.0\n[window]\nseconds = 1.0\n[daemon]\nbackoff_initial = \"200ms\"\n\
             backoff_max = \"1s\"\n{sources}",
            repo().join("models/synthetic-clip"),
        ),
    )
    .unwrap();
    path
}

fn db(home: &Home) -> rusqlite::Connection {
    open(&home.path("tags.db"))
}

fn floats(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn open(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

/// Top label of each window of `source`, by position.
fn top_labels(home: &Home, source: &str) -> Vec<(i64, String)> {
    matches_in(&db(home), source, 1)
        .into_iter()
        .map(|(start, label, _)| (start, label))
        .collect()
}

/// Each window's matches down to `rank`: (position, label, probability).
fn matches_in(c: &rusqlite::Connection, source: &str, rank: u32) -> Vec<(i64, String, f64)> {
    c.prepare(
            "SELECT s.start_ms, l.text, m.probability FROM segments s \
             JOIN sources so ON so.id = s.source_id \
             JOIN matches m ON m.segment_id = s.id AND m.rank <= ?2 JOIN labels l ON l.id = m.label_id \
             WHERE so.name = ?1 ORDER BY s.start_ms, m.rank",
        )
        .unwrap()
        .query_map(rusqlite::params![source, rank], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The label sets the windows were scored by (`None`: not known, e.g. copied rows).
fn label_sets(home: &Home) -> Vec<Option<String>> {
    db(home)
        .prepare(
            "SELECT DISTINCT b.label_set FROM segments s \
             LEFT JOIN scored_by b ON b.segment_id = s.id ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The checkerboard segment's windows: [3 s, 7 s).
fn checkerboard_windows(tops: &[(i64, String)]) -> Vec<&str> {
    tops.iter()
        .filter(|(start, _)| (3000..7000).contains(start))
        .map(|(_, l)| l.as_str())
        .collect()
}

/// Tags the clip with every label but checkerboard into tags.db (`settings`: more of the
/// config, before the source), then deletes the clip.
fn tag_without_checkerboard(home: &Home, settings: &str) -> PathBuf {
    let clip = render_patterns(home, &LAYOUT);
    let config = config(
        home,
        &format!("{settings}[[source]]\nname = \"patterns\"\nuri = {clip:?}\n"),
    );
    let o = home.cliptag(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let tops = top_labels(home, "patterns");
    assert_eq!(tops.len(), 10);
    assert!(
        checkerboard_windows(&tops)
            .iter()
            .all(|l| *l != "checkerboard"),
        "{tops:?}"
    );
    // The video is gone: a backfill needs none.
    std::fs::remove_file(&clip).unwrap();
    config
}

/// All labels back in the labels file, then `cliptag labels backfill` on the stopped
/// daemon's database: it rescores all ten windows.
fn backfill_offline(home: &Home, config: &std::path::Path) {
    std::fs::write(home.path("labels.txt"), labels_without("")).unwrap();
    let o = home.cliptag(&["labels", "backfill", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("rescored 10 window(s)"),
        "{}",
        text(&o.stdout)
    );
}

/// The active labels' texts and embeddings.
fn active_labels(c: &rusqlite::Connection) -> Vec<(String, Vec<f32>)> {
    let labels: Vec<(String, Vec<f32>)> = c
        .prepare("SELECT text, embedding FROM labels WHERE active = 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, floats(&r.get::<_, Vec<u8>>(1)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(labels.len(), 8);
    labels
}

/// CLIP's zero-shot rule, computed here rather than by cliptag: softmax(100 · cosine) of
/// `embedding` against each label, in the labels' order.
fn zero_shot(embedding: &[f32], labels: &[(String, Vec<f32>)]) -> Vec<f64> {
    let logits: Vec<f64> = labels
        .iter()
        .map(|(_, l)| 100.0 * crate::common::cosine(embedding, l))
        .collect();
    let top = logits.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = logits.iter().map(|x| (x - top).exp()).sum();
    logits.iter().map(|x| (x - top).exp() / sum).collect()
}

#[test]
fn labels_backfill_scores_the_past_without_the_video() {
    let home = Home::new(&labels_without("checkerboard"));
    let config = tag_without_checkerboard(&home, "");
    let before = label_sets(&home);
    assert_eq!(before.len(), 1);

    backfill_offline(&home, &config);
    // Every window's matches are what CLIP's zero-shot rule gives for its stored
    // embedding and the active labels' embeddings, best three.
    let c = db(&home);
    let labels = active_labels(&c);
    let windows: Vec<(i64, Vec<f32>)> = c
        .prepare("SELECT start_ms, embedding FROM segments ORDER BY start_ms")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, floats(&r.get::<_, Vec<u8>>(1)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let stored = matches_in(&c, "patterns", 3);
    assert_eq!(windows.len(), 10);
    assert_eq!(stored.len(), 30);
    for (i, (start, embedding)) in windows.iter().enumerate() {
        let mut expected: Vec<(&str, f64)> = labels
            .iter()
            .zip(zero_shot(embedding, &labels))
            .map(|((t, _), p)| (t.as_str(), p))
            .collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (rank, (label, p)) in expected.iter().take(3).enumerate() {
            let (s_start, s_label, s_p) = &stored[i * 3 + rank];
            assert_eq!(
                (s_start, s_label.as_str()),
                (start, *label),
                "window {start} rank {}",
                rank + 1
            );
            assert!((s_p - p).abs() < 1e-4, "window {start}: {s_p} vs {p}");
        }
    }
    drop(c);
    let tops = top_labels(&home, "patterns");
    assert!(
        checkerboard_windows(&tops)
            .iter()
            .filter(|l| **l == "checkerboard")
            .count()
            >= 2,
        "{tops:?}"
    );
    // One label set for every window, and not the old one.
    let after = label_sets(&home);
    assert_eq!(after.len(), 1);
    assert_ne!(after, before);
    // A second backfill finds nothing left to do.
    let o = home.cliptag(&["labels", "backfill", "--config", config.to_str().unwrap()]);
    assert!(
        text(&o.stdout).contains("rescored 0 window(s)"),
        "{}",
        text(&o.stdout)
    );
    // `query` shows the new label like any other.
    let rows = home.query(&["--label", "checkerboard", "--top"]);
    assert_eq!(
        rows.len(),
        tops.iter().filter(|(_, l)| l == "checkerboard").count()
    );
}

#[test]
fn under_max_a_backfill_scores_each_keyframe_as_the_tagger_did() {
    let home = Home::new(&labels_without("checkerboard"));
    let config = tag_without_checkerboard(&home, "[keyframes]\naggregate = \"max\"\n");
    backfill_offline(&home, &config);

    // Expected, computed here: per keyframe, softmax(100 · cosine) over the active labels;
    // per label, its best keyframe's probability; the best three labels.
    let c = db(&home);
    let labels = active_labels(&c);
    let mut keyframes: std::collections::BTreeMap<i64, Vec<Vec<f32>>> = Default::default();
    c.prepare(
        "SELECT s.start_ms, k.embedding FROM keyframe_embeddings k \
         JOIN segments s ON s.id = k.segment_id ORDER BY s.start_ms, k.keyframe",
    )
    .unwrap()
    .query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, floats(&r.get::<_, Vec<u8>>(1)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .for_each(|(start, e)| keyframes.entry(start).or_default().push(e));
    assert_eq!(keyframes.len(), 10, "every window keeps its keyframes");
    let kinds: Vec<String> = c
        .prepare("SELECT DISTINCT embedding_kind FROM segments ORDER BY 1")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        kinds.iter().all(|k| k == "mean" || k == "reused"),
        "{kinds:?}"
    );
    let stored = matches_in(&c, "patterns", 3);
    assert_eq!(stored.len(), 30);
    for (i, (start, frames)) in keyframes.iter().enumerate() {
        let mut best = vec![0f64; labels.len()];
        for frame in frames {
            for (b, p) in best.iter_mut().zip(zero_shot(frame, &labels)) {
                *b = b.max(p);
            }
        }
        let mut expected: Vec<(&str, f64)> = labels
            .iter()
            .zip(&best)
            .map(|((t, _), p)| (t.as_str(), *p))
            .collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Several labels can each have a keyframe they win outright (probability ~1), so
        // near-ties may come in either order: each rank's probability is the expected one,
        // and each stored label has the probability expected for it.
        for (rank, (_, p)) in expected.iter().take(3).enumerate() {
            let (s_start, s_label, s_p) = &stored[i * 3 + rank];
            assert_eq!(s_start, start);
            assert!(
                (s_p - p).abs() < 1e-4,
                "window {start} rank {}: {s_p} vs {p} ({expected:?})",
                rank + 1
            );
            let own = expected.iter().find(|(l, _)| l == s_label).unwrap().1;
            assert!(
                (s_p - own).abs() < 1e-4,
                "window {start} {s_label}: {s_p} vs {own}"
            );
        }
    }
    // Retention takes a window's keyframes with it.
    drop(c);
    let c = db(&home);
    c.execute_batch("PRAGMA foreign_keys = ON; DELETE FROM segments WHERE start_ms < 5000;")
        .unwrap();
    let left: i64 = c
        .query_row(
            "SELECT count(DISTINCT segment_id) FROM keyframe_embeddings",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 5);
}

#[test]
fn sighup_backfills_and_a_kill_half_way_is_finished_once() {
    let home = Home::new(&labels_without("checkerboard"));
    tag_without_checkerboard(&home, "");
    // Many more windows like these, so a backfill takes long enough to be killed: the
    // tagged windows copied to other positions (their embeddings real, not made up).
    let copies = 20_000;
    copy_windows(&home.path("tags.db"), copies, |c| {
        matches!(c, "start_ms" | "end_ms").then(|| format!("{c} + n * 100000"))
    });
    let total: i64 = db(&home)
        .query_row("SELECT count(*) FROM segments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, 10 * (i64::from(copies) + 1));

    // A daemon that keeps running: a camera nobody answers.
    let port = free_port();
    let config = config(
        &home,
        &format!("[[source]]\nname = \"cam\"\nuri = \"rtsp://127.0.0.1:{port}/none\"\n"),
    );
    std::fs::write(home.path("labels.txt"), labels_without("")).unwrap();
    // The copies carry no label set; the originals the old one.
    let old_sets = label_sets(&home);
    assert_eq!(old_sets.len(), 2, "{old_sets:?}");
    // Started with the new labels file: it backfills at once; killed half-way.
    let mut daemon = Daemon::start(&config, &[]);
    wait_until(
        Duration::from_secs(60),
        "the backfill to start moving windows",
        || label_sets(&home).iter().any(|s| !old_sets.contains(s)),
    );
    let _ = daemon.child.kill();
    let _ = daemon.child.wait();
    let new_set = label_sets(&home)
        .into_iter()
        .find(|s| !old_sets.contains(s))
        .flatten()
        .unwrap();
    let moved: i64 = db(&home)
        .query_row(
            "SELECT count(*) FROM scored_by WHERE label_set = ?1",
            [&new_set],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!("killed with {moved} of {total} windows moved");
    assert!(
        moved < total,
        "the kill came after the backfill ended: nothing to resume"
    );

    // Started again it goes on where it stopped, each window once.
    let mut daemon = Daemon::start(&config, &[]);
    wait_until(Duration::from_secs(60), "the backfill to finish", || {
        daemon.log().contains("backfill: done")
    });
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("backfill: rescoring"))
        .unwrap_or("");
    let left = total - moved;
    assert!(
        line.contains(&format!("windows={left}")),
        "the restart rescored what was left ({left}), no more: {line}"
    );
    // "done" is said when the last chunk is queued; it commits a moment later.
    wait_until(Duration::from_secs(10), "one label set", || {
        label_sets(&home) == vec![Some(new_set.clone())]
    });
    let tops = top_labels(&home, "patterns");
    assert!(
        checkerboard_windows(&tops).contains(&"checkerboard"),
        "{tops:?}"
    );

    // SIGHUP with a label removed: the running daemon moves every window to that set.
    std::fs::write(home.path("labels.txt"), labels_without("colour bars")).unwrap();
    let set_before = label_sets(&home);
    daemon.signal("HUP");
    wait_until(Duration::from_secs(60), "the SIGHUP backfill", || {
        let sets = label_sets(&home);
        sets.len() == 1 && sets != set_before
    });
    let tops = top_labels(&home, "patterns");
    assert!(tops.iter().all(|(_, l)| l != "colour bars"), "{tops:?}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());
}
