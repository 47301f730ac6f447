//! Where CLIP runs. Without a usable NVIDIA GPU (the binary is run with the GPUs hidden by
//! `CUDA_VISIBLE_DEVICES=`, so this holds on any machine): `auto` falls back to the CPU with
//! the same embeddings and `cuda` refuses with the reason. With a GPU and `--features cuda`
//! (`cargo test --features cuda -- --ignored gpu_`): the GPU's embeddings agree with the
//! CPU's. The test suite is built with `--features cuda`, so the fallback exercised is
//! tract-cuda's real probe.

use crate::common::*;
use cliptag::clip::{
    device, ClipModel, Device, DeviceChoice, ModelSettings, ModelVariant, TextTower,
};
use cliptag::ingest::RgbImage;

/// GPU and CPU embeddings of the same input agree to this cosine: kernels differ in their
/// summation order, and cuBLAS may use reduced-precision tensor-core modes.
const GPU_COSINE: f64 = 0.999;

fn load(device: DeviceChoice) -> Result<ClipModel, cliptag::clip::ClipError> {
    ClipModel::load_with(
        &ModelSettings {
            device,
            ..ModelSettings::cpu(&tiny_model(), ModelVariant::Fp32, 1)
        },
        TextTower::Now,
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

/// `cliptag ARGS --model TINY --device DEVICE` with every GPU hidden: (exit code, stdout,
/// stderr).
fn without_gpus(args: &[&str], device: &str) -> (Option<i32>, String, String) {
    let o = cliptag()
        .args(args)
        .args([
            "--model",
            tiny_model().to_str().unwrap(),
            "--device",
            device,
        ])
        .env("CUDA_VISIBLE_DEVICES", "")
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
    let clip = repo().join("examples/demo.mp4");
    let embed = [
        "embed",
        "--variant",
        "fp32",
        "--fps",
        "0.5",
        clip.to_str().unwrap(),
    ];
    let (code, auto, stderr) = without_gpus(&embed, "auto");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, cpu, stderr) = without_gpus(&embed, "cpu");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(auto.lines().count() >= 5, "{auto}");
    assert_eq!(auto, cpu, "auto fell back to the CPU: the same embeddings");

    let (code, _, stderr) = without_gpus(&embed, "cuda");
    // 78 (EX_CONFIG): systemd does not restart into the same refusal.
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("device \"cuda\" is not usable"), "{stderr}");
}

#[test]
fn the_binary_says_where_it_runs_and_why_not_on_the_gpu() {
    let (code, stdout, stderr) = without_gpus(&["model", "check"], "auto");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("device: cpu"), "{stdout}");
    let fallbacks = stderr
        .lines()
        .filter(|l| l.contains("CUDA is not usable"))
        .count();
    // A CUDA build that finds no GPU warns once; a CPU build on the CPU is doing what it was
    // built for and stays quiet at the default level.
    let expected = usize::from(cfg!(feature = "cuda"));
    assert_eq!(fallbacks, expected, "fallback lines:\n{stderr}");

    let (code, _, stderr) = without_gpus(&["model", "check"], "cuda");
    // 78 (EX_CONFIG): systemd does not restart into the same refusal.
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("device \"cuda\" is not usable"), "{stderr}");
}

/// The library's own refusal on a machine without a usable GPU: `auto` gives the CPU's
/// embeddings, `cuda` an error naming the device and the probe's reason that says stop (a
/// restart cannot bring a GPU). On a GPU machine, hide the GPUs: `CUDA_VISIBLE_DEVICES=`.
#[test]
fn the_library_falls_back_or_refuses_with_the_reason() {
    let reason = device::cuda_usable()
        .expect_err("a usable GPU is visible: run this test with CUDA_VISIBLE_DEVICES= to hide it");
    let auto = load(DeviceChoice::Auto).expect("auto falls back to the CPU");
    assert_eq!(auto.device, Device::Cpu);
    let cpu = load(DeviceChoice::Cpu).unwrap();
    let agreement = frame_agreement(&auto, &cpu);
    assert_eq!(agreement.len(), 3);
    for c in agreement {
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
#[ignore = "needs an NVIDIA GPU and --features cuda (cargo test --features cuda -- --ignored gpu_)"]
fn gpu_embeddings_agree_with_the_cpu() {
    let gpu = load(DeviceChoice::Cuda).expect("the model loads on the GPU");
    assert_eq!(gpu.device, Device::Cuda);
    let cpu = load(DeviceChoice::Cpu).unwrap();
    let agreement = frame_agreement(&gpu, &cpu);
    assert_eq!(agreement.len(), 3);
    for (ix, c) in agreement.into_iter().enumerate() {
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
