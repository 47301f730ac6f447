//! Connection setup and schema migrations.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::error::StoreError;

/// Long enough to ride out the writer's largest batch commit, short enough
/// that a wedged lock surfaces as an error instead of a hang.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `PRAGMA auto_vacuum` of a database that never shrinks; the others are
/// 1 (FULL, shrinks on every commit) and 2 (INCREMENTAL, shrinks on request).
const AUTO_VACUUM_NONE: i64 = 0;

pub(crate) struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
    /// Whether it can leave dangling references, so `PRAGMA foreign_key_check` runs
    /// before it commits. That check reads every row of every table with a foreign key
    /// — 100 s on a 10⁷-window database — so a migration that only adds a column says no.
    pub moves_references: bool,
}

/// Append only: a migration's position is its version number, and released
/// databases record how many of these they have applied.
const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_initial",
        sql: include_str!("migrations/0001_initial.sql"),
        moves_references: true,
    },
    Migration {
        name: "0002_daemon",
        sql: include_str!("migrations/0002_daemon.sql"),
        moves_references: true,
    },
    Migration {
        name: "0003_time_model",
        sql: include_str!("migrations/0003_time_model.sql"),
        moves_references: true,
    },
    Migration {
        name: "0004_retries",
        sql: include_str!("migrations/0004_retries.sql"),
        moves_references: true,
    },
    Migration {
        name: "0005_label_sets",
        sql: include_str!("migrations/0005_label_sets.sql"),
        moves_references: true,
    },
    Migration {
        name: "0006_window_embeddings",
        sql: include_str!("migrations/0006_window_embeddings.sql"),
        moves_references: false,
    },
];

/// The `user_version` a database has once this binary has migrated it.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Pages in the WAL that start an automatic checkpoint (1 MiB of 4 KiB pages).
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Create the file (and its directory) if missing: the daemon.
    Create,
    /// The file must already exist: `cliptag query` on a mistyped path
    /// should say so, not print zero results from a fresh empty database.
    Existing,
}

/// Opens, configures and migrates one connection.
pub(crate) fn open(path: &Path, mode: OpenMode) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    match mode {
        OpenMode::Create => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    path: path.to_path_buf(),
                    dir: dir.to_path_buf(),
                    source,
                })?;
            }
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        OpenMode::Existing => {
            if !path.is_file() {
                return Err(StoreError::NotFound {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;

    // Before anything that writes: switching to WAL rewrites the file header,
    // and a database from a newer cliptag must be left exactly as it was.
    // This read is also what notices a file that is not a database at all.
    let found = user_version(&conn).map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }

    let journal: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(open_err)?;
    if !journal.eq_ignore_ascii_case("wal") {
        // Some filesystems (network mounts) cannot do WAL. Still correct,
        // just readers and the writer will block each other.
        tracing::warn!(path = %path.display(), journal, "database is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    // Checkpoint once the WAL holds 1 MiB rather than SQLite's 4: on a full disk the pages
    // a checkpoint would add to the main file are stuck in the WAL, and the reserve file
    // (space.rs) must be able to cover them.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(open_err)?;
    // On a database without tables yet this decides its layout for good, so
    // it must come before migration 1 creates any; on an older one it only
    // tells the VACUUM below what to convert to. Only when still NONE: on a
    // database that already has it, setting it again takes the write lock,
    // and a reader must not wait on the writer.
    let auto_vacuum: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .map_err(open_err)?;
    if auto_vacuum == AUTO_VACUUM_NONE {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(open_err)?;
    }

    migrate(&mut conn, path, MIGRATIONS)?;
    if mode == OpenMode::Create {
        convert_to_incremental_vacuum(&conn, path);
    }

    // Explicitly, since migrate() turned them off and a system SQLite would
    // default them off anyway.
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(open_err)?;
    Ok(conn)
}

/// Databases created before migration 2 have `auto_vacuum = NONE`: deleted
/// rows free pages for reuse, but the file never shrinks. Converting takes a
/// VACUUM, which rewrites the whole file and cannot run inside a transaction,
/// so it is not part of the migration itself; checking the pragma on every
/// open instead means a process killed between the migration and the VACUUM
/// simply converts on its next start.
///
/// Only the daemon's opens ([`OpenMode::Create`]) do it: `cliptag query`
/// should not spend minutes rewriting an SD card. And a failure (disk too full
/// for the copy, another writer holding the lock) is logged, not returned:
/// the database works unconverted, retention still deletes and its pages are
/// reused, and the next start tries again.
fn convert_to_incremental_vacuum(conn: &Connection, path: &Path) {
    let mode: rusqlite::Result<i64> = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0));
    match mode {
        Ok(AUTO_VACUUM_NONE) => {}
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read auto_vacuum");
            return;
        }
    }
    let started = std::time::Instant::now();
    tracing::info!(path = %path.display(), "rewriting the database once for incremental vacuum (VACUUM)");
    if let Err(e) = conn.execute_batch("VACUUM") {
        tracing::warn!(
            path = %path.display(),
            error = %e,
            "VACUUM failed; the database works, but retention cannot shrink the file until a later start converts it"
        );
        return;
    }
    // In WAL mode the rewritten copy sits in the WAL; without a checkpoint
    // the disk holds the database twice until the next automatic one.
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::debug!(path = %path.display(), error = %e, "checkpoint after VACUUM failed");
    }
    tracing::info!(path = %path.display(), elapsed = ?started.elapsed(), "database converted to incremental vacuum");
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Applies every migration past the database's `user_version`, one
/// transaction each, so a failure leaves the database at the last good version.
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let known = migrations.len() as u32;
    // Off while migrating (bundled SQLite defaults it on): rebuilding a table
    // must not cascade or trip over references mid-way. Each migration runs
    // `foreign_key_check` itself before it commits; `open` turns them back on.
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(|source| StoreError::Migration {
            path: path.to_path_buf(),
            version: 0,
            source,
        })?;
    loop {
        let err = |version, source| StoreError::Migration {
            path: path.to_path_buf(),
            version,
            source,
        };
        // Checked outside a transaction first so the common up-to-date case
        // never takes the write lock (a reader must not wait on the writer).
        let current = user_version(conn).map_err(|e| err(0, e))?;
        if current == known {
            return Ok(());
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| err(current + 1, e))?;
        // Re-read under the lock: another process may have migrated meanwhile.
        let current = user_version(&tx).map_err(|e| err(current + 1, e))?;
        if current > known {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: current,
                known,
            });
        }
        if current == known {
            return Ok(());
        }
        let version = current + 1;
        let m = &migrations[current as usize];
        tx.execute_batch(m.sql).map_err(|e| err(version, e))?;
        let dangling: Option<String> = if m.moves_references {
            tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .map_or_else(
                    |e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    },
                    |t| Ok(Some(t)),
                )
                .map_err(|e| err(version, e))?
        } else {
            None
        };
        if let Some(table) = dangling {
            return Err(StoreError::bad_data(
                path,
                format!(
                    "migration {version} ({}) left dangling references in {table}",
                    m.name
                ),
            ));
        }
        tx.pragma_update(None, "user_version", version)
            .map_err(|e| err(version, e))?;
        tx.commit().map_err(|e| err(version, e))?;
        tracing::info!(path = %path.display(), version, name = m.name, "applied database migration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_migration_rolls_back_to_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut conn = Connection::open(&path).unwrap();
        let ms = [
            Migration {
                name: "one",
                sql: "CREATE TABLE a (x INTEGER);",
                moves_references: true,
            },
            Migration {
                name: "two",
                sql: "CREATE TABLE b (x INTEGER); THIS IS NOT SQL;",
                moves_references: true,
            },
        ];
        let e = migrate(&mut conn, &path, &ms).unwrap_err();
        assert!(matches!(e, StoreError::Migration { version: 2, .. }), "{e}");
        assert_eq!(user_version(&conn).unwrap(), 1);
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tables, ["a"]);
    }

    #[test]
    fn migration_leaving_dangling_references_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        let ms = [Migration {
            name: "bad",
            sql: "CREATE TABLE p (id INTEGER PRIMARY KEY);
                  CREATE TABLE c (p INTEGER REFERENCES p (id));
                  INSERT INTO c VALUES (7);",
            moves_references: true,
        }];
        let e = migrate(&mut conn, Path::new("mem"), &ms).unwrap_err();
        assert!(e.to_string().contains("dangling"), "{e}");
        assert_eq!(user_version(&conn).unwrap(), 0);
    }
}
