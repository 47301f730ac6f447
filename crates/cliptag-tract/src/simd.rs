//! Run-time choice of instruction set for the few hot loops we write ourselves.
//!
//! The shipped x86-64 binary targets the baseline (SSE2), where integer multiplies and
//! float/int conversions vectorise poorly. [`with_avx2!`] compiles a loop body a second time
//! with AVX2 enabled and calls that copy when the CPU has it, so a generic build runs the
//! wide code without `-C target-cpu=native`. Elsewhere (aarch64 has NEON as its baseline)
//! the body runs as written.

/// `with_avx2!(fn name(args) -> ret { body })` defines `name` which runs `body` compiled for
/// AVX2 where the CPU has it, else for the baseline.
macro_rules! with_avx2 {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                /// `body` compiled for AVX2 and FMA.
                ///
                /// # Safety
                /// The CPU supports AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU reports both features `wide` was compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
    // The same for an `unsafe fn`: the caller upholds its contract for either copy.
    ($(#[$meta:meta])* $vis:vis unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
            /// The function's body, compiled once per instruction set that calls it.
            ///
            /// # Safety
            /// The function's own contract.
            #[inline(always)]
            unsafe fn body($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                /// `body` compiled for AVX2 and FMA.
                ///
                /// # Safety
                /// The CPU supports AVX2 and FMA, and the function's own contract holds.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: the caller upholds the function's own contract.
                    unsafe { body($($arg),*) }
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU reports both features `wide` was compiled for; the
                    // caller upholds the function's own contract.
                    return unsafe { wide($($arg),*) };
                }
            }
            // SAFETY: the caller upholds the function's own contract.
            unsafe { body($($arg),*) }
        }
    };
}

pub(crate) use with_avx2;
