//! A pile of recordings: files, directories and glob patterns turned into the video files
//! they name, each its own source.
//!
//! Rules: a directory is walked (not following symbolic links, which may loop) for files
//! whose extension is a video container's; a pattern with `*`, `?` or `[` is a glob; the
//! result is sorted and free of duplicates, so runs are repeatable. Naming nothing is an
//! error that says which argument named nothing.

use std::path::{Path, PathBuf};

/// Extensions of the containers GStreamer's decodebin reads (compared lower-cased).
pub const VIDEO_EXTENSIONS: [&str; 16] = [
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "ts", "mts", "m2ts", "mpg", "mpeg", "flv", "wmv",
    "3gp", "ogv", "mjpeg",
];

fn is_video(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The video files `written` names (a file, a directory, or a glob), resolved against
/// `base` when relative.
pub fn expand(written: &str, base: &Path) -> Result<Vec<PathBuf>, String> {
    let full = base.join(written);
    let mut found = Vec::new();
    if is_pattern(written) {
        let pattern = full.to_string_lossy().into_owned();
        let paths = glob::glob(&pattern).map_err(|e| format!("{written:?}: {e}"))?;
        for p in paths.flatten() {
            if p.is_dir() {
                walk(&p, &mut found);
            } else if p.is_file() {
                found.push(p);
            }
        }
    } else if full.is_dir() {
        walk(&full, &mut found);
    } else if full.is_file() {
        // Named explicitly: whatever its extension, the user wants it tagged.
        found.push(full);
    } else {
        return Err(format!("{written:?}: no such file or directory"));
    }
    found.sort();
    found.dedup();
    if found.is_empty() {
        return Err(format!(
            "{written:?} names no video file (looked for {})",
            VIDEO_EXTENSIONS.join(", ")
        ));
    }
    Ok(found
        .into_iter()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect())
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            walk(&path, found);
        } else if kind.is_file() && is_video(&path) {
            found.push(path);
        }
    }
}

/// Every argument expanded, in order, without duplicates.
pub fn expand_all(written: &[String], base: &Path) -> Result<Vec<PathBuf>, String> {
    let mut all: Vec<PathBuf> = Vec::new();
    for w in written {
        for p in expand(w, base)? {
            if !all.contains(&p) {
                all.push(p);
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_walked_for_video_and_patterns_globbed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("day1/cam")).unwrap();
        for f in [
            "a.mp4",
            "day1/b.MKV",
            "day1/cam/c.webm",
            "day1/notes.txt",
            "d.mov",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(root).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            names(expand("day1", root).unwrap()),
            ["day1/b.MKV", "day1/cam/c.webm"]
        );
        assert_eq!(names(expand("*.mp4", root).unwrap()), ["a.mp4"]);
        assert_eq!(
            names(expand_all(&["*.m*".into(), "a.mp4".into()], root).unwrap()),
            ["a.mp4", "d.mov"]
        );
        // A file named explicitly is taken whatever its extension.
        assert_eq!(
            names(expand("day1/notes.txt", root).unwrap()),
            ["day1/notes.txt"]
        );
        let e = expand("nosuch", root).unwrap_err();
        assert!(e.contains("no such file"), "{e}");
        let e = expand("*.avi", root).unwrap_err();
        assert!(e.contains("names no video file"), "{e}");
    }
}
