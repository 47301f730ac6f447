//! Training curves: the per-epoch log as CSV (for people and scripts) and as a PNG (for a
//! glance), for `finetune` and `prompts`.
//!
//! Rules: the CSV is always written; the PNG needs a TrueType font for its text, looked for
//! at the usual Debian paths (`fonts-dejavu-core`, installed by scripts/setup-debian.sh) and
//! at `CLIPTAG_PLOT_FONT`. Without one the PNG is still drawn, without captions or tick
//! labels, and a warning says why: a missing font must not fail a long training run.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::error::TuneError;

/// One plotted quantity over epochs.
pub struct Curve<'a> {
    pub title: &'a str,
    /// (epoch, value), epochs counted from 1.
    pub points: Vec<(f64, f64)>,
    /// Accuracies are drawn on a fixed 0–100 % axis so runs compare at a glance.
    pub percent: bool,
}

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a font with plotters once per process; whether one was found.
fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let candidates = std::env::var("CLIPTAG_PLOT_FONT")
            .ok()
            .into_iter()
            .chain(FONT_PATHS.iter().map(|p| p.to_string()));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        tracing::warn!(
            "no TrueType font found ({} or CLIPTAG_PLOT_FONT): training curves are drawn without text",
            FONT_PATHS.join(", ")
        );
        false
    })
}

/// Draws the curves side by side into a PNG at `path`.
pub fn plot_png(path: &Path, title: &str, curves: &[Curve]) -> Result<(), TuneError> {
    let err = |e: String| TuneError::Model {
        path: path.display().to_string(),
        reason: format!("cannot draw the training curves: {e}"),
    };
    let text = font_available();
    let panel = 480u32;
    let width = panel * curves.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let root = if text {
        root.titled(title, ("sans-serif", 22))
            .map_err(|e| err(e.to_string()))?
    } else {
        root
    };
    let colours = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
    ];
    for ((area, curve), colour) in root
        .split_evenly((1, curves.len().max(1)))
        .iter()
        .zip(curves)
        .zip(colours.iter().cycle())
    {
        let last_epoch = curve.points.iter().map(|p| p.0).fold(1.0, f64::max);
        let (low, high) = if curve.percent {
            (0.0, 100.0)
        } else {
            let finite = curve.points.iter().map(|p| p.1).filter(|v| v.is_finite());
            let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            if lo.is_finite() && hi > lo {
                (lo.min(0.0), hi * 1.05)
            } else {
                (0.0, 1.0)
            }
        };
        let scale = if curve.percent { 100.0 } else { 1.0 };
        let mut builder = ChartBuilder::on(area);
        builder.margin(12);
        if text {
            builder
                .caption(curve.title, ("sans-serif", 18))
                .x_label_area_size(36)
                .y_label_area_size(48);
        }
        let mut chart = builder
            .build_cartesian_2d(1.0..last_epoch.max(2.0), low..high)
            .map_err(|e| err(e.to_string()))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("epoch");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().map(|&(x, y)| (x, y * scale)),
                colour.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// `finetune`'s log: `training_log.csv` and `training_curves.png` in `dir`.
pub fn write_finetune_log(dir: &Path, log: &[super::finetune::EpochLog]) -> Result<(), TuneError> {
    let mut csv =
        String::from("epoch,steps,train_loss,val_accuracy,learning_rate,videos_per_second\n");
    for e in log {
        csv += &format!(
            "{},{},{},{},{},{}\n",
            e.epoch, e.steps, e.train_loss, e.val_accuracy, e.learning_rate, e.videos_per_second
        );
    }
    let path = dir.join("training_log.csv");
    std::fs::write(&path, csv).map_err(|e| TuneError::Model {
        path: path.display().to_string(),
        reason: format!("cannot write: {e}"),
    })?;
    let points = |f: fn(&super::finetune::EpochLog) -> f64| {
        log.iter().map(|e| (e.epoch as f64, f(e))).collect()
    };
    plot_png(
        &dir.join("training_curves.png"),
        "cliptag-tune finetune",
        &[
            Curve {
                title: "training loss",
                points: points(|e| e.train_loss),
                percent: false,
            },
            Curve {
                title: "validation top-1 (%)",
                points: points(|e| e.val_accuracy),
                percent: true,
            },
            Curve {
                title: "learning rate",
                points: points(|e| e.learning_rate),
                percent: false,
            },
        ],
    )
}

/// `prompts`' curve of (training loss, validation accuracy) per epoch, as `STEM_curve.csv`
/// and `STEM_curve.png` beside `out`.
pub fn write_prompts_curve(out: &Path, curve: &[(f64, f64)]) -> Result<(), TuneError> {
    let stem = out
        .file_stem()
        .map_or("prompts".into(), |s| s.to_string_lossy().into_owned());
    let dir = out.parent().unwrap_or(Path::new("."));
    let mut csv = String::from("epoch,train_loss,val_accuracy\n");
    for (i, (loss, accuracy)) in curve.iter().enumerate() {
        csv += &format!("{},{loss},{accuracy}\n", i + 1);
    }
    let path = dir.join(format!("{stem}_curve.csv"));
    std::fs::write(&path, csv).map_err(|e| TuneError::Model {
        path: path.display().to_string(),
        reason: format!("cannot write: {e}"),
    })?;
    let epochs = |f: fn(&(f64, f64)) -> f64| {
        curve
            .iter()
            .enumerate()
            .map(|(i, c)| ((i + 1) as f64, f(c)))
            .collect()
    };
    plot_png(
        &dir.join(format!("{stem}_curve.png")),
        "cliptag-tune prompts",
        &[
            Curve {
                title: "training loss",
                points: epochs(|c| c.0),
                percent: false,
            },
            Curve {
                title: "validation top-1 (%)",
                points: epochs(|c| c.1),
                percent: true,
            },
        ],
    )
}
