//! The real GStreamer source on real encoded clips: every codec and container, sampling by
//! timestamps, square pixels, stride handling, and clean errors for broken files.

use crate::common::*;
use cliptag::ingest::{
    Frame, FrameSource, GstSource, IngestError, Location, OpenOptions, Sampling,
};

fn decode(
    path: &std::path::Path,
    sampling: Sampling,
) -> Result<(Vec<Frame>, Vec<String>), IngestError> {
    let mut src = GstSource::open("test", path.to_str().unwrap(), sampling)?;
    let mut frames = Vec::new();
    while let Some(f) = src.next_frame()? {
        frames.push(f);
    }
    Ok((frames, src.warnings()))
}

fn manifest(dir: &std::path::Path, name: &str) -> Vec<serde_json::Value> {
    json(&dir.join(name))["clips"].as_array().unwrap().clone()
}

#[test]
fn every_codec_and_container_decodes_at_the_asked_rate() {
    let dir = clips();
    let mut checked = 0;
    for clip in manifest(&dir, "clips.json") {
        if clip["expect"] != "ok" || clip["container"] == "png" {
            continue;
        }
        let file = clip["file"].as_str().unwrap();
        let (frames, warnings) =
            decode(&dir.join(file), Sampling::Fps(1.0)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let duration = clip["duration_s"].as_f64().unwrap();
        // One frame per started second of media.
        let expected = duration.ceil() as usize;
        assert!(
            frames.len().abs_diff(expected) <= 1,
            "{file}: {} frames at 1 fps over {duration} s",
            frames.len()
        );
        let (w, h) = (
            clip["display_width"].as_u64().unwrap() as u32,
            clip["display_height"].as_u64().unwrap() as u32,
        );
        for f in &frames {
            assert_eq!(
                (f.image.width, f.image.height),
                (w, h),
                "{file}: frames are shown with square pixels"
            );
            assert_eq!(f.image.data.len(), (w * h * 3) as usize);
        }
        assert!(
            frames[0].pts < 0.2,
            "{file}: stream time starts near 0, got {}",
            frames[0].pts
        );
        for pair in frames.windows(2) {
            let gap = pair[1].pts - pair[0].pts;
            assert!(
                (0.8..1.3).contains(&gap),
                "{file}: sampled frames {gap} s apart"
            );
        }
        assert!(
            warnings.is_empty(),
            "{file}: unexpected warnings {warnings:?}"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "expected the whole codec/container matrix, checked {checked}"
    );
}

#[test]
fn five_fps_mjpeg_and_ntsc_h264_give_the_same_sampled_rate() {
    let dir = clips();
    let (mjpeg, _) = decode(&dir.join("mjpeg_5fps.avi"), Sampling::Fps(2.0)).unwrap();
    let (ntsc, _) = decode(&dir.join("h264_5994.mp4"), Sampling::Fps(2.0)).unwrap();
    assert_eq!(mjpeg.len(), 20);
    assert_eq!(ntsc.len(), 20);
}

#[test]
fn every_nth_frame_counts_decoded_frames() {
    let (frames, _) = decode(&clips().join("h264_5994.mp4"), Sampling::EveryNth(50)).unwrap();
    assert_eq!(frames.len(), 12); // 600 frames
    assert!((frames[1].pts - 50.0 * 1001.0 / 60000.0).abs() < 1e-3);
}

#[test]
fn scene_change_is_visible_in_the_frames() {
    let (frames, _) = decode(&clips().join("three_scenes_10s.mp4"), Sampling::Fps(1.0)).unwrap();
    assert_eq!(frames.len(), 10);
    // Scene one is solid red.
    let px = &frames[1].image.data[..3];
    assert!(px[0] > 200 && px[1] < 60 && px[2] < 60, "{px:?}");
    assert_ne!(frames[1].image.data, frames[4].image.data);
    assert_eq!(frames[4].image.data, frames[5].image.data);
}

#[test]
fn an_image_is_a_one_frame_source() {
    let (frames, _) = decode(&clips().join("still.png"), Sampling::Fps(1.0)).unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].image.width, frames[0].image.height), (320, 240));
}

#[test]
fn real_frames_match_the_reference_decode_bit_for_bit() {
    // carphone is 176x144 at pixel aspect 128/117: shown 193 wide, so rows are 579 bytes
    // in a 580-byte stride. Equality with the reference frames proves stride and aspect
    // handling on a clip nobody here made.
    let real = real_clips();
    let reference = json(&reference_dir().join("frames.json"));
    let frames = reference["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 5, "reference frames");
    for f in frames {
        let clip = real.join(f["clip"].as_str().unwrap());
        let index = f["frame_index"].as_u64().unwrap() as usize;
        let (frames, _) = decode(&clip, Sampling::EveryNth(1)).unwrap();
        let got = &frames[index];
        // We report stream time; the reference recorded raw buffer PTS, which for these
        // files starts 0.07-0.08 s late because of mp4 edit lists.
        let raw = f["pts_seconds"].as_f64().unwrap();
        assert!(
            got.pts <= raw + 0.002 && got.pts >= raw - 0.1,
            "{}: pts {} vs raw {raw}",
            f["name"],
            got.pts
        );
        assert_eq!(
            (got.image.width as u64, got.image.height as u64),
            (f["width"].as_u64().unwrap(), f["height"].as_u64().unwrap())
        );
        let want = std::fs::read(reference_dir().join(f["rgb"].as_str().unwrap())).unwrap();
        assert!(
            got.image.data == want,
            "{}: decoded pixels differ from the reference frame",
            f["name"]
        );
    }
}

#[test]
fn broken_files_fail_with_the_source_and_the_reason() {
    let dir = clips();
    let cases = [
        ("empty.mp4", "no data"),
        ("text.mp4", "text file"),
        ("random.mp4", "determine type"),
        // qtdemux's own message, or ours when decodebin2 swallows it (see DEFAULT_STALL_TIMEOUT).
        ("truncated.mp4", "no playable"),
        ("audio_only.wav", "no video stream"),
        ("audio_only.ogg", "no video stream"),
        ("does-not-exist.mp4", "not readable"),
    ];
    for (file, reason) in cases {
        let err = decode(&dir.join(file), Sampling::Fps(1.0)).expect_err(file);
        let msg = err.to_string();
        assert!(
            msg.contains("\"test\""),
            "{file}: error must name the source: {msg}"
        );
        assert!(
            msg.to_lowercase().contains(reason),
            "{file}: expected {reason:?} in {msg}"
        );
        assert_eq!(err.disposition(), cliptag::Disposition::Skip, "{file}");
    }
}

#[test]
fn a_truncated_file_decodes_what_it_has_and_warns() {
    let (frames, warnings) = decode(&clips().join("cut_half.webm"), Sampling::Fps(1.0)).unwrap();
    assert!((3..=6).contains(&frames.len()), "{} frames", frames.len());
    assert!(
        warnings.iter().any(|w| w.contains("truncated")),
        "{warnings:?}"
    );
}

#[test]
fn a_caller_busy_longer_than_the_stall_timeout_is_not_a_stall() {
    // `cliptag embed` runs a batch of inference between reads; on a slow board (or under
    // qemu) that takes longer than the stall timeout while the pipeline waits on us.
    let path = clips().join("three_scenes_10s.mp4");
    let options = OpenOptions {
        stall_timeout: std::time::Duration::from_secs(1),
        ..OpenOptions::file(Sampling::Fps(1.0))
    };
    let mut src =
        GstSource::open_with("busy", &Location::new(path.to_str().unwrap()), options).unwrap();
    let mut frames = 0;
    while let Some(_frame) = src.next_frame().unwrap() {
        frames += 1;
        if frames == 2 {
            std::thread::sleep(std::time::Duration::from_millis(1500));
        }
    }
    assert_eq!(frames, 10);
}

#[test]
fn a_stream_sampled_less_often_than_the_stall_timeout_is_not_stalled() {
    // Played at its own rate, sampled every 4 s, with a 1 s stall timeout: the gaps between
    // samples are decoded frames nobody looks at, not a stall.
    let path = clips().join("three_scenes_10s.mp4");
    let options = OpenOptions {
        realtime: true,
        live: true,
        stall_timeout: std::time::Duration::from_secs(1),
        ..OpenOptions::file(Sampling::Fps(0.25))
    };
    let mut src =
        GstSource::open_with("slow", &Location::new(path.to_str().unwrap()), options).unwrap();
    let mut times = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        times.push(f.pts);
    }
    assert_eq!(times, [0.0, 4.0, 8.0]);
    assert_eq!(src.dropped(), 0);
}

/// A bounded corpus of damaged videos (issue 20): truncated at random places, with random
/// bytes flipped, with an MP4's index or media atom zeroed. Each must end in frames or a
/// named error within the stall timeout; none may hang or panic. A fixed seed makes the
/// corpus the same on every run.
#[test]
fn damaged_videos_end_in_frames_or_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    // SplitMix64: the same corpus everywhere, without a dependency.
    let mut state = 0x5eed_c11b_7a90_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut corpus = Vec::new();
    for clip in ["three_scenes_10s.mp4", "h264.mkv", "vp8.webm"] {
        let data = std::fs::read(clips().join(clip)).unwrap();
        for i in 0..4 {
            let cut = (next() as usize) % data.len();
            corpus.push((format!("{i}-cut-{clip}"), data[..cut].to_vec()));
            let mut flipped = data.clone();
            for _ in 0..16 {
                let at = (next() as usize) % flipped.len();
                flipped[at] ^= 1 << (next() % 8);
            }
            corpus.push((format!("{i}-flipped-{clip}"), flipped));
        }
        for atom in [b"moov", b"mdat"] {
            if let Some(at) = data.windows(4).position(|w| w == atom) {
                let mut zeroed = data.clone();
                let end = (at + 4 + 256).min(zeroed.len());
                zeroed[at..end].fill(0);
                corpus.push((
                    format!("zeroed-{}-{clip}", String::from_utf8_lossy(atom)),
                    zeroed,
                ));
            }
        }
    }
    // 3 clips × 4 × (cut, flipped), and the MP4's two atoms.
    assert_eq!(corpus.len(), 26);
    let stall = std::time::Duration::from_secs(3);
    let (mut with_frames, mut refused) = (0, 0);
    for (name, bytes) in &corpus {
        let ext = name.rsplit('.').next().unwrap();
        let path = dir.path().join(format!("{name}.{ext}"));
        std::fs::write(&path, bytes).unwrap();
        let (done, result) = std::sync::mpsc::channel();
        let file = path.clone();
        std::thread::spawn(move || {
            let decoded = (|| {
                let options = OpenOptions {
                    stall_timeout: stall,
                    ..OpenOptions::file(Sampling::Fps(2.0))
                };
                let location = Location::new(file.to_str().unwrap());
                let mut src = GstSource::open_with("damaged", &location, options)?;
                let mut frames = 0;
                while src.next_frame()?.is_some() {
                    frames += 1;
                }
                Ok::<usize, IngestError>(frames)
            })();
            let _ = done.send(decoded);
        });
        match result.recv_timeout(stall * 4) {
            Ok(Ok(_frames)) => with_frames += 1,
            Ok(Err(e)) => {
                let shown = e.to_string();
                assert!(shown.contains(&format!("{name}.{ext}")), "{shown}");
                refused += 1;
            }
            Err(_) => panic!("{name}: no frames, error or end within {:?}", stall * 4),
        }
    }
    assert_eq!(with_frames + refused, corpus.len());
    eprintln!("{with_frames} damaged files gave frames, {refused} a named error");
}
