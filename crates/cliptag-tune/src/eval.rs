//! Evaluation: how well a scorer ranks the test videos' classes (paper 002's metrics).
//!
//! Rules:
//! - A scorer gives every test video a score per class: CLIP's cosine for zero-shot and
//!   learned label embeddings, W·e + b for a probe head.
//! - Classification: top-1 and top-5 accuracy, per-class accuracy, confusion matrix.
//! - Retrieval (for text-embedding scorers): video→text ranks the true class's text among
//!   all classes; text→video ranks each video among all test videos for its class's text,
//!   other videos of the same class left out (they would be equally right). R@1/5/10 and
//!   the median rank, 1-based.

/// Scores of one video for every class.
pub type Scores = Vec<f32>;

#[derive(Debug, Clone, PartialEq)]
pub struct Retrieval {
    pub recall_at: [f64; 3],
    pub median_rank: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub videos: usize,
    pub top1: f64,
    pub top5: f64,
    /// Per class: (correct, videos).
    pub per_class: Vec<(usize, usize)>,
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    pub video_to_text: Option<Retrieval>,
    pub text_to_video: Option<Retrieval>,
}

/// The 1-based rank of `scores[index]` among `scores`; ties count against it.
fn rank_of(scores: &[f32], index: usize, skip: impl Fn(usize) -> bool) -> usize {
    let own = scores[index];
    1 + scores
        .iter()
        .enumerate()
        .filter(|&(j, &s)| j != index && !skip(j) && s >= own)
        .count()
}

fn retrieval(mut ranks: Vec<usize>) -> Retrieval {
    ranks.sort_unstable();
    let n = ranks.len().max(1) as f64;
    let at = |k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n;
    let median_rank = match ranks.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => ranks[len / 2] as f64,
        len => (ranks[len / 2 - 1] + ranks[len / 2]) as f64 / 2.0,
    };
    Retrieval {
        recall_at: [at(1), at(5), at(10)],
        median_rank,
    }
}

/// Evaluate `scores` (one row per video) against `truth`. `retrieval_scores`: whether the
/// scores are video–text similarities, so that retrieval means something.
pub fn evaluate(
    scores: &[Scores],
    truth: &[usize],
    classes: usize,
    retrieval_scores: bool,
) -> Evaluation {
    let mut per_class = vec![(0, 0); classes];
    let mut confusion = vec![vec![0; classes]; classes];
    let (mut top1, mut top5) = (0usize, 0usize);
    let mut v2t = Vec::with_capacity(truth.len());
    for (row, &t) in scores.iter().zip(truth) {
        let rank = rank_of(row, t, |_| false);
        let predicted = super::probe::argmax(row);
        confusion[t][predicted] += 1;
        per_class[t].1 += 1;
        if predicted == t {
            per_class[t].0 += 1;
            top1 += 1;
        }
        if rank <= 5 {
            top5 += 1;
        }
        v2t.push(rank);
    }
    let n = truth.len().max(1) as f64;
    let (video_to_text, text_to_video) = if retrieval_scores {
        let t2v = (0..truth.len())
            .map(|i| {
                let column: Vec<f32> = scores.iter().map(|row| row[truth[i]]).collect();
                rank_of(&column, i, |j| truth[j] == truth[i])
            })
            .collect();
        (Some(retrieval(v2t)), Some(retrieval(t2v)))
    } else {
        (None, None)
    };
    Evaluation {
        videos: truth.len(),
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        per_class,
        confusion,
        video_to_text,
        text_to_video,
    }
}

/// Cosine scores of videos against label embeddings.
pub fn cosine_scores(labels: &[Vec<f32>], videos: &[Vec<f32>]) -> Vec<Scores> {
    videos
        .iter()
        .map(|v| labels.iter().map(|l| cliptag::clip::cosine(v, l)).collect())
        .collect()
}

/// Probe-head scores (logits) of videos.
pub fn head_scores(head: &cliptag::classify::ProbeHead, videos: &[Vec<f32>]) -> Vec<Scores> {
    videos.iter().map(|v| head.logits(v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_a_hand_checked_case() {
        // 3 classes, 4 videos: video 2 (class 1) is confused with class 2.
        let scores = vec![
            vec![0.9, 0.1, 0.0],
            vec![0.2, 0.8, 0.1],
            vec![0.1, 0.3, 0.5],
            vec![0.0, 0.2, 0.7],
        ];
        let truth = [0, 1, 1, 2];
        let e = evaluate(&scores, &truth, 3, true);
        assert_eq!(e.top1, 0.75);
        assert_eq!(e.top5, 1.0);
        assert_eq!(e.per_class, vec![(1, 1), (1, 2), (1, 1)]);
        assert_eq!(e.confusion[1], vec![0, 1, 1]);
        let v2t = e.video_to_text.unwrap();
        // ranks 1, 1, 2, 1
        assert_eq!(v2t.recall_at, [0.75, 1.0, 1.0]);
        assert_eq!(v2t.median_rank, 1.0);
        // text→video: class 1's text scores videos [0.1, 0.8, 0.3, 0.2]; video 2 (0.3) is
        // ranked among videos 0 and 3 only (video 1 is also class 1): rank 1.
        // class 0's text: video 0 first. class 2's: video 3 (0.7) above video 2 (0.5).
        let t2v = e.text_to_video.unwrap();
        assert_eq!(t2v.recall_at[0], 1.0);
        let no_retrieval = evaluate(&scores, &truth, 3, false);
        assert!(no_retrieval.video_to_text.is_none());
    }
}
