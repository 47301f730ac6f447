//! A probe head from `cliptag-tune probe`: a linear classifier over one model's window
//! embeddings, loaded, checked and ordered like the labels file.

use super::error::LabelError;
use super::labels::Label;

/// The format tag of [`ProbeHead`] files; bumped when their meaning changes.
pub const PROBE_HEAD_FORMAT: &str = "cliptag-probe-head/1";

/// A linear classifier over one model's normalised window embeddings, as trained by
/// `cliptag-tune probe`: logits = W·e + b. Tied to the model id whose embeddings it was
/// trained on, since another model's (or variant's) embedding space is a different one.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeHead {
    pub format: String,
    pub model_id: String,
    pub classes: Vec<String>,
    /// One row per class, each of the embedding's dimension.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

impl ProbeHead {
    pub fn load(path: &std::path::Path) -> Result<ProbeHead, LabelError> {
        let err = |reason: String| LabelError::Head {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let head: ProbeHead = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "not a probe head (JSON written by cliptag-tune probe): {e}"
            ))
        })?;
        head.check().map_err(err)?;
        Ok(head)
    }

    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    fn check(&self) -> Result<(), String> {
        if self.format != PROBE_HEAD_FORMAT {
            return Err(format!(
                "format {:?}, expected {PROBE_HEAD_FORMAT:?}",
                self.format
            ));
        }
        let dim = self.weights.first().map_or(0, Vec::len);
        if self.classes.is_empty()
            || self.weights.len() != self.classes.len()
            || self.bias.len() != self.classes.len()
            || dim == 0
            || self.weights.iter().any(|row| row.len() != dim)
        {
            return Err(format!(
                "expected one weight row of equal length and one bias per class: {} classes, {} rows, {} biases",
                self.classes.len(),
                self.weights.len(),
                self.bias.len()
            ));
        }
        let values = self.weights.iter().flatten().chain(&self.bias);
        if values.into_iter().any(|v| !v.is_finite()) {
            return Err("weights or biases are not finite".into());
        }
        Ok(())
    }

    pub fn dim(&self) -> usize {
        self.weights.first().map_or(0, Vec::len)
    }

    pub fn logits(&self, embedding: &[f32]) -> Vec<f32> {
        self.weights
            .iter()
            .zip(&self.bias)
            .map(|(row, b)| row.iter().zip(embedding).map(|(w, x)| w * x).sum::<f32>() + b)
            .collect()
    }

    /// The head with its rows in the order of `labels`, which must be exactly its classes:
    /// a label the head was not trained on would get no score, and a class missing from
    /// the labels file would be stored under a label nobody asked for.
    pub fn for_labels(
        &self,
        labels: &[Label],
        path: &std::path::Path,
    ) -> Result<ProbeHead, LabelError> {
        let err = |reason: String| LabelError::Head {
            path: path.display().to_string(),
            reason,
        };
        let unknown: Vec<&str> = labels
            .iter()
            .map(|l| l.text.as_str())
            .filter(|l| !self.classes.iter().any(|c| c == l))
            .collect();
        let missing: Vec<&str> = self
            .classes
            .iter()
            .map(String::as_str)
            .filter(|c| !labels.iter().any(|l| l.text == *c))
            .collect();
        if !unknown.is_empty() || !missing.is_empty() {
            return Err(err(format!(
                "its classes must be the labels file's labels: labels without a class in the head: {unknown:?}; classes not in the labels file: {missing:?}"
            )));
        }
        let row = |label: &str| self.classes.iter().position(|c| c == label).unwrap_or(0);
        Ok(ProbeHead {
            classes: labels.iter().map(|l| l.text.clone()).collect(),
            weights: labels
                .iter()
                .map(|l| self.weights[row(&l.text)].clone())
                .collect(),
            bias: labels.iter().map(|l| self.bias[row(&l.text)]).collect(),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::LabelSet;

    #[test]
    fn a_probe_head_replaces_the_logits_and_must_match_the_labels() {
        let labels: Vec<Label> = ["cat", "dog"]
            .iter()
            .map(|t| Label {
                text: t.to_string(),
                prompts: vec![],
            })
            .collect();
        // Stored in another order than the labels file: rows follow their class names.
        let head = ProbeHead {
            format: PROBE_HEAD_FORMAT.into(),
            model_id: "m".into(),
            classes: vec!["dog".into(), "cat".into()],
            weights: vec![vec![0.0, 4.0], vec![4.0, 0.0]],
            bias: vec![0.5, 0.0],
        };
        let path = std::path::Path::new("head.json");
        let ordered = head.for_labels(&labels, path).unwrap();
        assert_eq!(ordered.classes, vec!["cat", "dog"]);
        assert_eq!(ordered.bias, vec![0.0, 0.5]);
        let set = LabelSet {
            labels: labels.clone(),
            // Cosines alone would pick "cat" for every input.
            embeddings: vec![vec![1.0, 0.0], vec![1.0, 0.0]],
            head: Some(ordered),
        };
        let s = set.score(&[0.0, 1.0]);
        assert_eq!(s[0].label, "dog");
        let expected = 1.0 / (1.0 + (-4.5f32).exp());
        assert!((s[0].probability - expected).abs() < 1e-5, "{s:?}");
        assert_eq!(s[0].cosine, 0.0);

        let three: Vec<Label> = ["cat", "dog", "car"]
            .iter()
            .map(|t| Label {
                text: t.to_string(),
                prompts: vec![],
            })
            .collect();
        let e = head.for_labels(&three, path).unwrap_err().to_string();
        assert!(e.contains("head.json") && e.contains("\"car\""), "{e}");
        let bad = ProbeHead {
            bias: vec![0.0],
            ..head.clone()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.json");
        bad.save(&file).unwrap();
        let e = ProbeHead::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("bad.json") && e.contains("one bias per class"),
            "{e}"
        );
        head.save(&file).unwrap();
        assert_eq!(ProbeHead::load(&file).unwrap(), head);
    }
}
