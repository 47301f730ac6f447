//! Where the encoders run: the CPU (tract's kernels plus our int8 passes), or an NVIDIA GPU
//! through tract-cuda when cliptag is built with the `cuda` feature.
//!
//! Rules:
//! - The default build contains no CUDA code: the probe there answers "built without the
//!   `cuda` feature" without touching any library.
//! - The probe (dlopen of libcuda, cudart, NVRTC, cuBLAS and cuDNN, then `cuInit`) runs once
//!   per process. `auto` falls back to the CPU and says why in one line, logged once (a
//!   warning in a `cuda` build, information in a CPU build);
//!   `cuda` turns the same reason into a stop error.
//! - A panic inside tract-cuda (it `expect`s its context and streams) becomes an error here,
//!   never an unwound inference thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::format_err;
use tract_onnx::tract_core::runtime::{RunOptions, Runnable};

use super::error::ClipError;
use super::options::{DeviceChoice, ModelVariant};

/// Where a loaded model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

impl Device {
    /// The files `variant` means on this device: `auto` prefers int8 on the CPU, where our
    /// int8 kernels are the fast path, but fp32 on the GPU, where tract-cuda has no integer
    /// matrix products and would run them on the CPU between transfers.
    pub fn variant(self, variant: ModelVariant) -> ModelVariant {
        match (self, variant) {
            (Device::Cuda, ModelVariant::Auto) => ModelVariant::Fp32,
            (_, variant) => variant,
        }
    }
}

/// Whether CUDA can run here: Err holds the reason it cannot.
pub fn cuda_usable() -> Result<(), String> {
    cuda_probe().clone()
}

/// The device to load on for `choice`, probing CUDA once per process.
pub fn resolve(choice: DeviceChoice) -> Result<Device, ClipError> {
    static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);
    if choice == DeviceChoice::Cpu {
        return Ok(Device::Cpu);
    }
    let (device, fallback) = decide(choice, cuda_probe())?;
    if let Some(reason) = fallback {
        if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
            // A GPU build that finds no GPU deserves a warning; a CPU build running on the
            // CPU is doing what it was built for, and says so only when asked (debug).
            if cfg!(feature = "cuda") {
                tracing::warn!(%reason, "device \"auto\": CUDA is not usable, running CLIP on the CPU");
            } else {
                tracing::debug!(%reason, "device \"auto\": running CLIP on the CPU");
            }
        }
    }
    Ok(device)
}

/// The decision itself, apart from the probe: (device, why `auto` fell back).
fn decide(
    choice: DeviceChoice,
    probe: &Result<(), String>,
) -> Result<(Device, Option<String>), ClipError> {
    match (choice, probe) {
        (DeviceChoice::Cpu, _) => Ok((Device::Cpu, None)),
        (_, Ok(())) => Ok((Device::Cuda, None)),
        (DeviceChoice::Auto, Err(reason)) => Ok((Device::Cpu, Some(reason.clone()))),
        (DeviceChoice::Cuda, Err(reason)) => Err(ClipError::DeviceUnavailable {
            device: "cuda".into(),
            reason: reason.clone(),
        }),
    }
}

#[cfg(feature = "cuda")]
fn cuda_probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let probe = || {
            tract_cuda::utils::ensure_cuda_runtime_dependencies("CUDA runtime unusable")
                .map_err(|e| format!("{e:#}").replace('\n', "; "))
        };
        std::panic::catch_unwind(probe).unwrap_or_else(|panic| Err(panic_message(&panic)))
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        Err(
            "this cliptag was built without the `cuda` feature (cargo build --features cuda)"
                .into(),
        )
    })
}

/// Compiles a typed graph for the GPU: tract-cuda moves the operators it has kernels for
/// to the device and leaves the rest on the CPU, with the copies between them.
#[cfg(feature = "cuda")]
pub(super) fn prepare_cuda(
    model: TypedModel,
    options: &RunOptions,
) -> TractResult<Arc<dyn Runnable>> {
    let runtime = tract_onnx::tract_core::runtime::runtime_for_name("cuda")?
        .ok_or_else(|| format_err!("tract-cuda's runtime is not registered in this build"))?;
    let prepare = std::panic::AssertUnwindSafe(|| runtime.prepare_with_options(model, options));
    let runnable = std::panic::catch_unwind(prepare)
        .unwrap_or_else(|panic| Err(format_err!("{}", panic_message(&panic))))?;
    Ok(Arc::from(runnable))
}

#[cfg(not(feature = "cuda"))]
pub(super) fn prepare_cuda(
    _model: TypedModel,
    _options: &RunOptions,
) -> TractResult<Arc<dyn Runnable>> {
    Err(format_err!(
        "this cliptag was built without the `cuda` feature"
    ))
}

/// Runs a plan, turning a panic in a device runtime into an error.
pub(super) fn run_guarded(plan: &dyn Runnable, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plan.run(inputs)))
        .unwrap_or_else(|panic| Err(format_err!("{}", panic_message(&panic))))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    format!("tract-cuda panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_with_the_reason_and_cuda_refuses() {
        let missing = Err("libcuda.so.1 not found".to_string());
        let (device, why) = decide(DeviceChoice::Auto, &missing).unwrap();
        assert_eq!(device, Device::Cpu);
        assert_eq!(why.as_deref(), Some("libcuda.so.1 not found"));
        let e = decide(DeviceChoice::Cuda, &missing).unwrap_err();
        assert!(
            e.to_string().contains("cuda") && e.to_string().contains("libcuda.so.1"),
            "{e}"
        );
        assert_eq!(e.disposition(), crate::Disposition::Stop);
        assert_eq!(
            decide(DeviceChoice::Cpu, &missing).unwrap(),
            (Device::Cpu, None)
        );
    }

    #[test]
    fn a_usable_gpu_is_taken_unless_cpu_is_asked_for() {
        let usable = Ok(());
        assert_eq!(
            decide(DeviceChoice::Auto, &usable).unwrap(),
            (Device::Cuda, None)
        );
        assert_eq!(
            decide(DeviceChoice::Cuda, &usable).unwrap(),
            (Device::Cuda, None)
        );
        assert_eq!(
            decide(DeviceChoice::Cpu, &usable).unwrap(),
            (Device::Cpu, None)
        );
    }

    #[test]
    fn auto_variant_means_fp32_on_the_gpu_only() {
        assert_eq!(Device::Cuda.variant(ModelVariant::Auto), ModelVariant::Fp32);
        assert_eq!(Device::Cpu.variant(ModelVariant::Auto), ModelVariant::Auto);
        assert_eq!(
            Device::Cuda.variant(ModelVariant::Quantized),
            ModelVariant::Quantized
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn the_cpu_build_says_it_has_no_cuda() {
        let reason = cuda_usable().unwrap_err();
        assert!(reason.contains("without the `cuda` feature"), "{reason}");
    }
}
