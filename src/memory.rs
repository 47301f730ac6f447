//! The allocator's policy for a long-running process that loads models of hundreds of
//! megabytes and runs many GStreamer threads: the one place cliptag talks to glibc.

/// Sets glibc's allocator up for a long-running process with many threads; call it first
/// thing in `main`, before any thread starts. `MALLOC_ARENA_MAX` in the environment wins.
///
/// Two arenas: glibc would give each of GStreamer's streaming threads its own (up to 8 per
/// core), each keeping what it freed. Over 30 minutes with 5 sources RSS crept from 270 to
/// 360 MB; with two arenas it stayed at 260–285 MB (scripts/bench-daemon.sh).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Hands memory the allocator holds free back to the system. Loading a model and typing a
/// graph free hundreds of megabytes in blocks of a few megabytes, which glibc keeps in its
/// heap (its threshold for mapping blocks separately climbs to 32 MiB after the first large
/// free); without this a daemon with ViT-B/32 int8 loaded holds ~350 MB instead of ~200 MB.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
