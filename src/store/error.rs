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
            // Whatever opening or migrating hit, the store is unusable unless
            // it was only another process holding the lock.
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

    pub(crate) fn is_busy(&self) -> bool {
        matches!(self.disposition(), Disposition::Retry)
    }
}

fn sqlite_disposition(e: &rusqlite::Error) -> Disposition {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DatabaseBusy | C::DatabaseLocked => Disposition::Retry,
            C::ConstraintViolation | C::TypeMismatch | C::TooBig => Disposition::Skip,
            // Corrupt, unreadable, full, read-only, or our own SQL is wrong:
            // retrying the same thing cannot help.
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
