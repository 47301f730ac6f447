//! Store errors, and what the caller should do about each (retry, skip, stop).

use std::path::{Path, PathBuf};

use crate::Disposition;

#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("database {}: cannot create directory {}: {source}", path.display(), dir.display())]
    CreateDir {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("database {}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {} has schema version {found}, but this cliptag knows only up to \
         version {known}; use a newer cliptag (the file was not modified)",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("database {}: migration {version} failed: {source}", path.display())]
    Migration {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {}: {context}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {}: model {model_id:?} is not registered", path.display())]
    UnknownModel { path: PathBuf, model_id: String },
    #[error(
        "database {}: segment {source_name}@{start_ms}ms: model {model_id} has no label {label:?}",
        path.display()
    )]
    UnknownLabel {
        path: PathBuf,
        model_id: String,
        label: String,
        source_name: String,
        start_ms: i64,
    },
    #[error("database {}: bad data: {detail}", path.display())]
    BadData { path: PathBuf, detail: String },
    /// From [`blob_to_f32s`], which does not know which database the bytes came from;
    /// the store's own readers report [`StoreError::BadData`] instead.
    #[error("embedding blob of {len} bytes is not a whole number of f32s")]
    BadBlob { len: usize },
    #[error("database {}: cannot start the writer thread: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {}: the writer thread is gone", path.display())]
    WriterGone { path: PathBuf },
}

impl StoreError {
    pub fn disposition(&self) -> Disposition {
        match self {
            StoreError::CreateDir { .. }
            | StoreError::NotFound { .. }
            | StoreError::TooNew { .. }
            | StoreError::Spawn { .. }
            | StoreError::WriterGone { .. } => Disposition::Stop,
            StoreError::UnknownModel { .. }
            | StoreError::UnknownLabel { .. }
            | StoreError::BadData { .. }
            | StoreError::BadBlob { .. } => Disposition::Skip,
            // Whatever opening or migrating hit, the store is unusable unless it was
            // only another process holding the lock, or a full disk (a box that starts
            // with a full SD card comes back by itself once there is room).
            StoreError::Open { source, .. } | StoreError::Migration { source, .. } => {
                match sqlite_disposition(source) {
                    Disposition::Retry => Disposition::Retry,
                    _ => Disposition::Stop,
                }
            }
            StoreError::Sqlite { source, .. } => sqlite_disposition(source),
        }
    }

    pub(crate) fn sqlite(path: &Path, context: impl Into<String>, source: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            path: path.to_path_buf(),
            context: context.into(),
            source,
        }
    }

    pub(crate) fn bad_data(path: &Path, detail: impl Into<String>) -> Self {
        StoreError::BadData {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// The disk holding the database has no room left: SQLite says "full", or an I/O
    /// error came while (almost) nothing is free — growing the `-shm` file on a full
    /// disk fails as an I/O error, not as "full". The writer pauses on this rather than
    /// stopping, since room comes back (retention, or the user) without a restart.
    pub fn is_out_of_space(&self) -> bool {
        use rusqlite::ErrorCode as C;
        let (path, source) = match self {
            StoreError::Open { path, source }
            | StoreError::Migration { path, source, .. }
            | StoreError::Sqlite { path, source, .. } => (path, source),
            _ => return false,
        };
        match source.sqlite_error_code() {
            Some(C::DiskFull) => true,
            Some(C::SystemIoFailure) => super::space::free_bytes(path)
                .is_some_and(|free| free < super::space::NEARLY_FULL_BYTES),
            _ => false,
        }
    }

    /// Another connection holds the lock: worth retrying at once, unlike a full disk.
    pub(crate) fn is_busy(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(C::DatabaseBusy | C::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

fn sqlite_disposition(e: &rusqlite::Error) -> Disposition {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DatabaseBusy | C::DatabaseLocked => Disposition::Retry,
            // A full disk (an SD card filling up) or an I/O error (removable media that
            // came loose) is what a later start can get past: systemd restarts on 75.
            C::DiskFull | C::SystemIoFailure => Disposition::Retry,
            C::ConstraintViolation | C::TypeMismatch | C::TooBig => Disposition::Skip,
            // Corrupt, unreadable, read-only, or our own SQL is wrong: retrying the same
            // thing cannot help.
            _ => Disposition::Stop,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::ToSqlConversionFailure(..) => Disposition::Skip,
        _ => Disposition::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real SQLite "database or disk is full" (a file capped with `max_page_count`)
    /// is temporary: exit 75, so systemd restarts the box once there is room.
    #[test]
    fn a_full_database_is_temporary_trouble() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA max_page_count = 8; CREATE TABLE t (b BLOB);")
            .unwrap();
        let full = conn
            .execute("INSERT INTO t VALUES (zeroblob(1000000))", [])
            .unwrap_err();
        assert_eq!(
            full.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DiskFull),
            "{full}"
        );
        let e = StoreError::sqlite(&path, "committing a batch", full);
        assert_eq!(e.disposition(), Disposition::Retry);
        assert!(
            !e.is_busy(),
            "a full disk is not retried at once like a lock"
        );
    }
}
