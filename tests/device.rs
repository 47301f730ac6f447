//! Where CLIP runs. On a machine without a usable NVIDIA GPU (every CI machine so far):
//! `auto` falls back to the CPU with the same embeddings and `cuda` refuses with the reason,
//! in the library and in the real binary. With a GPU and `--features cuda`: the GPU's
//! embeddings agree with the CPU's. The test suite runs this file with `--features cuda`, so
//! the fallback exercised is tract-cuda's real probe.

mod common;

use cliptag::clip::{device, ClipModel, Device, LoadOptions};
use cliptag::config::{DeviceChoice, ModelVariant};
use cliptag::ingest::RgbImage;
use common::*;

/// GPU and CPU embeddings of the same input agree to this cosine: kernels differ in their
/// summation order, and cuBLAS may use reduced-precision tensor-core modes.
const GPU_COSINE: f64 = 0.999;

fn load(device: DeviceChoice) -> Result<ClipModel, cliptag::clip::ClipError> {
    ClipModel::load_with(
        &tiny_model(),
        &LoadOptions {
            device,
            ..LoadOptions::cpu(ModelVariant::Fp32, 1)
        },
    )
}

fn frames() -> Vec<RgbImage> {
    (0..3u8)
        .map(|k| {
            let (w, h) = (64, 48);
            let data = (0..w * h * 3)
                .map(|i| ((i * (7 + k as usize)) % 251) as u8)
                .collect();
            RgbImage {
                width: w as u32,
                height: h as u32,
                data,
            }
        })
        .collect()
}

/// Cosine between two models' embeddings of each test frame.
fn frame_agreement(a: &ClipModel, b: &ClipModel) -> Vec<f64> {
    let images = frames();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let (from_a, from_b) = (
        a.embed_frames(&refs).unwrap(),
        b.embed_frames(&refs).unwrap(),
    );
    from_a
        .iter()
        .zip(&from_b)
        .map(|(x, y)| cosine(x, y))
        .collect()
}

/// `cliptag model check` of the tiny model on `device`: (exit code, stdout, stderr).
fn check_on(device: &str) -> (Option<i32>, String, String) {
    let o = cliptag()
        .args([
            "model",
            "check",
            tiny_model().to_str().unwrap(),
            "--device",
            device,
        ])
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn captions() -> Vec<String> {
    ["a photo of a dog", "a red car on a bridge", "an empty room"]
        .map(String::from)
        .to_vec()
}

#[test]
fn without_a_gpu_auto_runs_on_the_cpu_and_cuda_refuses() {
    let Err(reason) = device::cuda_usable() else {
        eprintln!("skipped: a usable CUDA GPU is present, so there is no fallback to test");
        return;
    };
    let auto = load(DeviceChoice::Auto).expect("auto falls back to the CPU");
    assert_eq!(auto.device, Device::Cpu);
    let cpu = load(DeviceChoice::Cpu).unwrap();
    for c in frame_agreement(&auto, &cpu) {
        assert!(c >= 0.999_999, "cosine {c}");
    }

    let e = load(DeviceChoice::Cuda).unwrap_err();
    let message = e.to_string();
    assert!(message.contains("\"cuda\""), "{message}");
    assert!(
        message.contains(&reason),
        "{message} should give the reason: {reason}"
    );
    assert_eq!(e.disposition(), cliptag::Disposition::Stop);
}

#[test]
fn the_binary_says_where_it_runs_and_why_not_on_the_gpu() {
    if device::cuda_usable().is_ok() {
        eprintln!("skipped: a usable CUDA GPU is present, so there is no fallback to test");
        return;
    }
    let (code, stdout, stderr) = check_on("auto");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("device: cpu"), "{stdout}");
    let fallbacks = stderr
        .lines()
        .filter(|l| l.contains("CUDA is not usable"))
        .count();
    assert_eq!(fallbacks, 1, "one fallback line expected:\n{stderr}");

    let (code, _, stderr) = check_on("cuda");
    // 78 (EX_CONFIG): systemd does not restart into the same refusal.
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("device \"cuda\" is not usable"), "{stderr}");
}

#[test]
fn gpu_embeddings_agree_with_the_cpu() {
    if let Err(reason) = device::cuda_usable() {
        eprintln!("skipped: no usable CUDA GPU here: {reason}");
        return;
    }
    let gpu = load(DeviceChoice::Cuda).expect("the model loads on the GPU");
    assert_eq!(gpu.device, Device::Cuda);
    let cpu = load(DeviceChoice::Cpu).unwrap();
    for (ix, c) in frame_agreement(&gpu, &cpu).into_iter().enumerate() {
        assert!(c >= GPU_COSINE, "frame {ix}: cosine {c}");
    }
    let (on_gpu, on_cpu) = (
        gpu.embed_texts(&captions()).unwrap(),
        cpu.embed_texts(&captions()).unwrap(),
    );
    for ((text, (_, a)), (_, b)) in captions().iter().zip(&on_gpu).zip(&on_cpu) {
        let c = cosine(a, b);
        assert!(c >= GPU_COSINE, "{text:?}: cosine {c}");
    }
}
