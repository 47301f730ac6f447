//! Datasets: a CSV of videos with a label or a caption each, and their train/val/test split.
//!
//! Rules:
//! - The header names the columns: `path` and one of `label` / `caption`, optionally
//!   `split` (`train`, `val` or `test`). Paths are relative to the CSV's directory.
//! - Without a `split` column every class is split on its own (60/20/20, at least one
//!   video in each split once a class has three), shuffled by a ChaCha8 seeded from the seed
//!   and the class name, so a split never depends on the CSV's row order, the platform or
//!   the crate version.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::error::TuneError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// Whether the text column holds class names or captions (which decides how prompts are
/// formed for zero-shot scoring: captions are used as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Label,
    Caption,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub path: PathBuf,
    /// Index into [`Dataset::classes`].
    pub class: usize,
    pub split: Split,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub csv: PathBuf,
    pub kind: TextKind,
    /// In order of first appearance in the CSV.
    pub classes: Vec<String>,
    pub examples: Vec<Example>,
}

impl Dataset {
    pub fn load(csv: &Path, seed: u64) -> Result<Dataset, TuneError> {
        let shown = csv.display().to_string();
        let err = |reason: String| TuneError::Dataset {
            path: shown.clone(),
            reason,
        };
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_path(csv)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        let headers = reader
            .headers()
            .map_err(|e| err(format!("cannot read the header: {e}")))?
            .clone();
        let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let path_column = column("path").ok_or_else(|| {
            err(format!(
                "no `path` column in the header {:?}; expected `path,label[,split]` or `path,caption[,split]`",
                headers.iter().collect::<Vec<_>>()
            ))
        })?;
        let (text_column, kind) = match (column("label"), column("caption")) {
            (Some(c), None) => (c, TextKind::Label),
            (None, Some(c)) => (c, TextKind::Caption),
            _ => {
                return Err(err(
                    "the header needs exactly one of the columns `label` and `caption`".into(),
                ))
            }
        };
        let split_column = column("split");
        let base = csv.parent().map(Path::to_path_buf).unwrap_or_default();

        let mut classes: Vec<String> = Vec::new();
        let mut rows: Vec<(PathBuf, usize, Option<Split>)> = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| err(e.to_string()))?;
            let line = record.position().map_or(0, |p| p.line());
            let line_err = |reason: String| TuneError::DatasetLine {
                path: shown.clone(),
                line,
                reason,
            };
            let field = |c: usize| record.get(c).unwrap_or("");
            let video = field(path_column);
            let text = field(text_column);
            if video.is_empty() || text.is_empty() {
                return Err(line_err("empty path or label".into()));
            }
            let path = base.join(video);
            if !path.is_file() {
                return Err(line_err(format!("video {} does not exist", path.display())));
            }
            let split = match split_column.map(field) {
                None | Some("") => None,
                Some(s) => Some(match s.to_ascii_lowercase().as_str() {
                    "train" => Split::Train,
                    "val" | "valid" | "validation" => Split::Val,
                    "test" => Split::Test,
                    other => {
                        return Err(line_err(format!(
                            "split {other:?}; expected train, val or test"
                        )))
                    }
                }),
            };
            let class = match classes.iter().position(|c| c == text) {
                Some(i) => i,
                None => {
                    classes.push(text.to_string());
                    classes.len() - 1
                }
            };
            rows.push((path, class, split));
        }
        if rows.is_empty() {
            return Err(err("no videos listed".into()));
        }
        let given = rows.iter().filter(|r| r.2.is_some()).count();
        if given != 0 && given != rows.len() {
            return Err(err(
                "some rows have a split and some do not; give every row one, or none".into(),
            ));
        }
        let examples = if given == rows.len() {
            rows.into_iter()
                .map(|(path, class, split)| Example {
                    path,
                    class,
                    split: split.unwrap_or(Split::Train),
                })
                .collect()
        } else {
            split_by_class(rows, &classes, seed)
        };
        Ok(Dataset {
            csv: csv.to_path_buf(),
            kind,
            classes,
            examples,
        })
    }

    pub fn split(&self, split: Split) -> impl Iterator<Item = &Example> {
        self.examples.iter().filter(move |e| e.split == split)
    }

    pub fn count(&self, split: Split) -> usize {
        self.split(split).count()
    }
}

/// 60/20/20 within each class, by a shuffle of the class's videos sorted by path, seeded by
/// the seed and the class's name (so neither row nor class order matters).
fn split_by_class(
    rows: Vec<(PathBuf, usize, Option<Split>)>,
    classes: &[String],
    seed: u64,
) -> Vec<Example> {
    use sha2::{Digest, Sha256};
    let mut examples = Vec::with_capacity(rows.len());
    for (class, name) in classes.iter().enumerate() {
        let digest = Sha256::digest(name.as_bytes());
        let name_seed = u64::from_le_bytes(digest[..8].try_into().unwrap_or_default());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ name_seed);
        let mut paths: Vec<PathBuf> = rows
            .iter()
            .filter(|r| r.1 == class)
            .map(|r| r.0.clone())
            .collect();
        paths.sort();
        paths.shuffle(&mut rng);
        let n = paths.len();
        let (val, test) = if n >= 3 {
            let val = ((n as f64 * 0.2).round() as usize).max(1);
            let test = ((n as f64 * 0.2).round() as usize).max(1);
            (val, test)
        } else {
            (0, 0)
        };
        for (i, path) in paths.into_iter().enumerate() {
            let split = if i < val {
                Split::Val
            } else if i < val + test {
                Split::Test
            } else {
                Split::Train
            };
            examples.push(Example { path, class, split });
        }
    }
    examples
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_dataset(dir: &Path, csv: &str, videos: &[&str]) -> PathBuf {
        for v in videos {
            std::fs::write(dir.join(v), b"not decoded here").unwrap();
        }
        let path = dir.join("dataset.csv");
        std::fs::write(&path, csv).unwrap();
        path
    }

    #[test]
    fn split_is_per_class_seeded_and_independent_of_row_order() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..10).map(|i| format!("v{i}.mp4")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let rows: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n},{}", if i % 2 == 0 { "red" } else { "blue" }))
            .collect();
        let csv = format!("path,label\n{}\n", rows.join("\n"));
        let a = Dataset::load(&write_dataset(dir.path(), &csv, &refs), 7).unwrap();
        assert_eq!(a.classes, vec!["red", "blue"]);
        for class in 0..2 {
            let of = |s| a.split(s).filter(|e| e.class == class).count();
            assert_eq!(
                (of(Split::Train), of(Split::Val), of(Split::Test)),
                (3, 1, 1)
            );
        }
        let reversed = format!(
            "path,label\n{}\n",
            rows.iter().rev().cloned().collect::<Vec<_>>().join("\n")
        );
        let b = Dataset::load(&write_dataset(dir.path(), &reversed, &refs), 7).unwrap();
        let split_of =
            |d: &Dataset, p: &PathBuf| d.examples.iter().find(|e| &e.path == p).unwrap().split;
        assert!(a.examples.iter().all(|e| split_of(&b, &e.path) == e.split));
        let c = Dataset::load(&write_dataset(dir.path(), &csv, &refs), 8).unwrap();
        assert!(a.examples.iter().any(|e| split_of(&c, &e.path) != e.split));
    }

    #[test]
    fn bad_datasets_name_the_line_and_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let videos = ["a.mp4", "b.mp4"];
        let e = Dataset::load(
            &write_dataset(dir.path(), "file,label\na.mp4,x\n", &videos),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no `path` column"), "{e}");
        let e = Dataset::load(
            &write_dataset(dir.path(), "path,label\na.mp4,x\nc.mp4,y\n", &videos),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 3") && e.contains("c.mp4 does not exist"),
            "{e}"
        );
        let e = Dataset::load(
            &write_dataset(
                dir.path(),
                "path,caption,split\na.mp4,a red ball,train\nb.mp4,a cube,later\n",
                &videos,
            ),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3") && e.contains("\"later\""), "{e}");
        let d = Dataset::load(
            &write_dataset(
                dir.path(),
                "path,caption,split\na.mp4,a red ball,train\nb.mp4,a cube,test\n",
                &videos,
            ),
            0,
        )
        .unwrap();
        assert_eq!(d.kind, TextKind::Caption);
        assert_eq!(d.count(Split::Test), 1);
    }
}
