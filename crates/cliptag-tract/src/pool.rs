//! The thread pool a tract plan runs on, and keeping its threads awake for one run.
//!
//! Rules, and why:
//! - tract-linalg shares a matrix product among the threads of the pool in the plan's
//!   `RunOptions`; our fused ops share their column blocks, row bands and heads among the
//!   threads of whichever rayon pool they run on, and run alone when they are not on a pool
//!   thread (elsewhere rayon would start a global pool). So a run goes onto one of the pool's
//!   own threads ([`run_on_pool`]): the thread doing the element-wise work between products is
//!   one of those that share them, with no third thread competing for the cores.
//! - The pool's other threads are kept spinning for the length of one run: a ViT-B/32 image
//!   is about 75 products of a fraction of a millisecond each, and an idle rayon thread
//!   sleeps within microseconds, so without this the second core hardly ever gets a share.
//! - These helpers live beside the ops, not in the edge crate, because they are the other
//!   half of the ops' contract: an op shares its work only on a pool thread, and this is
//!   what puts a run there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tract_linalg::multithread::Executor;
use tract_onnx::tract_core::runtime::RunOptions;

/// The thread pool tract's matrix products use; `threads == 0` means one per core.
pub fn run_options(threads: usize) -> RunOptions {
    let threads = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    let mut options = RunOptions::default();
    if threads > 1 {
        options.executor = Some(Executor::multithread_with_name(threads, "cliptag-clip"));
    }
    options
}

/// Runs `work` (a plan's run) on a thread of `options`' pool with the pool's other threads
/// kept awake (`with_hot_pool`); on the calling thread when `options` has no pool.
pub fn run_on_pool<R: Send>(options: &RunOptions, work: impl FnOnce() -> R + Send) -> R {
    match &options.executor {
        Some(Executor::MultiThread(pool)) => pool.install(|| with_hot_pool(work)),
        _ => work(),
    }
}

/// Runs `work` on the current pool thread while the pool's other threads stay awake.
///
/// Idle rayon threads go to sleep within microseconds, and waking one costs about as long as
/// its share of a product. Each other thread runs a keeper that takes pool work as soon as it
/// appears and spins (yielding to the OS) until `work` is done: the same trade onnxruntime's
/// spinning thread pool makes, held only for the length of one run.
fn with_hot_pool<R>(work: impl FnOnce() -> R) -> R {
    let running = Arc::new(AtomicBool::new(true));
    for _ in 1..rayon::current_num_threads() {
        let running = running.clone();
        rayon::spawn(move || {
            let mut idle = 0u32;
            while running.load(Ordering::Acquire) {
                match rayon::yield_now() {
                    Some(rayon::Yield::Executed) => idle = 0,
                    _ => {
                        idle += 1;
                        if idle.is_multiple_of(64) {
                            std::thread::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                }
            }
        });
    }
    // Stops the keepers however `work` ends, a panic included.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _stop = Stop(running);
    work()
}
