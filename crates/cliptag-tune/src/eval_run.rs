//! The `eval` mode: zero-shot, learned labels and a probe head scored on a session's test
//! split for each window aggregation, as one table, and the CSV files behind it (written
//! with the `csv` crate, so class names with commas or quotes stay one field).

use std::path::Path;

use cliptag::classify::{expand_labels, LearnedLabels, ProbeHead};
use cliptag::daemon::other_model;
use cliptag::keyframes::Aggregation;

use super::error::TuneError;
use super::eval::{cosine_scores, evaluate, head_scores, Evaluation, Retrieval};
use super::session::{zero_shot_embeddings, Session};

/// One scorer on one aggregation.
pub struct EvalRow {
    /// "zero-shot", "prompts" or "probe".
    pub method: &'static str,
    pub aggregation: Aggregation,
    pub evaluation: Evaluation,
}

/// The columns of the table and of `metrics.csv`.
pub const METRIC_COLUMNS: [&str; 13] = [
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

/// Score the test split with zero-shot, and with the head and the learned labels when
/// given (each refused unless made from this session's model), for every aggregation.
pub fn run_eval(
    session: &mut Session,
    head: Option<&Path>,
    label_embeddings: Option<&Path>,
    aggregations: &[Aggregation],
) -> Result<Vec<EvalRow>, TuneError> {
    let classes = session.dataset.classes.clone();
    let model_id = session.model.id.clone();
    let made_for = |path: &Path, file_model: &str| match other_model(file_model, &model_id) {
        Some(reason) => Err(TuneError::Model {
            path: path.display().to_string(),
            reason,
        }),
        None => Ok(()),
    };
    let head = head
        .map(|path| -> Result<ProbeHead, TuneError> {
            let head = ProbeHead::load(path).map_err(|e| model_error(path, e))?;
            made_for(path, &head.model_id)?;
            head.for_labels(&expand_labels(&classes, &[]), path)
                .map_err(|e| model_error(path, e))
        })
        .transpose()?;
    let learned = label_embeddings
        .map(|path| -> Result<Vec<Vec<f32>>, TuneError> {
            let learned = LearnedLabels::load(path).map_err(|e| model_error(path, e))?;
            made_for(path, &learned.model_id)?;
            classes
                .iter()
                .map(|c| {
                    learned
                        .get(c)
                        .map(<[f32]>::to_vec)
                        .ok_or_else(|| TuneError::Model {
                            path: path.display().to_string(),
                            reason: format!("no learned embedding for class {c:?}"),
                        })
                })
                .collect()
        })
        .transpose()?;
    let zero_shot = zero_shot_embeddings(&session.model, &classes, &session.templates)?;

    let n = classes.len();
    let mut rows = Vec::new();
    for &aggregation in aggregations {
        if aggregation == Aggregation::Max {
            return Err(TuneError::Training(
                "eval compares window embeddings: aggregation mean or grid (max scores each keyframe on its own, in the daemon)".into(),
            ));
        }
        let mut settings = session.settings.clone();
        settings.keyframes.aggregate = aggregation;
        let test = session.embed(&settings)?.test;
        rows.push(EvalRow {
            method: "zero-shot",
            aggregation,
            evaluation: evaluate(&cosine_scores(&zero_shot, &test.x), &test.y, n, true),
        });
        if let Some(learned) = &learned {
            rows.push(EvalRow {
                method: "prompts",
                aggregation,
                evaluation: evaluate(&cosine_scores(learned, &test.x), &test.y, n, true),
            });
        }
        if let Some(head) = &head {
            rows.push(EvalRow {
                method: "probe",
                aggregation,
                evaluation: evaluate(&head_scores(head, &test.x), &test.y, n, false),
            });
        }
    }
    Ok(rows)
}

fn model_error(path: &Path, e: impl std::fmt::Display) -> TuneError {
    TuneError::Model {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The aggregation's name as the flag and the CSVs spell it.
pub fn aggregation_name(aggregation: Aggregation) -> String {
    format!("{aggregation:?}").to_lowercase()
}

/// A row's cells in [`METRIC_COLUMNS`] order: percentages with one decimal, `-` where a
/// scorer has no retrieval.
pub fn metric_cells(row: &EvalRow) -> Vec<String> {
    let percent = |v: f64| format!("{:.1}", 100.0 * v);
    let retrieval = |r: &Option<Retrieval>| match r {
        Some(r) => vec![
            percent(r.recall_at[0]),
            percent(r.recall_at[1]),
            percent(r.recall_at[2]),
            format!("{}", r.median_rank),
        ],
        None => vec!["-".into(); 4],
    };
    let e = &row.evaluation;
    let mut cells = vec![
        row.method.to_string(),
        aggregation_name(row.aggregation),
        e.videos.to_string(),
        percent(e.top1),
        percent(e.top5),
    ];
    cells.extend(retrieval(&e.video_to_text));
    cells.extend(retrieval(&e.text_to_video));
    cells
}

/// `metrics.csv`, `per_class.csv` and one `confusion_METHOD_AGGREGATION.csv` per row.
pub fn write_csvs(dir: &Path, classes: &[String], rows: &[EvalRow]) -> Result<(), TuneError> {
    let io = |path: &Path, e: &dyn std::fmt::Display| TuneError::Model {
        path: path.display().to_string(),
        reason: format!("cannot write: {e}"),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let write = |name: &str, records: Vec<Vec<String>>| -> Result<(), TuneError> {
        let path = dir.join(name);
        let mut w = csv::Writer::from_path(&path).map_err(|e| io(&path, &e))?;
        for record in records {
            w.write_record(&record).map_err(|e| io(&path, &e))?;
        }
        w.flush().map_err(|e| io(&path, &e))
    };
    let mut metrics = vec![METRIC_COLUMNS.iter().map(|c| c.to_string()).collect()];
    metrics.extend(rows.iter().map(metric_cells));
    write("metrics.csv", metrics)?;

    let mut per_class = vec![["method", "aggregation", "class", "correct", "videos"]
        .map(String::from)
        .to_vec()];
    for row in rows {
        let aggregation = aggregation_name(row.aggregation);
        for (class, (correct, videos)) in classes.iter().zip(&row.evaluation.per_class) {
            per_class.push(vec![
                row.method.to_string(),
                aggregation.clone(),
                class.clone(),
                correct.to_string(),
                videos.to_string(),
            ]);
        }
        let mut confusion = vec![std::iter::once("truth\\predicted".to_string())
            .chain(classes.iter().cloned())
            .collect::<Vec<_>>()];
        for (class, counts) in classes.iter().zip(&row.evaluation.confusion) {
            confusion.push(
                std::iter::once(class.clone())
                    .chain(counts.iter().map(|c| c.to_string()))
                    .collect(),
            );
        }
        write(
            &format!("confusion_{}_{aggregation}.csv", row.method),
            confusion,
        )?;
    }
    write("per_class.csv", per_class)
}
