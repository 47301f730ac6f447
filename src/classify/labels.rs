//! The labels file, and the prompts that stand for each label.

use super::error::LabelError;

/// One line of the labels file with the prompts that stand for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub text: String,
    pub prompts: Vec<String>,
}

/// Parse a labels file: one label per line, `#` starts a comment line, blank lines are
/// skipped, surrounding whitespace is trimmed. Duplicates and control characters are errors.
pub fn parse_labels(text: &str, path: &str) -> Result<Vec<String>, LabelError> {
    let mut labels: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let label = raw.trim();
        if label.is_empty() || label.starts_with('#') {
            continue;
        }
        let err = |reason: String| LabelError::Line {
            path: path.to_string(),
            line,
            reason,
        };
        if let Some(c) = label.chars().find(|c| c.is_control()) {
            return Err(err(format!("control character {c:?} in label {label:?}")));
        }
        if label.chars().count() > 300 {
            return Err(err(
                "label longer than 300 characters; CLIP reads at most 77 tokens".into(),
            ));
        }
        if labels.iter().any(|l| l == label) {
            return Err(err(format!("duplicate label {label:?}")));
        }
        labels.push(label.to_string());
    }
    if labels.is_empty() {
        return Err(LabelError::Empty {
            path: path.to_string(),
        });
    }
    Ok(labels)
}

pub fn load_labels(path: &std::path::Path) -> Result<Vec<String>, LabelError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| LabelError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        LabelError::Line {
            path: shown.clone(),
            line,
            reason: "not valid UTF-8".into(),
        }
    })?;
    parse_labels(&text, &shown)
}

/// A caption already reads as a sentence; a class name needs a template around it.
pub fn is_caption(label: &str) -> bool {
    let lower = label.to_lowercase();
    ["a ", "an ", "the "].iter().any(|a| lower.starts_with(a))
}

pub fn prompts_for(label: &str, templates: &[String]) -> Vec<String> {
    if is_caption(label) {
        vec![label.to_string()]
    } else {
        templates
            .iter()
            .map(|t| t.replacen("{}", label, 1))
            .collect()
    }
}

pub fn expand_labels(labels: &[String], templates: &[String]) -> Vec<Label> {
    labels
        .iter()
        .map(|l| Label {
            text: l.clone(),
            prompts: prompts_for(l, templates),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_file_rules() {
        let text = "# my labels\n\ndog\n  a person opening a fridge  \n# cat\ncar\n";
        assert_eq!(
            parse_labels(text, "l.txt").unwrap(),
            vec!["dog", "a person opening a fridge", "car"]
        );
        let e = parse_labels("dog\ncat\ndog\n", "l.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("duplicate"), "{e}");
        let e = parse_labels("dog\nca\tt\n", "l.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("control"), "{e}");
        assert!(matches!(
            parse_labels("# only\n\n", "l.txt"),
            Err(LabelError::Empty { .. })
        ));
    }

    #[test]
    fn captions_are_used_verbatim_class_names_get_templates() {
        let t = vec![
            "a photo of a {}.".to_string(),
            "a video of a {}.".to_string(),
        ];
        assert_eq!(
            prompts_for("dog", &t),
            vec!["a photo of a dog.", "a video of a dog."]
        );
        assert_eq!(
            prompts_for("a person carrying a ladder", &t),
            vec!["a person carrying a ladder"]
        );
        assert_eq!(prompts_for("dog on the sofa", &t).len(), 2);
        assert_eq!(prompts_for("The red car", &t), vec!["The red car"]);
    }
}
