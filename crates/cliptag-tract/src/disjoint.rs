//! An output buffer that several pool tasks write at once, each into its own part (rows,
//! column blocks, row bands or heads).
//!
//! Rules, and why:
//! - The fused ops split one output tensor among the tasks of a rayon pool, in parts that
//!   are disjoint but strided (a column block is a piece of every row), which Rust's borrows
//!   cannot express. So the tasks share a pointer, and this type is the one place that
//!   shares it: its fields are private, it is built from a borrowed slice (or, where a kernel
//!   also stores into the buffer, from a raw pointer under an `unsafe` contract), and it hands
//!   out memory only through `unsafe` methods whose contract is the disjoint-writes rule: no
//!   element is touched by two tasks.
//! - Bounds are checked on every slice it hands out; only disjointness is the caller's
//!   promise.

use std::marker::PhantomData;

/// `len` f32 values that pool tasks write disjoint parts of, for the lifetime `'a` of the
/// buffer they live in. Copies share the buffer.
#[derive(Clone, Copy)]
pub(crate) struct DisjointOut<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: a copy on another thread reaches the buffer only through `slice_mut` or
// `as_mut_ptr`, whose contracts forbid two tasks touching the same element, and the buffer
// outlives `'a` (a borrow, or `from_raw_parts`'s contract). So sending one to another thread
// cannot race.
unsafe impl Send for DisjointOut<'_> {}
// SAFETY: `&DisjointOut` gives nothing a copy does not (it is `Copy`), so sharing one is as
// safe as sending a copy, by the reasoning above.
unsafe impl Sync for DisjointOut<'_> {}

impl<'a> DisjointOut<'a> {
    /// Shares `buffer` out among tasks for as long as it is borrowed.
    pub(crate) fn new(buffer: &'a mut [f32]) -> Self {
        DisjointOut {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// Shares out `len` values at `ptr` for the lifetime `'a` the caller chooses.
    ///
    /// # Safety
    /// - `ptr` is valid for reads and writes of `len` f32 values for all of `'a`, and the
    ///   buffer is not moved or freed before `'a` ends.
    /// - During `'a` the buffer is read or written only through this value and its copies,
    ///   except that the task that owns an element may also store it through another pointer
    ///   (a matmul kernel's output store) before or after, never while, it touches it here.
    pub(crate) unsafe fn from_raw_parts(ptr: *mut f32, len: usize) -> Self {
        DisjointOut {
            ptr,
            len,
            _buffer: PhantomData,
        }
    }

    /// The values from `start` on, as a buffer of their own (a task's band of rows).
    pub(crate) fn tail(self, start: usize) -> Self {
        assert!(start <= self.len, "DisjointOut: {start} past {}", self.len);
        DisjointOut {
            // SAFETY: `start <= len`, so the pointer stays within the buffer or one past it.
            ptr: unsafe { self.ptr.add(start) },
            len: self.len - start,
            _buffer: PhantomData,
        }
    }

    /// `len` values from `start`, to read and write.
    ///
    /// # Safety
    /// The disjoint-writes rule: while the returned slice is in use no other task, and no
    /// other slice or pointer from this buffer, reads or writes any of these values.
    pub(crate) unsafe fn slice_mut(self, start: usize, len: usize) -> &'a mut [f32] {
        assert!(
            start <= self.len && len <= self.len - start,
            "DisjointOut: {len} values at {start} in {}",
            self.len
        );
        // SAFETY: the range lies within the buffer (checked above), which is valid for `'a`
        // (the constructor's borrow or contract); the caller promises no one else touches it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// The first value's address, for a kernel that writes through strides
    /// (matrixmultiply). Whoever writes through it stays within the buffer and keeps the
    /// disjoint-writes rule of [`DisjointOut::slice_mut`].
    pub(crate) fn as_mut_ptr(self) -> *mut f32 {
        self.ptr
    }
}
