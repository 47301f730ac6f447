//! Which decoded frames are kept: by timestamps (`fps`) or by count (`every_nth_frame`).
//!
//! Rules: the decision is made per decoded frame *before* colour conversion (the pipeline
//! asks [`Sampler::take`] in a pad probe), so a 60 fps stream does not pay for converting
//! frames nobody looks at; [`SamplingSection`] is the `[sampling]` table of the config and
//! the `--fps` / `--every-nth-frame` flags of `cliptag embed`, one shape for both.

use crate::settings::{Invalid, Setting};

/// How frames are picked from the decoded stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// A fixed rate by timestamps, whatever the stream's own rate is.
    Fps(f64),
    /// Every Nth decoded frame, counting from the first (paper 000 uses 50).
    EveryNth(u32),
}

/// Pure sampling decision, fed one decoded frame at a time.
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    seen: u64,
    next_due: Option<f64>,
}

impl Sampler {
    pub fn new(sampling: Sampling) -> Sampler {
        Sampler {
            sampling,
            seen: 0,
            next_due: None,
        }
    }

    /// `pts`: stream time in seconds, when known.
    pub fn take(&mut self, pts: Option<f64>) -> bool {
        let index = self.seen;
        self.seen += 1;
        match self.sampling {
            Sampling::EveryNth(n) => index.is_multiple_of(n as u64),
            Sampling::Fps(fps) => {
                let period = 1.0 / fps;
                let Some(t) = pts else { return index == 0 };
                // A millisecond of slack: 5 fps sources have timestamps like 0.99999 s.
                let due = self.next_due.unwrap_or(t);
                if t + 1e-3 < due {
                    return false;
                }
                // Stay on the grid so rounding does not drift; after a gap of more than a
                // period, restart the grid at this frame instead of emitting a burst.
                let next = if t - due >= period {
                    t + period
                } else {
                    due + period
                };
                self.next_due = Some(next);
                true
            }
        }
    }
}

/// The `[sampling]` table, and the same options as `cliptag embed`'s flags.
#[derive(Debug, Clone, Default, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SamplingSection {
    /// Frames to keep per second of video, by timestamps whatever the stream's own rate
    /// [default: 1]
    #[arg(long, conflicts_with = "every_nth_frame")]
    pub fps: Option<Setting<f64>>,
    /// Keep every Nth decoded frame instead (paper 000 uses 50)
    #[arg(long, alias = "every-nth")]
    pub every_nth_frame: Option<Setting<u32>>,
}

impl SamplingSection {
    /// One frame a second unless told otherwise.
    pub fn validate(&self) -> Result<Sampling, Invalid> {
        match (&self.fps, &self.every_nth_frame) {
            (Some(f), Some(n)) => {
                let (f, n) = (f.span(), n.span());
                Err(Invalid {
                    key: "sampling".into(),
                    span: f
                        .zip(n)
                        .map(|(f, n)| f.start.min(n.start)..f.end.max(n.end)),
                    reason: "set either `fps` or `every_nth_frame`, not both".into(),
                })
            }
            (Some(f), None) => {
                let v = *f.get();
                if !(v.is_finite() && v > 0.0 && v <= 1000.0) {
                    return Err(Invalid::at(
                        "sampling.fps",
                        f,
                        format!("expected a frame rate in (0, 1000], got {v}"),
                    ));
                }
                Ok(Sampling::Fps(v))
            }
            (None, Some(n)) => {
                if *n.get() == 0 {
                    return Err(Invalid::at(
                        "sampling.every_nth_frame",
                        n,
                        "expected a positive frame count",
                    ));
                }
                Ok(Sampling::EveryNth(*n.get()))
            }
            (None, None) => Ok(Sampling::Fps(1.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(sampling: Sampling, times: impl Iterator<Item = f64>) -> Vec<f64> {
        let mut s = Sampler::new(sampling);
        times.filter(|t| s.take(Some(*t))).collect()
    }

    #[test]
    fn fps_sampling_follows_timestamps_not_frame_rate() {
        // 5 fps MJPEG and 59.94 fps H.264 both give one frame a second over 10 s.
        let mjpeg = picks(Sampling::Fps(1.0), (0..50).map(|i| i as f64 * 0.2));
        assert_eq!(mjpeg.len(), 10);
        let ntsc = picks(
            Sampling::Fps(1.0),
            (0..600).map(|i| i as f64 * 1001.0 / 60000.0),
        );
        assert_eq!(ntsc.len(), 10);
        for (i, t) in ntsc.iter().enumerate() {
            assert!((t - i as f64).abs() < 1001.0 / 60000.0, "{t}");
        }
    }

    #[test]
    fn fps_sampling_starts_at_first_frame_and_skips_gaps() {
        let got = picks(
            Sampling::Fps(2.0),
            [0.08, 0.3, 0.6, 5.0, 5.2, 5.6].into_iter(),
        );
        assert_eq!(got, vec![0.08, 0.6, 5.0, 5.6]);
    }

    #[test]
    fn every_nth_counts_frames() {
        let got = picks(Sampling::EveryNth(50), (0..200).map(|i| i as f64));
        assert_eq!(got, vec![0.0, 50.0, 100.0, 150.0]);
    }
}
