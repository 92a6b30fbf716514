//! The run ledger: an embedded SQLite database under `.mlops/` recording every
//! run, step and gate decision — the evidence that gating and the maturity
//! report rely on.
//!
//! Every state change is one transaction, so a process killed at any point
//! (even with `kill -9`) leaves rows that describe what really happened up to
//! the last completed change. The schema is versioned with
//! `PRAGMA user_version` and migrated forward on open. This module knows
//! nothing about processes or terminals.
//!
//! The write path of a run (`begin_run`, `reopen_run`, `apply`,
//! `finish_run` and their types) is the crate's own: only the executor
//! writes runs, steps, gates and evidence. Async code reads and writes
//! through a [`LedgerHandle`], which runs SQLite on tokio's blocking pool.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::stage::Stage;
use crate::status::{RunStatus, StageStatus, StepStatus};

/// The directory, inside a project, that holds the ledger and run logs.
pub const STATE_DIR: &str = ".mlops";

const DB_FILE: &str = "ledger.db";
const LOCK_FILE: &str = "lock";

/// Forward-only schema migrations; entry `i` takes `user_version` from `i` to
/// `i + 1`. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: runs, steps, gates.
    "
    CREATE TABLE runs (
        id              INTEGER PRIMARY KEY,
        project         TEXT NOT NULL,
        started_at_ms   INTEGER NOT NULL,
        finished_at_ms  INTEGER,
        status          TEXT NOT NULL CHECK (status IN ('running', 'passed', 'failed', 'cancelled')),
        git_commit      TEXT,
        git_branch      TEXT,
        git_dirty       INTEGER,
        selection       TEXT NOT NULL,
        pid             INTEGER NOT NULL,
        resumed         INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE steps (
        run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name            TEXT NOT NULL,
        stage           TEXT NOT NULL,
        position        INTEGER NOT NULL,
        status          TEXT NOT NULL CHECK (status IN
                            ('pending', 'passed', 'failed', 'cached', 'gated', 'timed-out', 'cancelled')),
        started_at_ms   INTEGER,
        finished_at_ms  INTEGER,
        duration_ms     INTEGER,
        attempts        INTEGER NOT NULL DEFAULT 0,
        exit_code       INTEGER,
        fingerprint     TEXT NOT NULL,
        input_hash      TEXT,
        output_hash     TEXT,
        log_path        TEXT,
        reason          TEXT,
        cached_from     INTEGER,
        PRIMARY KEY (run_id, name)
    );
    CREATE INDEX steps_by_definition ON steps (name, fingerprint, input_hash, status);
    CREATE TABLE gates (
        run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        stage           TEXT NOT NULL,
        status          TEXT NOT NULL CHECK (status IN ('passed', 'failed')),
        decided_at_ms   INTEGER NOT NULL,
        reason          TEXT,
        PRIMARY KEY (run_id, stage)
    );
    ",
    // 2: evidence that built-in steps record (test results, findings, metrics).
    "
    CREATE TABLE evidence (
        run_id          INTEGER NOT NULL,
        step            TEXT NOT NULL,
        kind            TEXT NOT NULL,
        body            TEXT NOT NULL,
        PRIMARY KEY (run_id, step, kind),
        FOREIGN KEY (run_id, step) REFERENCES steps(run_id, name) ON DELETE CASCADE
    );
    ",
    // 3: infrastructure (what each apply did, what runs where) and the model
    // registry (versions with lineage, stage changes).
    "
    CREATE TABLE infra_applies (
        id              INTEGER PRIMARY KEY,
        environment     TEXT NOT NULL,
        provider        TEXT NOT NULL,
        started_at_ms   INTEGER NOT NULL,
        finished_at_ms  INTEGER,
        status          TEXT NOT NULL CHECK (status IN ('running', 'applied', 'failed')),
        actions         TEXT NOT NULL,
        error           TEXT,
        actor           TEXT NOT NULL,
        run_id          INTEGER,
        step            TEXT
    );
    CREATE TABLE infra_services (
        environment     TEXT NOT NULL,
        provider        TEXT NOT NULL,
        service         TEXT NOT NULL,
        revision        TEXT NOT NULL,
        replicas        INTEGER NOT NULL,
        model_version   TEXT,
        state           TEXT NOT NULL,
        apply_id        INTEGER NOT NULL REFERENCES infra_applies(id),
        updated_at_ms   INTEGER NOT NULL,
        PRIMARY KEY (environment, provider, service)
    );
    CREATE TABLE model_versions (
        model           TEXT NOT NULL,
        number          INTEGER NOT NULL,
        digest          TEXT NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        path            TEXT NOT NULL,
        files           TEXT NOT NULL,
        metrics         TEXT,
        data_hash       TEXT,
        git_commit      TEXT,
        git_dirty       INTEGER,
        run_id          INTEGER,
        step            TEXT,
        parent          INTEGER,
        PRIMARY KEY (model, number),
        UNIQUE (model, digest)
    );
    CREATE TABLE model_stage_changes (
        id              INTEGER PRIMARY KEY,
        model           TEXT NOT NULL,
        number          INTEGER NOT NULL,
        stage           TEXT NOT NULL CHECK (stage IN ('none', 'staging', 'production', 'archived')),
        at_ms           INTEGER NOT NULL,
        actor           TEXT NOT NULL,
        reason          TEXT NOT NULL,
        FOREIGN KEY (model, number) REFERENCES model_versions(model, number)
    );
    ",
    // 4: step rows keyed by (run, plan position), integers, and step
    // definitions stored once instead of a fingerprint per row. The status
    // check is a chain of comparisons: SQLite evaluates an `IN` list of more
    // than two constants through a temporary b-tree, built again for every
    // row written. Foreign keys are off while migrating, so dropping the old
    // table does not cascade to the evidence that refers to it by name.
    "
    CREATE TABLE step_definitions (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL,
        fingerprint     TEXT NOT NULL,
        UNIQUE (name, fingerprint)
    );
    INSERT INTO step_definitions (name, fingerprint)
        SELECT name, fingerprint FROM steps
        GROUP BY name, fingerprint ORDER BY MIN(run_id), MIN(position), name;
    CREATE TABLE steps_v4 (
        run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        position        INTEGER NOT NULL,
        name            TEXT NOT NULL,
        stage           TEXT NOT NULL,
        definition      INTEGER NOT NULL REFERENCES step_definitions(id),
        status          TEXT NOT NULL CHECK (status = 'pending' OR status = 'passed'
                            OR status = 'failed' OR status = 'cached' OR status = 'gated'
                            OR status = 'timed-out' OR status = 'cancelled'),
        started_at_ms   INTEGER,
        finished_at_ms  INTEGER,
        duration_ms     INTEGER,
        attempts        INTEGER NOT NULL DEFAULT 0,
        exit_code       INTEGER,
        input_hash      TEXT,
        output_hash     TEXT,
        log_path        TEXT,
        reason          TEXT,
        cached_from     INTEGER,
        PRIMARY KEY (run_id, position),
        UNIQUE (run_id, name)
    ) WITHOUT ROWID;
    INSERT INTO steps_v4 (run_id, position, name, stage, definition, status, started_at_ms,
                          finished_at_ms, duration_ms, attempts, exit_code, input_hash,
                          output_hash, log_path, reason, cached_from)
        SELECT s.run_id, ROW_NUMBER() OVER (PARTITION BY s.run_id ORDER BY s.position, s.name) - 1,
               s.name, s.stage, d.id, s.status, s.started_at_ms, s.finished_at_ms, s.duration_ms,
               s.attempts, s.exit_code, s.input_hash, s.output_hash, s.log_path, s.reason,
               s.cached_from
        FROM steps s JOIN step_definitions d ON d.name = s.name AND d.fingerprint = s.fingerprint;
    DROP INDEX steps_by_definition;
    DROP TABLE steps;
    ALTER TABLE steps_v4 RENAME TO steps;
    CREATE INDEX steps_by_definition ON steps (definition, input_hash, status);
    ",
    // 5: what a step's kind read from the manifest's sections when it was
    // compiled (JSON: [{section, digest}]), so a refusal can name the part
    // that changed since the evidence. NULL for definitions recorded
    // before: not known.
    "
    ALTER TABLE step_definitions ADD COLUMN reads TEXT;
    ",
];

/// A ledger failure.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A database operation failed.
    #[error("ledger {path}: cannot {what}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer mlops.
    #[error(
        "ledger {path} has schema version {found}, newer than this mlops understands ({known}); upgrade mlops"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// The lock file could not be opened.
    #[error("cannot open the lock file {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A write for a step the run did not plan.
    #[error("ledger {path}: run {run_id} has no planned step at position {position}")]
    UnplannedStep {
        /// The database file.
        path: PathBuf,
        /// The run.
        run_id: i64,
        /// The position in the plan that has no step.
        position: usize,
    },
    /// Another process holds the project lock.
    #[error("another mlops run is in progress in {dir} (it holds {dir}/{LOCK_FILE})")]
    Busy {
        /// The state directory.
        dir: PathBuf,
    },
    /// A [`LedgerHandle::call`] did not end: the async runtime shut down.
    #[error("ledger {path}: the call was stopped before it ended (the async runtime shut down)")]
    CallStopped {
        /// The database file.
        path: PathBuf,
    },
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An RFC 3339 timestamp for milliseconds since the epoch.
pub fn format_ms(ms: i64) -> String {
    // RFC 3339 ends at year 9999; a corrupt row must not panic a reader.
    const LAST_MS: i64 = 253_402_300_799_999;
    let t = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, LAST_MS) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The git state a run was made on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GitState {
    /// Full commit id of `HEAD`, if the project is in a repository with one.
    pub commit: Option<String>,
    /// Branch name, if `HEAD` is on a branch.
    pub branch: Option<String>,
    /// Whether tracked or untracked files differ from `HEAD`.
    pub dirty: bool,
}

/// The definition of a step's newest passing record.
#[derive(Debug, Clone)]
pub struct PassingDefinition {
    /// The run it passed in.
    pub run_id: i64,
    /// Its definition fingerprint.
    pub fingerprint: String,
    /// The manifest parts its kind read; `None` when an older mlops
    /// recorded it without them.
    pub reads: Option<Vec<crate::SectionRead>>,
}

/// A step as registered at the start of a run.
#[derive(Debug, Clone)]
pub(crate) struct PlannedStep {
    /// Name.
    pub(crate) name: String,
    /// Stage.
    pub(crate) stage: Stage,
    /// Definition fingerprint.
    pub(crate) fingerprint: String,
    /// The manifest parts the step's kind read (part of the fingerprint),
    /// kept so that a refusal can say which one changed.
    pub(crate) reads: Vec<crate::SectionRead>,
}

/// The final record of a step in a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepOutcomeRecord {
    /// Final status.
    pub(crate) status: Option<StepStatus>,
    /// Start time, if it ran.
    pub(crate) started_at_ms: Option<i64>,
    /// End time.
    pub(crate) finished_at_ms: i64,
    /// Wall time of all attempts.
    pub(crate) duration_ms: Option<i64>,
    /// Attempts made.
    pub(crate) attempts: u32,
    /// Exit code of the last attempt, for shell steps.
    pub(crate) exit_code: Option<i32>,
    /// Input hash the step ran (or was cached) with.
    pub(crate) input_hash: Option<String>,
    /// Hash of the outputs after the step.
    pub(crate) output_hash: Option<String>,
    /// Log file.
    pub(crate) log_path: Option<String>,
    /// Why it ended as it did, for anything but a pass.
    pub(crate) reason: Option<String>,
    /// The run whose result a cached step reused.
    pub(crate) cached_from: Option<i64>,
    /// Evidence the step recorded, as (kind, JSON text); replaces any the
    /// step recorded before in this run.
    pub(crate) evidence: Vec<(String, String)>,
}

/// Structured evidence a step recorded: what it checked and what it found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// What sort: `tests`, `data-validation`, `model-gate`, …
    pub kind: String,
    /// The step's own JSON document.
    pub body: serde_json::Value,
    /// For a cached step: the run that recorded it (the one whose result was
    /// reused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_run: Option<i64>,
}

/// Evidence found by [`Ledger::latest_evidence`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceRecord {
    /// The run that recorded it.
    pub run_id: i64,
    /// The commit that run was made on.
    pub commit: Option<String>,
    /// The evidence.
    pub body: serde_json::Value,
}

/// One state change of a run, for [`Ledger::apply`]. Steps are named by
/// their position in the plan the run was begun (or reopened) with: the
/// index into the `steps` given to [`Ledger::begin_run`] or
/// [`Ledger::reopen_run`].
#[derive(Debug, Clone)]
pub(crate) enum LedgerWrite {
    /// A step attempt started.
    StepStarted {
        /// The step's position in the plan.
        position: usize,
        /// 1-based attempt.
        attempt: u32,
        /// When.
        at_ms: i64,
        /// Its log file.
        log_path: Option<String>,
    },
    /// A step reached its final status.
    StepFinished {
        /// The step's position in the plan.
        position: usize,
        /// The record.
        record: StepOutcomeRecord,
    },
    /// A gate was decided.
    GateDecided {
        /// The stage.
        stage: Stage,
        /// Whether it passed.
        passed: bool,
        /// Why not.
        reason: Option<String>,
    },
}

/// Evidence a step recorded, as [`Ledger::step_evidence`] finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvidence {
    /// The run.
    pub run_id: i64,
    /// The step.
    pub step: String,
    /// The step's stage.
    pub stage: Stage,
    /// How the step ended.
    pub status: StepStatus,
    /// What sort of evidence (`tests`, `deploy`, …).
    pub kind: String,
    /// The step's JSON document.
    pub body: serde_json::Value,
    /// The run's commit.
    pub commit: Option<String>,
    /// When the run started (RFC 3339).
    pub run_started_at: String,
}

/// A recorded passing step that can stand in for running it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassingRecord {
    /// The run that holds it.
    pub run_id: i64,
    /// The outputs' hash after it.
    pub output_hash: Option<String>,
}

/// One step of a run, as reported by `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    /// Name.
    pub name: String,
    /// Stage.
    pub stage: Stage,
    /// Status.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Wall time of all attempts.
    pub duration_ms: Option<i64>,
    /// Exit code of the last attempt.
    pub exit_code: Option<i32>,
    /// When it started.
    pub started_at: Option<String>,
    /// Why it ended as it did.
    pub reason: Option<String>,
    /// Log file.
    pub log: Option<String>,
    /// Run whose result was reused.
    pub cached_from: Option<i64>,
    /// Definition fingerprint.
    pub fingerprint: String,
    /// Input hash.
    pub input_hash: Option<String>,
    /// Output hash.
    pub output_hash: Option<String>,
    /// What the step recorded (built-in kinds), by kind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

/// A stage of a run, as reported by `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    /// Stage name.
    pub name: Stage,
    /// Status folded from its steps.
    pub status: StageStatus,
}

/// A run, as reported by `status` and `history`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Ledger id.
    pub run_id: i64,
    /// Project name.
    pub project: String,
    /// Status. An interrupted run stays `running`; see `interrupted`.
    pub status: RunStatus,
    /// True when the run is `running` but no process is running it (it was
    /// killed); `mlops pipeline run --resume` finishes it.
    pub interrupted: bool,
    /// Commit it ran on.
    pub commit: Option<String>,
    /// Branch it ran on.
    pub branch: Option<String>,
    /// Whether the working tree differed from the commit.
    pub dirty: bool,
    /// Which stages were selected: `all`, `stage:NAME` or `from:NAME`.
    pub selection: String,
    /// Start time.
    pub started_at: String,
    /// End time.
    pub finished_at: Option<String>,
    /// Wall time.
    pub duration_ms: Option<i64>,
    /// How often it was resumed.
    pub resumed: u32,
    /// Stages with steps in the run, in order.
    pub stages: Vec<StageSummary>,
    /// Steps in the run, in plan order.
    pub steps: Vec<StepSummary>,
}

/// A handle on the ledger database; cheap to clone, safe to share.
///
/// What a run records (its planned steps, their results and evidence, its
/// gates and how it ended) is written by the executor alone: the write
/// path is not public, so no embedder can write a passing record that
/// would open a later stage. Stage crates and embedders write only through
/// narrow APIs (the model registry, infrastructure applies and services).
/// Reading is public:
///
/// ```no_run
/// let ledger = mlops_core::Ledger::open(std::path::Path::new(".")).unwrap();
/// let _ = ledger.last_run_id();
/// ```
///
/// Writing a run is not:
///
/// ```compile_fail,E0624
/// let ledger = mlops_core::Ledger::open(std::path::Path::new(".")).unwrap();
/// let git = mlops_core::ledger::GitState::default();
/// let _ = ledger.begin_run("p", &git, "all", &[]);
/// ```
///
/// ```compile_fail,E0624
/// let ledger = mlops_core::Ledger::open(std::path::Path::new(".")).unwrap();
/// let _ = ledger.reopen_run(1, &[], &[]);
/// ```
///
/// ```compile_fail,E0624
/// let ledger = mlops_core::Ledger::open(std::path::Path::new(".")).unwrap();
/// let _ = ledger.apply(1, std::iter::empty());
/// ```
///
/// ```compile_fail,E0624
/// let ledger = mlops_core::Ledger::open(std::path::Path::new(".")).unwrap();
/// let _ = ledger.finish_run(1, mlops_core::RunStatus::Passed);
/// ```
///
/// ```compile_fail,E0603
/// let _ = mlops_core::ledger::StepOutcomeRecord::default();
/// ```
///
/// ```compile_fail,E0603
/// let _: Option<mlops_core::ledger::PlannedStep> = None;
/// ```
///
/// ```compile_fail,E0603
/// let _: Option<mlops_core::ledger::LedgerWrite> = None;
/// ```
#[derive(Clone)]
pub struct Ledger {
    conn: Arc<Mutex<Connection>>,
    dir: PathBuf,
    path: PathBuf,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// Opens (creating and migrating if needed) the ledger of a project.
    pub fn open(project_root: &Path) -> Result<Ledger, LedgerError> {
        let dir = project_root.join(STATE_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| LedgerError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let sql = |what| {
            let path = path.clone();
            move |source| LedgerError::Sql { path, what, source }
        };
        let mut conn = Connection::open(&path).map_err(sql("open the database"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql("set the busy timeout"))?;
        // Foreign keys are enforced only after the migrations: a migration
        // that rebuilds a table must not cascade deletes (SQLite ignores the
        // pragma inside a transaction).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;",
        )
        .map_err(sql("configure the database"))?;
        // Two processes may open a new ledger at once: migrate under an
        // immediate (write-locked) transaction and read the version inside it.
        let known = MIGRATIONS.len() as i64;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("begin a migration"))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql("read the schema version"))?;
        if version > known {
            return Err(LedgerError::TooNew {
                path,
                found: version,
                known,
            });
        }
        for migration in MIGRATIONS.iter().skip(version as usize) {
            tx.execute_batch(migration)
                .map_err(sql("migrate the schema"))?;
        }
        tx.pragma_update(None, "user_version", known)
            .map_err(sql("record the schema version"))?;
        tx.commit().map_err(sql("commit a migration"))?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .map_err(sql("configure the database"))?;
        Ok(Ledger {
            conn: Arc::new(Mutex::new(conn)),
            dir,
            path,
        })
    }

    /// The project's ledger as it is now, for reading, or `None` when the
    /// project has none. Nothing in the project is written: the file is
    /// opened read-only (SQLite reads a WAL database without its `-shm`
    /// file where that cannot be made, as in a read-only checkout), and a
    /// ledger of an older schema is copied into memory and migrated there.
    /// Writes through the returned ledger fail (on the file) or are lost (in
    /// memory).
    pub fn open_snapshot(project_root: &Path) -> Result<Option<Ledger>, LedgerError> {
        let dir = project_root.join(STATE_DIR);
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let sql = |what| {
            let path = path.clone();
            move |source| LedgerError::Sql { path, what, source }
        };
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let source = Connection::open_with_flags(&path, flags)
            .map_err(sql("open the database read-only"))?;
        let found: i64 = source
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql("read the schema version"))?;
        source
            .busy_timeout(Duration::from_secs(10))
            .map_err(sql("set the busy timeout"))?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(LedgerError::TooNew { path, found, known });
        }
        let conn = if found == known {
            source
        } else {
            let mut memory = Connection::open_in_memory().map_err(sql("copy the database"))?;
            rusqlite::backup::Backup::new(&source, &mut memory)
                .and_then(|b| b.run_to_completion(1024, Duration::ZERO, None))
                .map_err(sql("copy the database"))?;
            // As in `open`: a migration that rebuilds a table must not
            // cascade deletes (the bundled SQLite enforces foreign keys by
            // default).
            memory
                .execute_batch("PRAGMA foreign_keys = OFF;")
                .map_err(sql("configure the database"))?;
            let tx = memory.transaction().map_err(sql("begin a migration"))?;
            for migration in MIGRATIONS.iter().skip(found as usize) {
                tx.execute_batch(migration)
                    .map_err(sql("migrate the schema"))?;
            }
            tx.pragma_update(None, "user_version", known)
                .map_err(sql("record the schema version"))?;
            tx.commit().map_err(sql("commit a migration"))?;
            memory
                .execute_batch("PRAGMA foreign_keys = ON;")
                .map_err(sql("configure the database"))?;
            memory
        };
        Ok(Some(Ledger {
            conn: Arc::new(Mutex::new(conn)),
            dir,
            path,
        }))
    }

    /// Opens the ledger only if the project has one; never creates it.
    pub fn open_existing(project_root: &Path) -> Result<Option<Ledger>, LedgerError> {
        if project_root.join(STATE_DIR).join(DB_FILE).is_file() {
            Ledger::open(project_root).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The state directory (`.mlops/`).
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A poisoned mutex means a panic while holding it; SQLite rolled the
        // open transaction back, so the connection is still consistent.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn err(
        &self,
        what: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> LedgerError + '_ {
        move |source| LedgerError::Sql {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// A step update must hit its planned row; no row means the step was
    /// never planned in this run, and its evidence would be lost silently.
    fn expect_row(&self, rows: usize, run_id: i64, position: usize) -> Result<(), LedgerError> {
        if rows == 1 {
            Ok(())
        } else {
            Err(LedgerError::UnplannedStep {
                path: self.path.clone(),
                run_id,
                position,
            })
        }
    }

    /// Opens (creating, never truncating) the lock file `name` in the state
    /// directory: the file the run lock and the infrastructure lock take an
    /// OS lock on. Returns it with its path.
    pub(crate) fn open_lock_file(&self, name: &str) -> Result<(File, PathBuf), LedgerError> {
        let path = self.dir.join(name);
        match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(file) => Ok((file, path)),
            Err(source) => Err(LedgerError::Lock { path, source }),
        }
    }

    /// Takes the project's run lock, held until the returned guard drops (or
    /// the process dies). Fails with [`LedgerError::Busy`] if another process
    /// holds it.
    pub fn lock(&self) -> Result<RunLock, LedgerError> {
        let (file, path) = self.open_lock_file(LOCK_FILE)?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LedgerError::Busy {
                dir: self.dir.clone(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(LedgerError::Lock { path, source }),
        }
    }

    /// Whether some process holds the run lock right now.
    pub fn is_locked(&self) -> bool {
        matches!(self.lock(), Err(LedgerError::Busy { .. }))
    }

    /// Records a new run and its planned steps as `pending`, in one
    /// transaction. Returns the run id. A step's position in `steps` is how
    /// [`LedgerWrite`]s name it.
    pub(crate) fn begin_run(
        &self,
        project: &str,
        git: &GitState,
        selection: &str,
        steps: &[PlannedStep],
    ) -> Result<i64, LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.err("begin a run"))?;
        tx.execute(
            "INSERT INTO runs (project, started_at_ms, status, git_commit, git_branch, git_dirty, selection, pid)
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7)",
            params![project, now_ms(), git.commit, git.branch, git.dirty, selection, std::process::id()],
        )
        .map_err(self.err("record a run"))?;
        let run_id = tx.last_insert_rowid();
        let definitions = self.definitions(&tx, steps)?;
        self.insert_pending(&tx, run_id, steps, &definitions)
            .map_err(self.err("record the planned steps"))?;
        tx.commit().map_err(self.err("commit a new run"))?;
        Ok(run_id)
    }

    /// The id of each step's definition (name and fingerprint), recording
    /// the ones the ledger has not seen. New ids follow plan order, which
    /// keeps the `steps_by_definition` index appended to, not scattered.
    fn definitions(
        &self,
        tx: &rusqlite::Transaction<'_>,
        steps: &[PlannedStep],
    ) -> Result<Vec<i64>, LedgerError> {
        let mut find = tx
            .prepare_cached("SELECT id FROM step_definitions WHERE name = ?1 AND fingerprint = ?2")
            .map_err(self.err("look up step definitions"))?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO step_definitions (name, fingerprint, reads) VALUES (?1, ?2, ?3)",
            )
            .map_err(self.err("record step definitions"))?;
        steps
            .iter()
            .map(|s| {
                let found: Option<i64> = find
                    .query_row(params![s.name, s.fingerprint], |r| r.get(0))
                    .optional()
                    .map_err(self.err("look up step definitions"))?;
                match found {
                    Some(id) => Ok(id),
                    None => {
                        let reads = serde_json::to_string(&s.reads).unwrap_or_default();
                        insert
                            .insert(params![s.name, s.fingerprint, reads])
                            .map_err(self.err("record step definitions"))
                    }
                }
            })
            .collect()
    }

    /// Inserts `steps` (positions from 0) as pending rows of a run, many
    /// rows per statement.
    fn insert_pending(
        &self,
        tx: &rusqlite::Transaction<'_>,
        run_id: i64,
        steps: &[PlannedStep],
        definitions: &[i64],
    ) -> rusqlite::Result<()> {
        /// Rows per statement: 4 parameters each, well under SQLite's limit
        /// of 32,766.
        const ROWS: usize = 128;
        let sql = |rows: usize| {
            let mut sql = String::from(
                "INSERT INTO steps (run_id, position, name, stage, definition, status) VALUES ",
            );
            for row in 0..rows {
                let p = 2 + 4 * row;
                if row > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(?1, ?{}, ?{}, ?{}, ?{}, 'pending')",
                    p,
                    p + 1,
                    p + 2,
                    p + 3
                ));
            }
            sql
        };
        let mut start = 0;
        for chunk in steps.chunks(ROWS) {
            let mut insert = tx.prepare_cached(&sql(chunk.len()))?;
            insert.raw_bind_parameter(1, run_id)?;
            for (k, s) in chunk.iter().enumerate() {
                let p = 2 + 4 * k;
                insert.raw_bind_parameter(p, (start + k) as i64)?;
                insert.raw_bind_parameter(p + 1, &s.name)?;
                insert.raw_bind_parameter(p + 2, s.stage.name())?;
                insert.raw_bind_parameter(p + 3, definitions[start + k])?;
            }
            insert.raw_execute()?;
            start += chunk.len();
        }
        Ok(())
    }

    /// Reopens a run for `--resume`: marks it running again and resets every
    /// step that is not kept (`keep`: steps whose passing record still holds)
    /// to `pending`, dropping what it recorded, in one transaction. Steps of
    /// the plan that the run did not have are added; steps it had that are
    /// no longer planned are removed. Positions follow `steps`, as in
    /// [`Ledger::begin_run`].
    pub(crate) fn reopen_run(
        &self,
        run_id: i64,
        steps: &[PlannedStep],
        keep: &[String],
    ) -> Result<(), LedgerError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.err("begin a resume"))?;
        tx.execute(
            "UPDATE runs SET status = 'running', finished_at_ms = NULL, pid = ?2, resumed = resumed + 1 WHERE id = ?1",
            params![run_id, std::process::id()],
        )
        .map_err(self.err("reopen a run"))?;
        tx.execute("DELETE FROM gates WHERE run_id = ?1", params![run_id])
            .map_err(self.err("reopen a run"))?;
        // Steps no longer in the plan would otherwise keep their old status
        // and colour the resumed run (their evidence goes with them).
        let planned: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        let planned = serde_json::to_string(&planned).unwrap_or_else(|_| "[]".to_owned());
        tx.execute(
            "DELETE FROM steps WHERE run_id = ?1 AND name NOT IN (SELECT value FROM json_each(?2))",
            params![run_id, planned],
        )
        .map_err(self.err("reopen a run"))?;
        // Positions are the primary key: park the old ones below zero so
        // that renumbering never collides with a row not yet moved.
        tx.execute(
            "UPDATE steps SET position = -1 - position WHERE run_id = ?1",
            params![run_id],
        )
        .map_err(self.err("reset steps for a resume"))?;
        let definitions = self.definitions(&tx, steps)?;
        {
            let mut upsert = tx
                .prepare(
                    "INSERT INTO steps (run_id, position, name, stage, definition, status)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending')
                     ON CONFLICT (run_id, name) DO UPDATE SET
                        position = excluded.position, stage = excluded.stage,
                        definition = excluded.definition, status = 'pending',
                        started_at_ms = NULL, finished_at_ms = NULL, duration_ms = NULL,
                        attempts = 0, exit_code = NULL, input_hash = NULL, output_hash = NULL,
                        reason = NULL, cached_from = NULL",
                )
                .map_err(self.err("reset steps for a resume"))?;
            let mut reposition = tx
                .prepare("UPDATE steps SET position = ?3 WHERE run_id = ?1 AND name = ?2")
                .map_err(self.err("reset steps for a resume"))?;
            // What an earlier execution of a step recorded does not describe
            // the one about to run.
            let mut forget = tx
                .prepare("DELETE FROM evidence WHERE run_id = ?1 AND step = ?2")
                .map_err(self.err("reset steps for a resume"))?;
            for (i, s) in steps.iter().enumerate() {
                if keep.contains(&s.name) {
                    reposition
                        .execute(params![run_id, s.name, i as i64])
                        .map_err(self.err("reset steps for a resume"))?;
                } else {
                    upsert
                        .execute(params![
                            run_id,
                            i as i64,
                            s.name,
                            s.stage.name(),
                            definitions[i]
                        ])
                        .map_err(self.err("reset steps for a resume"))?;
                    forget
                        .execute(params![run_id, s.name])
                        .map_err(self.err("reset steps for a resume"))?;
                }
            }
        }
        tx.commit().map_err(self.err("commit a resume"))?;
        Ok(())
    }

    /// Applies state changes of one run in one transaction: all of them are
    /// recorded, or none. The executor groups the changes of a few
    /// milliseconds this way, so a killed run leaves a ledger that describes
    /// a real moment of the run.
    pub(crate) fn apply<'w>(
        &self,
        run_id: i64,
        writes: impl IntoIterator<Item = &'w LedgerWrite>,
    ) -> Result<(), LedgerError> {
        let mut writes = writes.into_iter().peekable();
        if writes.peek().is_none() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(self.err("begin a ledger update"))?;
        for w in writes {
            match w {
                LedgerWrite::StepStarted {
                    position,
                    attempt,
                    at_ms,
                    log_path,
                } => {
                    let n = tx
                        .prepare_cached(STEP_STARTED_SQL)
                        .and_then(|mut st| {
                            st.execute(params![run_id, *position as i64, at_ms, attempt, log_path])
                        })
                        .map_err(self.err("record a step start"))?;
                    self.expect_row(n, run_id, *position)?;
                }
                LedgerWrite::StepFinished { position, record } => {
                    let n = tx
                        .prepare_cached(STEP_FINISHED_SQL)
                        .and_then(|mut st| {
                            st.execute(params![
                                run_id,
                                *position as i64,
                                record.status.unwrap_or(StepStatus::Pending).as_str(),
                                record.started_at_ms,
                                record.finished_at_ms,
                                record.duration_ms,
                                record.attempts,
                                record.exit_code,
                                record.input_hash,
                                record.output_hash,
                                record.log_path,
                                record.reason,
                                record.cached_from
                            ])
                        })
                        .map_err(self.err("record a step result"))?;
                    self.expect_row(n, run_id, *position)?;
                    // A step ends once per execution, and `reopen_run`
                    // forgets what an earlier execution recorded; replacing
                    // keeps one body per kind all the same.
                    if !record.evidence.is_empty() {
                        let mut st = tx
                            .prepare_cached(
                                "INSERT OR REPLACE INTO evidence (run_id, step, kind, body)
                                 SELECT run_id, name, ?3, ?4 FROM steps
                                 WHERE run_id = ?1 AND position = ?2",
                            )
                            .map_err(self.err("record step evidence"))?;
                        for (kind, body) in &record.evidence {
                            st.execute(params![run_id, *position as i64, kind, body])
                                .map_err(self.err("record step evidence"))?;
                        }
                    }
                }
                LedgerWrite::GateDecided {
                    stage,
                    passed,
                    reason,
                } => {
                    tx.prepare_cached(GATE_SQL)
                        .and_then(|mut st| {
                            st.execute(params![
                                run_id,
                                stage.name(),
                                if *passed { "passed" } else { "failed" },
                                now_ms(),
                                reason
                            ])
                        })
                        .map_err(self.err("record a gate"))?;
                }
            }
        }
        tx.commit().map_err(self.err("commit a ledger update"))?;
        Ok(())
    }

    /// Records how a run ended.
    pub(crate) fn finish_run(&self, run_id: i64, status: RunStatus) -> Result<(), LedgerError> {
        self.conn()
            .execute(
                "UPDATE runs SET status = ?2, finished_at_ms = ?3 WHERE id = ?1",
                params![run_id, status.as_str(), now_ms()],
            )
            .map_err(self.err("record a run result"))?;
        Ok(())
    }

    /// The newest passing record of a step with this definition and input
    /// hash; with `commit = Some(c)` only records made on commit `c`
    /// (`Some(None)`: made outside any commit).
    pub fn find_passing(
        &self,
        step: &str,
        fingerprint: &str,
        input_hash: &str,
        commit: Option<Option<&str>>,
    ) -> Result<Option<PassingRecord>, LedgerError> {
        let conn = self.conn();
        let row = match commit {
            None => conn
                .query_row(
                    "SELECT s.run_id, s.output_hash
                     FROM step_definitions d JOIN steps s ON s.definition = d.id
                     WHERE d.name = ?1 AND d.fingerprint = ?2 AND s.input_hash = ?3
                       AND s.status IN ('passed', 'cached')
                     ORDER BY s.run_id DESC LIMIT 1",
                    params![step, fingerprint, input_hash],
                    |r| {
                        Ok(PassingRecord {
                            run_id: r.get(0)?,
                            output_hash: r.get(1)?,
                        })
                    },
                )
                .optional(),
            Some(commit) => conn
                .query_row(
                    "SELECT s.run_id, s.output_hash
                     FROM step_definitions d JOIN steps s ON s.definition = d.id
                       JOIN runs r ON r.id = s.run_id
                     WHERE d.name = ?1 AND d.fingerprint = ?2 AND s.input_hash = ?3
                       AND s.status IN ('passed', 'cached') AND r.git_commit IS ?4
                     ORDER BY s.run_id DESC LIMIT 1",
                    params![step, fingerprint, input_hash, commit],
                    |r| {
                        Ok(PassingRecord {
                            run_id: r.get(0)?,
                            output_hash: r.get(1)?,
                        })
                    },
                )
                .optional(),
        };
        row.map_err(self.err("look up a passing step"))
    }

    /// The newest passing record of step `step` under any definition: the
    /// run, its fingerprint and the manifest parts its kind read then
    /// (`None` when an older mlops recorded it without them). For saying
    /// why newer evidence is missing.
    pub fn last_passing_reads(&self, step: &str) -> Result<Option<PassingDefinition>, LedgerError> {
        let conn = self.conn();
        let row: Option<(i64, String, Option<String>)> = conn
            .query_row(
                "SELECT s.run_id, d.fingerprint, d.reads
                 FROM step_definitions d JOIN steps s ON s.definition = d.id
                 WHERE d.name = ?1 AND (s.status = 'passed' OR s.status = 'cached')
                 ORDER BY s.run_id DESC LIMIT 1",
                params![step],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.err("look up a passing step"))?;
        Ok(row.map(|(run_id, fingerprint, reads)| PassingDefinition {
            run_id,
            fingerprint,
            reads: reads.and_then(|r| serde_json::from_str(&r).ok()),
        }))
    }

    /// The newest evidence of `kind` that step `step` recorded in a run
    /// before `before_run` where it passed.
    pub fn latest_evidence(
        &self,
        step: &str,
        kind: &str,
        before_run: i64,
    ) -> Result<Option<EvidenceRecord>, LedgerError> {
        let row: Option<(i64, Option<String>, String)> = self
            .conn()
            .query_row(
                "SELECT e.run_id, r.git_commit, e.body FROM evidence e
                   JOIN steps s ON s.run_id = e.run_id AND s.name = e.step
                   JOIN runs r ON r.id = e.run_id
                 WHERE e.step = ?1 AND e.kind = ?2 AND e.run_id < ?3 AND s.status = 'passed'
                 ORDER BY e.run_id DESC LIMIT 1",
                params![step, kind, before_run],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.err("look up earlier evidence"))?;
        Ok(row.and_then(|(run_id, commit, body)| {
            Some(EvidenceRecord {
                run_id,
                commit,
                body: serde_json::from_str(&body).ok()?,
            })
        }))
    }

    /// Evidence recorded by steps, newest run first, at most `per_kind`
    /// records of each kind; with the step's stage and final status and the
    /// run's commit and start. A body that is not JSON (written by hand) is
    /// left out. For reports that read every stage's evidence at once.
    pub fn step_evidence(&self, per_kind: usize) -> Result<Vec<StepEvidence>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT run_id, step, stage, status, kind, body, git_commit, started_at_ms FROM (
                   SELECT e.run_id, e.step, s.stage, s.status, e.kind, e.body, r.git_commit,
                          r.started_at_ms,
                          ROW_NUMBER() OVER (PARTITION BY e.kind ORDER BY e.run_id DESC, e.step) AS n
                   FROM evidence e
                     JOIN steps s ON s.run_id = e.run_id AND s.name = e.step
                     JOIN runs r ON r.id = e.run_id)
                 WHERE n <= ?1 ORDER BY run_id DESC, step, kind",
            )
            .map_err(self.err("read recorded evidence"))?;
        let rows = stmt
            .query_map(params![per_kind.min(i64::MAX as usize) as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("read recorded evidence"))?;
        Ok(rows
            .into_iter()
            .filter_map(
                |(run_id, step, stage, status, kind, body, commit, started)| {
                    Some(StepEvidence {
                        run_id,
                        step,
                        stage: stage.parse().ok()?,
                        status: status.parse().ok()?,
                        kind,
                        body: serde_json::from_str(&body).ok()?,
                        commit,
                        run_started_at: format_ms(started),
                    })
                },
            )
            .collect())
    }

    /// The id of the newest run, if any.
    pub fn last_run_id(&self) -> Result<Option<i64>, LedgerError> {
        self.conn()
            .query_row("SELECT MAX(id) FROM runs", [], |r| r.get(0))
            .map_err(self.err("find the last run"))
    }

    /// A run with its stages and steps.
    pub fn run(&self, run_id: i64) -> Result<Option<RunSummary>, LedgerError> {
        let locked = self.is_locked();
        let conn = self.conn();
        let run = conn
            .query_row(
                "SELECT id, project, status, git_commit, git_branch, git_dirty, selection, started_at_ms,
                        finished_at_ms, resumed FROM runs WHERE id = ?1",
                params![run_id],
                run_row,
            )
            .optional()
            .map_err(self.err("read a run"))?;
        let Some(mut run) = run else { return Ok(None) };
        run.interrupted = run.status == RunStatus::Running && !locked;
        let mut stmt = conn
            .prepare(
                "SELECT s.name, s.stage, s.status, s.attempts, s.duration_ms, s.exit_code,
                        s.started_at_ms, s.reason, s.log_path, s.cached_from, d.fingerprint,
                        s.input_hash, s.output_hash
                 FROM steps s JOIN step_definitions d ON d.id = s.definition
                 WHERE s.run_id = ?1 ORDER BY s.position",
            )
            .map_err(self.err("read the steps of a run"))?;
        let steps = stmt
            .query_map(params![run_id], |r| {
                let stage: String = r.get(1)?;
                let status: String = r.get(2)?;
                Ok(StepSummary {
                    name: r.get(0)?,
                    stage: stage.parse().map_err(|e| bad_column(1, e))?,
                    status: status.parse().map_err(|e: String| bad_column(2, e))?,
                    attempts: r.get(3)?,
                    duration_ms: r.get(4)?,
                    exit_code: r.get(5)?,
                    started_at: r.get::<_, Option<i64>>(6)?.map(format_ms),
                    reason: r.get(7)?,
                    log: r.get(8)?,
                    cached_from: r.get(9)?,
                    fingerprint: r.get(10)?,
                    input_hash: r.get(11)?,
                    output_hash: r.get(12)?,
                    evidence: Vec::new(),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("read the steps of a run"))?;
        let mut steps = steps;
        let mut stmt = conn
            .prepare("SELECT step, kind, body FROM evidence WHERE run_id = ?1 ORDER BY step, kind")
            .map_err(self.err("read the evidence of a run"))?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("read the evidence of a run"))?;
        for (step, kind, body) in rows {
            if let Some(s) = steps.iter_mut().find(|s| s.name == step) {
                let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
                s.evidence.push(Evidence {
                    kind,
                    body,
                    from_run: None,
                });
            }
        }
        // A cached step's evidence is that of the run it stands on.
        let mut stmt = conn
            .prepare(
                "SELECT kind, body FROM evidence WHERE run_id = ?1 AND step = ?2 ORDER BY kind",
            )
            .map_err(self.err("read the evidence of a run"))?;
        let mut origin_stmt = conn
            .prepare("SELECT cached_from FROM steps WHERE run_id = ?1 AND name = ?2")
            .map_err(self.err("read the evidence of a run"))?;
        for s in steps.iter_mut().filter(|s| s.evidence.is_empty()) {
            let Some(mut from) = s.cached_from else {
                continue;
            };
            // A cache hit may stand on another cache hit: follow the chain
            // to the run that really ran the step (bounded, in case of a
            // damaged ledger).
            for _ in 0..1000 {
                let next: Option<i64> = origin_stmt
                    .query_row(params![from, s.name], |r| r.get(0))
                    .optional()
                    .map_err(self.err("read the evidence of a run"))?
                    .flatten();
                match next {
                    Some(n) if n != from => from = n,
                    _ => break,
                }
            }
            let rows = stmt
                .query_map(params![from, s.name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(self.err("read the evidence of a run"))?;
            for (kind, body) in rows {
                let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
                s.evidence.push(Evidence {
                    kind,
                    body,
                    from_run: Some(from),
                });
            }
        }
        run.stages = Stage::ALL
            .into_iter()
            .filter(|s| steps.iter().any(|step| step.stage == *s))
            .map(|s| StageSummary {
                name: s,
                status: StageStatus::of_steps(
                    steps
                        .iter()
                        .filter(|step| step.stage == s)
                        .map(|step| step.status),
                ),
            })
            .collect();
        run.steps = steps;
        Ok(Some(run))
    }

    /// The newest runs first, without their steps.
    pub fn history(&self, limit: usize) -> Result<Vec<RunSummary>, LedgerError> {
        let locked = self.is_locked();
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, project, status, git_commit, git_branch, git_dirty, selection, started_at_ms,
                        finished_at_ms, resumed FROM runs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.err("read the run history"))?;
        let mut runs = stmt
            .query_map(params![limit as i64], run_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("read the run history"))?;
        drop(stmt);
        let mut stage_stmt = conn
            .prepare("SELECT stage, status FROM steps WHERE run_id = ?1")
            .map_err(self.err("read the run history"))?;
        for (i, run) in runs.iter_mut().enumerate() {
            run.interrupted = run.status == RunStatus::Running && (i > 0 || !locked);
            let rows: Vec<(String, String)> = stage_stmt
                .query_map(params![run.run_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect())
                .map_err(self.err("read the run history"))?;
            let parsed: Vec<(Stage, StepStatus)> = rows
                .iter()
                .filter_map(|(s, st)| Some((s.parse().ok()?, st.parse().ok()?)))
                .collect();
            run.stages = Stage::ALL
                .into_iter()
                .filter(|s| parsed.iter().any(|(st, _)| st == s))
                .map(|s| StageSummary {
                    name: s,
                    status: StageStatus::of_steps(
                        parsed.iter().filter(|(st, _)| *st == s).map(|(_, x)| *x),
                    ),
                })
                .collect();
        }
        Ok(runs)
    }
}

const STEP_STARTED_SQL: &str =
    "UPDATE steps SET started_at_ms = COALESCE(started_at_ms, ?3), attempts = ?4, log_path = ?5
     WHERE run_id = ?1 AND position = ?2";

const STEP_FINISHED_SQL: &str = "UPDATE steps SET status = ?3, started_at_ms = COALESCE(?4, started_at_ms), finished_at_ms = ?5,
        duration_ms = ?6, attempts = ?7, exit_code = ?8, input_hash = ?9, output_hash = ?10,
        log_path = ?11, reason = ?12, cached_from = ?13
     WHERE run_id = ?1 AND position = ?2";

const GATE_SQL: &str = "INSERT OR REPLACE INTO gates (run_id, stage, status, decided_at_ms, reason) VALUES (?1, ?2, ?3, ?4, ?5)";

fn bad_column(column: usize, message: impl ToString) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        message.to_string().into(),
    )
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    let status: String = r.get(2)?;
    let started: i64 = r.get(7)?;
    let finished: Option<i64> = r.get(8)?;
    Ok(RunSummary {
        run_id: r.get(0)?,
        project: r.get(1)?,
        status: status.parse().map_err(|e: String| bad_column(2, e))?,
        interrupted: false,
        commit: r.get(3)?,
        branch: r.get(4)?,
        dirty: r.get::<_, Option<bool>>(5)?.unwrap_or(false),
        selection: r.get(6)?,
        started_at: format_ms(started),
        finished_at: finished.map(format_ms),
        duration_ms: finished.map(|f| f - started),
        resumed: r.get(9)?,
        stages: Vec::new(),
        steps: Vec::new(),
    })
}

/// The project's run lock; released on drop or when the process dies.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    pub(crate) fn from_file(file: File) -> Self {
        RunLock { _file: file }
    }
}

/// The ledger for async code. [`LedgerHandle::call`] runs a closure on
/// tokio's blocking pool, so that SQLite (a busy wait of up to 10 s on a
/// locked database, a commit's `fsync`) never blocks a thread that polls
/// futures: in-process steps are polled by the executor's coordinator, on
/// the one worker thread of the CLI's runtime.
///
/// In-process steps get one from [`crate::StepContext::ledger`]; it opens
/// the project's ledger on its first call (a connection of its own, apart
/// from the executor's) and keeps it for the run. An embedder with a
/// [`Ledger`] makes one with `LedgerHandle::from(&ledger)`. Cheap to clone.
#[derive(Clone)]
pub struct LedgerHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    /// The project directory, to open the ledger from.
    root: PathBuf,
    /// The ledger, once opened.
    ledger: Mutex<Option<Ledger>>,
}

impl LedgerHandle {
    /// A handle on the ledger of the project at `project_root`, opened
    /// (created and migrated if needed) on the first call.
    pub fn for_project(project_root: impl Into<PathBuf>) -> LedgerHandle {
        LedgerHandle {
            inner: Arc::new(HandleInner {
                root: project_root.into(),
                ledger: Mutex::new(None),
            }),
        }
    }

    /// Runs `f` with the ledger on tokio's blocking pool and returns what it
    /// returns. `f` may fail with any error a ledger error converts into
    /// (the model registry's `RegistryError`, say); opening the ledger fails
    /// with that. `f` runs to its end even if the returned future is dropped
    /// (a step that times out), so a transaction it makes is never cut
    /// short. A panic in `f` resumes in the caller (an in-process step's
    /// panic fails that step).
    pub async fn call<R, E, F>(&self, f: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<LedgerError> + Send + 'static,
        F: FnOnce(&Ledger) -> Result<R, E> + Send + 'static,
    {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || f(&inner.ledger()?)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(LedgerError::CallStopped {
                path: self.inner.root.join(STATE_DIR).join(DB_FILE),
            }
            .into()),
        }
    }
}

impl HandleInner {
    /// The ledger, opening it on first use. Blocks: called on the blocking
    /// pool only.
    fn ledger(&self) -> Result<Ledger, LedgerError> {
        let mut slot = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ledger) = &*slot {
            return Ok(ledger.clone());
        }
        let ledger = Ledger::open(&self.root)?;
        *slot = Some(ledger.clone());
        Ok(ledger)
    }
}

impl From<Ledger> for LedgerHandle {
    fn from(ledger: Ledger) -> LedgerHandle {
        LedgerHandle {
            inner: Arc::new(HandleInner {
                root: ledger
                    .dir
                    .parent()
                    .map_or_else(PathBuf::new, Path::to_path_buf),
                ledger: Mutex::new(Some(ledger)),
            }),
        }
    }
}

impl From<&Ledger> for LedgerHandle {
    fn from(ledger: &Ledger) -> LedgerHandle {
        LedgerHandle::from(ledger.clone())
    }
}

impl From<&LedgerHandle> for LedgerHandle {
    fn from(handle: &LedgerHandle) -> LedgerHandle {
        handle.clone()
    }
}

impl std::fmt::Debug for LedgerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerHandle")
            .field("project", &self.inner.root)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(names: &[&str]) -> Vec<PlannedStep> {
        names
            .iter()
            .map(|n| PlannedStep {
                name: (*n).to_owned(),
                stage: Stage::Iac,
                fingerprint: format!("fingerprint of {n}"),
                reads: Vec::new(),
            })
            .collect()
    }

    fn finished(position: usize, status: StepStatus, evidence: &[&str]) -> LedgerWrite {
        LedgerWrite::StepFinished {
            position,
            record: StepOutcomeRecord {
                status: Some(status),
                started_at_ms: Some(1),
                finished_at_ms: 2,
                duration_ms: Some(1),
                attempts: 1,
                input_hash: Some("inputs".to_owned()),
                evidence: evidence
                    .iter()
                    .map(|k| ((*k).to_owned(), format!("{{\"kind\":\"{k}\"}}")))
                    .collect(),
                ..StepOutcomeRecord::default()
            },
        }
    }

    /// (name, status, fingerprint, evidence kinds) of each step, in plan
    /// order.
    fn steps_of(ledger: &Ledger, run_id: i64) -> Vec<(String, StepStatus, String, Vec<String>)> {
        ledger
            .run(run_id)
            .unwrap()
            .unwrap()
            .steps
            .into_iter()
            .map(|s| {
                let kinds = s.evidence.into_iter().map(|e| e.kind).collect();
                (s.name, s.status, s.fingerprint, kinds)
            })
            .collect()
    }

    /// A project whose ledger has schema 3 and the rows mlops wrote then.
    fn schema_3_project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_DIR);
        std::fs::create_dir_all(&state).unwrap();
        {
            // The schema and rows as mlops wrote them before version 4.
            let conn = Connection::open(state.join(DB_FILE)).unwrap();
            for migration in &MIGRATIONS[..3] {
                conn.execute_batch(migration).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 3;
                 INSERT INTO runs (id, project, started_at_ms, finished_at_ms, status, selection, pid)
                   VALUES (1, 'p', 10, 20, 'passed', 'all', 1), (2, 'p', 30, NULL, 'running', 'all', 1);
                 INSERT INTO steps (run_id, name, stage, position, status, fingerprint, input_hash,
                                    output_hash, attempts)
                   VALUES (1, 'build', 'iac', 0, 'passed', 'fp-build', 'in-1', 'out-1', 1),
                          (1, 'test', 'ci', 1, 'passed', 'fp-test', 'in-2', NULL, 1),
                          (2, 'build', 'iac', 0, 'cached', 'fp-build', 'in-1', 'out-1', 0),
                          (2, 'test', 'ci', 1, 'pending', 'fp-test-2', NULL, NULL, 0);
                 UPDATE steps SET cached_from = 1 WHERE run_id = 2 AND name = 'build';
                 INSERT INTO evidence (run_id, step, kind, body)
                   VALUES (1, 'test', 'tests', '{\"passed\":3}');",
            )
            .unwrap();
        }
        dir
    }

    /// The steps of run 1 of [`schema_3_project`].
    fn schema_3_run_1() -> Vec<(String, StepStatus, String, Vec<String>)> {
        vec![
            (
                "build".to_owned(),
                StepStatus::Passed,
                "fp-build".to_owned(),
                vec![],
            ),
            (
                "test".to_owned(),
                StepStatus::Passed,
                "fp-test".to_owned(),
                vec!["tests".to_owned()],
            ),
        ]
    }

    #[test]
    fn a_snapshot_reads_an_old_ledger_without_changing_it() {
        let dir = schema_3_project();
        let file = dir.path().join(STATE_DIR).join(DB_FILE);
        let before = std::fs::read(&file).unwrap();
        let snapshot = Ledger::open_snapshot(dir.path()).unwrap().unwrap();
        assert_eq!(steps_of(&snapshot, 1), schema_3_run_1());
        assert_eq!(snapshot.history(10).unwrap().len(), 2);
        drop(snapshot);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "the file is untouched"
        );
        let conn = Connection::open(&file).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 3);
        assert!(
            Ledger::open_snapshot(&dir.path().join("elsewhere"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_snapshot_reads_a_ledger_whose_shared_memory_file_cannot_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let run = ledger
            .begin_run("p", &GitState::default(), "all", &planned(&["a"]))
            .unwrap();
        ledger.finish_run(run, RunStatus::Passed).unwrap();
        drop(ledger);
        // What a read-only checkout does to SQLite: no `-shm` beside the
        // database can be made (a directory stands in its way here, since
        // the tests may run as root, whom permissions do not stop).
        let shm = dir.path().join(STATE_DIR).join(format!("{DB_FILE}-shm"));
        let _ = std::fs::remove_file(&shm);
        std::fs::create_dir(&shm).unwrap();
        let snapshot = Ledger::open_snapshot(dir.path()).unwrap().unwrap();
        let runs = snapshot.history(10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, RunStatus::Passed);
    }

    #[test]
    fn a_ledger_of_schema_3_opens_migrated_with_its_runs_and_evidence() {
        let dir = schema_3_project();
        let ledger = Ledger::open(dir.path()).unwrap();
        let version: i64 = ledger
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(steps_of(&ledger, 1), schema_3_run_1());
        assert_eq!(
            steps_of(&ledger, 2)
                .into_iter()
                .map(|(name, status, fingerprint, _)| (name, status, fingerprint))
                .collect::<Vec<_>>(),
            vec![
                (
                    "build".to_owned(),
                    StepStatus::Cached,
                    "fp-build".to_owned()
                ),
                (
                    "test".to_owned(),
                    StepStatus::Pending,
                    "fp-test-2".to_owned()
                ),
            ]
        );
        assert_eq!(
            ledger
                .find_passing("build", "fp-build", "in-1", None)
                .unwrap(),
            Some(PassingRecord {
                run_id: 2,
                output_hash: Some("out-1".to_owned())
            })
        );
        assert_eq!(
            ledger
                .find_passing("test", "fp-test-2", "in-2", None)
                .unwrap(),
            None
        );
        let earlier = ledger.latest_evidence("test", "tests", 2).unwrap().unwrap();
        assert_eq!(earlier.run_id, 1);
        assert_eq!(earlier.body, serde_json::json!({ "passed": 3 }));
        let dangling: i64 = ledger
            .conn()
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dangling, 0);

        // The migrated ledger takes new runs, and the old rows still count
        // as passing records.
        let run = ledger
            .begin_run("p", &GitState::default(), "all", &planned(&["build"]))
            .unwrap();
        assert_eq!(run, 3);
        ledger
            .apply(run, &[finished(0, StepStatus::Passed, &[])])
            .unwrap();
        assert_eq!(
            ledger
                .find_passing("build", "fingerprint of build", "inputs", None)
                .unwrap()
                .map(|r| r.run_id),
            Some(3)
        );
    }

    #[test]
    fn reopening_a_run_renumbers_its_steps_and_forgets_what_reruns_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let run = ledger
            .begin_run("p", &GitState::default(), "all", &planned(&["a", "b", "c"]))
            .unwrap();
        ledger
            .apply(
                run,
                &[
                    finished(0, StepStatus::Passed, &["tests"]),
                    finished(1, StepStatus::Passed, &["tests"]),
                    finished(2, StepStatus::Failed, &["tests"]),
                ],
            )
            .unwrap();

        // The plan changed: `b` is gone, `d` is new, `c` moved first; `a`
        // is kept, `c` reruns.
        ledger
            .reopen_run(run, &planned(&["c", "a", "d"]), &["a".to_owned()])
            .unwrap();
        assert_eq!(
            steps_of(&ledger, run),
            vec![
                (
                    "c".to_owned(),
                    StepStatus::Pending,
                    "fingerprint of c".to_owned(),
                    vec![]
                ),
                (
                    "a".to_owned(),
                    StepStatus::Passed,
                    "fingerprint of a".to_owned(),
                    vec!["tests".to_owned()]
                ),
                (
                    "d".to_owned(),
                    StepStatus::Pending,
                    "fingerprint of d".to_owned(),
                    vec![]
                ),
            ]
        );

        // `b` left the plan, and its evidence with it.
        let orphans: i64 = ledger
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM evidence WHERE run_id = ?1 AND step = 'b'",
                params![run],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0);

        // Writes name steps by their new positions.
        ledger
            .apply(
                run,
                &[
                    finished(0, StepStatus::Passed, &["scan"]),
                    finished(2, StepStatus::Passed, &[]),
                ],
            )
            .unwrap();
        let steps = steps_of(&ledger, run);
        assert_eq!(steps[0].1, StepStatus::Passed);
        assert_eq!(steps[0].3, vec!["scan".to_owned()]);
        assert_eq!(steps[2].1, StepStatus::Passed);

        let unplanned = ledger
            .apply(run, &[finished(3, StepStatus::Passed, &[])])
            .unwrap_err();
        assert!(
            matches!(unplanned, LedgerError::UnplannedStep { position: 3, .. }),
            "{unplanned}"
        );
    }
}
