//! Disk space: how much the database's file system has left, and the reserve file that
//! lets retention make room on a disk that is already full.
//!
//! Rules, and why:
//! - **Free space is what an unprivileged writer may use** (`f_bavail`), the figure that
//!   decides whether SQLite's next write fails.
//! - **Deleting needs room too.** In WAL mode a DELETE writes the pages it changes to the
//!   WAL before anything is freed, so on a file system with no byte left retention cannot
//!   even start. When `min_free_mb` is set, the writer therefore keeps a small reserve
//!   file beside the database (`<db>-reserve`, [`reserve_bytes`]); the first thing it
//!   does on a full disk is delete it, which gives retention the room to free more. It
//!   is written again (real blocks, not a sparse file) once there is room for it above
//!   `min_free_mb`.
//! - Without `min_free_mb` cliptag deletes nothing of its own: it pauses and waits for
//!   room (someone else's to give).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Size of the reserve file for a given `min_free`: a quarter of it, between 1 MiB and
/// 4 MiB. At least 1 MiB because a full disk can hold up to that much of new pages in the
/// WAL (the writer checkpoints at 1 MiB, `schema.rs`), which a checkpoint can move into
/// the main file only with room for them; up to 4 MiB, WAL enough for several retention
/// chunks of ViT-B/32 windows, small beside any SD card.
pub fn reserve_bytes(min_free: u64) -> u64 {
    (min_free / 4).clamp(1024 * 1024, 4 * 1024 * 1024)
}

/// Below this much free space a disk counts as full: an I/O error is taken for "full"
/// (see [`StoreError::is_out_of_space`](super::StoreError::is_out_of_space)), and
/// `cliptag status` warns.
pub const NEARLY_FULL_BYTES: u64 = 1024 * 1024;

/// Bytes an unprivileged writer can still use on the file system holding `db`, or
/// `None` when it cannot be asked (the directory is gone).
pub fn free_bytes(db: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(directory_of(db)).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The reserve file that belongs to the database at `db`.
pub fn reserve_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-reserve");
    PathBuf::from(name)
}

/// Deletes the reserve file, if there is one; true when space was handed back.
pub fn release_reserve(db: &Path) -> bool {
    let path = reserve_path(db);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(
                path = %path.display(),
                bytes,
                "disk full: deleted the reserve file so that retention has room to work"
            );
            true
        }
        Err(_) => false,
    }
}

/// Writes the reserve file when it is missing and there is room for it above `min_free`.
/// Failing is harmless (the file is only a cushion), so errors are logged, not returned.
pub fn keep_reserve(db: &Path, min_free: u64) {
    let path = reserve_path(db);
    if path.exists() {
        return;
    }
    let bytes = reserve_bytes(min_free);
    match free_bytes(db) {
        Some(free) if free >= min_free.saturating_add(bytes) => {}
        _ => return,
    }
    let written = std::fs::File::create(&path).and_then(|mut f| {
        // Zeros written out, not set_len: a sparse file would reserve nothing.
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..bytes / chunk.len() as u64 {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    });
    match written {
        Ok(()) => tracing::info!(path = %path.display(), bytes, "reserve file written"),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            tracing::debug!(path = %path.display(), error = %e, "reserve file not written");
        }
    }
}

/// How a byte count reads in a log line or a status: "812 KiB", "3.4 GiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn directory_of(db: &Path) -> &Path {
    match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(812 * 1024), "812 KiB");
        assert_eq!(human_bytes(3_650_722_201), "3.4 GiB");
    }

    #[test]
    fn a_bare_file_name_is_measured_in_the_working_directory() {
        assert!(free_bytes(Path::new("tags.db")).is_some());
        assert_eq!(
            reserve_path(Path::new("/a/tags.db")),
            Path::new("/a/tags.db-reserve")
        );
    }
}
