//! Classify: window embedding → label probabilities.
//!
//! Rules:
//! - A window's embedding is the re-normalised mean of its keyframes' normalised embeddings
//!   (mean pooling, as ViFi-CLIP and CLIP4Clip do); [`Aggregation`] is the seam for others.
//! - Each label's text embedding is the re-normalised mean of its prompts' normalised
//!   embeddings (CLIP's prompt ensembling). Class names ("dog") go through the templates;
//!   captions, lines starting with an article ("a person opening a fridge"), are used as
//!   written, since "a photo of a a person…" would only blur them.
//! - Scores are cosine × [`LOGIT_SCALE`], softmaxed over the label set: CLIP cosines cluster
//!   tightly and drift between models, so labels are ranked against each other rather than
//!   against a raw threshold.
//!
//! Files: [`labels`] (the labels file and each label's prompts), [`aggregate`] (keyframe
//! embeddings → the window's), [`label_set`] (labels with embeddings, and the scores of a
//! window), [`head`] and [`learned`] (what `cliptag-tune` trains, loaded and checked),
//! [`settings`] (the `[classify]` table).

pub mod aggregate;
pub mod error;
pub mod head;
pub mod label_set;
pub mod labels;
pub mod learned;
pub mod settings;

pub use aggregate::{mean_embedding, Aggregator};
pub use error::LabelError;
pub use head::{ProbeHead, PROBE_HEAD_FORMAT};
pub use label_set::{softmax, LabelScore, LabelSet, LOGIT_SCALE};
pub use labels::{expand_labels, is_caption, load_labels, parse_labels, prompts_for, Label};
pub use learned::{LearnedLabel, LearnedLabels, LEARNED_LABELS_FORMAT};
pub use settings::{ClassifyConfig, ClassifySection, DEFAULT_PROMPT_TEMPLATES};
