//! Time series in SQLite, with downsampling and retention.
//!
//! The collector appends one scrape at a time ([`Store::append`]); reads
//! ([`Store::increase`], [`Store::range`], [`Store::quantile`]) serve the
//! SLO evaluation, `mlops monitor query` and the dashboard.
//!
//! **Where.** A database of its own, `.mlops/apm/<environment>/metrics.db`,
//! not the ledger: the collector writes every second while pipelines write
//! the ledger, and SQLite has one writer per file, so sharing it would make
//! a pipeline step wait on monitoring (and the reverse); retention deletes
//! and vacuums samples, which must never touch the evidence the ledger
//! keeps; and a monitoring database can be dropped and rebuilt without
//! losing a single verdict. What the ledger needs from monitoring (an SLO
//! check's verdict, a drift report) is recorded there as evidence.
//!
//! **What a point is.** A gauge's point is its value. A counter's point is
//! its *increase* since the previous scrape, computed at append time: a
//! value below the previous one is a reset (the target restarted) and the
//! whole new value is the increase, and the caller may declare a reset it
//! knows of (a target whose start time changed) so a restarted counter that
//! already climbed past its old value is not mistaken for a small increase.
//! The first scrape of a counter is its baseline and gives no point. Sums of
//! increases over a window are then plain sums, at any resolution: what an
//! SLO's burn rate and a rate chart need.
//!
//! **Downsampling and retention.** Raw points (one per scrape) are kept for
//! [`Retention::raw`]; [`Store::compact`] rolls complete buckets up into each
//! coarser tier (count, sum, min, max, last per bucket) before anything is
//! deleted, and deletes what each tier keeps no longer. Reads stitch the
//! tiers: the finest data where it is kept, coarser rollups for older
//! parts of a window. The database uses incremental auto-vacuum, so the
//! file shrinks back as retention deletes. With the defaults (raw for 1 h,
//! 1-minute rollups for 2 days, 10-minute rollups for 35 days), a week of
//! one-second samples of 300 series keeps about 1.1 M raw rows, 864 k
//! minute rows and 302 k ten-minute rows whatever the running time: about
//! 103 MiB as measured (`examples/tsdb_size.rs`, `docs/benchmarks.md`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// The database's file name in its directory.
pub const DB_FILE: &str = "metrics.db";

/// Milliseconds since the Unix epoch: the time of every point.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

fn ms(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as Millis
}

/// The schema, one migration per element; `PRAGMA user_version` counts
/// the ones applied.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    kind TEXT NOT NULL,
    last_raw REAL,
    last_ts INTEGER,
    UNIQUE (name, labels)
);
CREATE TABLE raw (
    series INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series, ts)
) WITHOUT ROWID;
CREATE TABLE rollup (
    tier INTEGER NOT NULL,
    series INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    last REAL NOT NULL,
    PRIMARY KEY (tier, series, ts)
) WITHOUT ROWID;
CREATE TABLE levels (
    level INTEGER PRIMARY KEY,
    resolution_ms INTEGER NOT NULL,
    kept_from INTEGER NOT NULL,
    rolled_until INTEGER NOT NULL
);
",
    "
CREATE TABLE alerts (
    slo TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    since INTEGER NOT NULL,
    evaluation TEXT NOT NULL,
    PRIMARY KEY (slo, rule)
);
CREATE TABLE alert_events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    slo TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    evaluation TEXT NOT NULL
);
CREATE INDEX alert_events_ts ON alert_events (ts);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    event INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    target TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE targets (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    last_ts INTEGER NOT NULL,
    up INTEGER NOT NULL,
    last_error TEXT,
    failures INTEGER NOT NULL
);
CREATE TABLE scrape_errors (
    ts INTEGER NOT NULL,
    target TEXT NOT NULL,
    error TEXT NOT NULL
);
CREATE INDEX scrape_errors_ts ON scrape_errors (ts);
",
    // An alert event keeps the payload it was sent with, so a delivery cut
    // short by the collector's death is made again when it starts. (Raw
    // points are not indexed by time: compaction's scan of an hour of
    // them costs less than the index's 16 bytes a row and its upkeep —
    // measured in docs/benchmarks.md.)
    "
ALTER TABLE alert_events ADD COLUMN payload TEXT;
",
    // Exemplars: requests a histogram bucket names (OpenMetrics), kept as
    // long as raw points.
    "
CREATE TABLE exemplars (
    ts INTEGER NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    request_id TEXT NOT NULL,
    value REAL NOT NULL,
    UNIQUE (name, labels, request_id)
);
CREATE INDEX exemplars_ts ON exemplars (ts);
",
];

/// A request a histogram's bucket pointed at when it was scraped (an
/// OpenMetrics exemplar): its id and the value it observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExemplarPoint {
    /// The bucket's series (its name and labels, `le` included).
    pub key: SeriesKey,
    /// The exemplar's `request_id` (or `trace_id`) label.
    pub request_id: String,
    /// The value it observed (a latency in seconds).
    pub value: f64,
    /// When: the exemplar's own timestamp, else its scrape's.
    pub ts: Millis,
}

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// A database operation failed.
    #[error("metrics database {path}: cannot {what}")]
    Sql {
        /// The database file (`:memory:` for an in-memory store).
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer mlops.
    #[error(
        "metrics database {path} has schema version {found}, newer than this mlops understands ({known}); upgrade mlops"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A reader found a database of an older schema (the collector
    /// upgrades it when it starts).
    #[error(
        "metrics database {path} has schema version {found}, older than this mlops ({known}): the collector upgrades it when it starts (`mlops monitor start`)"
    )]
    Outdated {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The version this build knows.
        known: i64,
    },
    /// The directory could not be made.
    #[error("cannot create {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A retention policy that cannot work.
    #[error("invalid retention: {0}")]
    Retention(String),
}

/// A series: a metric name and its labels (sorted by name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    /// The metric name.
    pub name: String,
    /// Label names to values.
    pub labels: BTreeMap<String, String>,
}

impl SeriesKey {
    /// A series of `name` with `labels`.
    pub fn new<K: Into<String>, V: Into<String>>(
        name: impl Into<String>,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        SeriesKey {
            name: name.into(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    fn labels_json(&self) -> String {
        serde_json::to_string(&self.labels).unwrap_or_else(|_| "{}".to_owned())
    }
}

impl fmt::Display for SeriesKey {
    /// `name{a="x",b="y"}`, values escaped as in the exposition format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.labels.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (k, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}=\"")?;
            for c in v.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

/// How a series' values are stored and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesKind {
    /// A cumulative count: stored as increases, read as sums and rates.
    Counter,
    /// A value at a time: stored as is, read as averages.
    Gauge,
}

impl SeriesKind {
    fn as_str(self) -> &'static str {
        match self {
            SeriesKind::Counter => "counter",
            SeriesKind::Gauge => "gauge",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "counter" {
            SeriesKind::Counter
        } else {
            SeriesKind::Gauge
        }
    }
}

/// One scraped value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Its series.
    pub key: SeriesKey,
    /// Counter (the cumulative value) or gauge.
    pub kind: SeriesKind,
    /// The value as scraped.
    pub value: f64,
}

/// A tier of rollups: buckets of `resolution`, kept for `keep`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The width of a bucket.
    pub resolution: Duration,
    /// How long its buckets are kept.
    pub keep: Duration,
}

/// How long points are kept, raw and rolled up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// How long raw points (one per scrape) are kept.
    pub raw: Duration,
    /// The rollup tiers, finest first.
    pub tiers: Vec<Tier>,
}

impl Default for Retention {
    /// Raw points for 1 h, 1-minute buckets for 2 days, 10-minute buckets
    /// for 35 days (an SLO period of 30 days and its longest alert window
    /// fit).
    fn default() -> Self {
        Retention {
            raw: Duration::from_secs(3600),
            tiers: vec![
                Tier {
                    resolution: Duration::from_secs(60),
                    keep: Duration::from_secs(2 * 86_400),
                },
                Tier {
                    resolution: Duration::from_secs(600),
                    keep: Duration::from_secs(35 * 86_400),
                },
            ],
        }
    }
}

impl Retention {
    /// Every tier's resolution divides the next one's and is kept at least
    /// one of the next tier's buckets; each tier keeps at least as long as
    /// the finer one.
    pub fn validate(&self) -> Result<(), TsdbError> {
        let bad = |m: String| Err(TsdbError::Retention(m));
        if self.raw.is_zero() {
            return bad("raw points must be kept for some time".into());
        }
        let mut prev_res = Duration::from_millis(1);
        let mut prev_keep = self.raw;
        for (i, t) in self.tiers.iter().enumerate() {
            let (res, keep) = (ms(t.resolution), ms(t.keep));
            if res <= 0 || res % ms(prev_res) != 0 {
                return bad(format!(
                    "tier {} resolution {:?} is not a multiple of {:?}",
                    i + 1,
                    t.resolution,
                    prev_res
                ));
            }
            if ms(prev_keep) < res {
                return bad(format!(
                    "the level before tier {} is kept {:?}, shorter than one of its buckets ({:?})",
                    i + 1,
                    prev_keep,
                    t.resolution
                ));
            }
            if keep < ms(prev_keep) {
                return bad(format!(
                    "tier {} is kept {:?}, shorter than the finer level's {:?}",
                    i + 1,
                    t.keep,
                    prev_keep
                ));
            }
            prev_res = t.resolution;
            prev_keep = t.keep;
        }
        Ok(())
    }
}

/// Which series a read takes: a name and label equalities.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selector {
    /// The metric name.
    pub name: String,
    /// Labels that must have these values.
    pub matchers: Vec<(String, String)>,
}

impl Selector {
    /// Every series of `name`.
    pub fn name(name: impl Into<String>) -> Self {
        Selector {
            name: name.into(),
            matchers: Vec::new(),
        }
    }

    /// Also require label `name` to be `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.matchers.push((name.into(), value.into()));
        self
    }

    /// Whether `key` is selected.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        key.name == self.name
            && self
                .matchers
                .iter()
                .all(|(k, v)| key.label(k) == Some(v.as_str()))
    }
}

/// A point of a read.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The start of the step it stands for.
    pub ts: Millis,
    /// A counter's rate per second over the step, or a gauge's average.
    pub value: f64,
}

/// A series and its points over a range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoints {
    /// The series.
    pub key: SeriesKey,
    /// Counter or gauge.
    pub kind: SeriesKind,
    /// One point per step that has data, in time order.
    pub points: Vec<Point>,
}

/// What [`Store::append`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Points written.
    pub written: usize,
    /// Counters seen for the first time (their baseline, no point).
    pub baselines: usize,
    /// Counters that went down (a reset) or were declared reset.
    pub resets: usize,
    /// Values skipped: NaN or infinite.
    pub skipped: usize,
    /// Samples of a series already given earlier in the same scrape:
    /// skipped, the first one counts.
    pub duplicates: usize,
    /// Counters whose previous value is older than the store's staleness
    /// bound ([`Store::set_stale_after`]): taken as a new baseline, so a
    /// gap in collection never lands as one burst.
    pub stale: usize,
    /// Samples older than what the finest tier has already rolled up (the
    /// clock went back): skipped, since no rollup would ever hold them.
    pub late: usize,
}

/// What [`Store::compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactOutcome {
    /// Buckets written into rollup tiers.
    pub rolled: usize,
    /// Rows deleted by retention.
    pub deleted: usize,
}

#[derive(Clone, Copy, Debug)]
struct SeriesState {
    id: i64,
    kind: SeriesKind,
    last_raw: Option<f64>,
    last_ts: Option<Millis>,
}

#[derive(Clone, Copy, Debug)]
struct Level {
    resolution: Millis,
    kept_from: Millis,
    rolled_until: Millis,
}

/// A time-series store in one SQLite file (or in memory).
pub struct Store {
    conn: Connection,
    path: PathBuf,
    retention: Retention,
    series: HashMap<SeriesKey, SeriesState>,
    stale_after: Millis,
}

/// How old a counter's previous value may be before the next one is a new
/// baseline rather than an increase: Prometheus' lookback.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(300);

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("series", &self.series.len())
            .finish()
    }
}

impl Store {
    /// Open (creating it and its directory if needed) the store at
    /// `dir/metrics.db`.
    pub fn open(dir: &Path, retention: Retention) -> Result<Self, TsdbError> {
        std::fs::create_dir_all(dir).map_err(|source| TsdbError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(sql_err(&path, "open the database"))?;
        Self::init(conn, path, retention)
    }

    /// Open the store at `dir/metrics.db` for reading only, as the
    /// collector left it: nothing is created, migrated or changed (the
    /// collector, its only writer, keeps writing meanwhile). The tiers are
    /// the database's own.
    pub fn open_read(dir: &Path) -> Result<Self, TsdbError> {
        let path = dir.join(DB_FILE);
        let sql = |what| sql_err(&path, what);
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(sql("open the database"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql("set the busy timeout"))?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql("read the schema version"))?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(TsdbError::TooNew { path, found, known });
        }
        if found < known {
            return Err(TsdbError::Outdated { path, found, known });
        }
        let resolutions: Vec<Millis> = {
            let mut stmt = conn
                .prepare("SELECT resolution_ms FROM levels ORDER BY level")
                .map_err(sql("read the tiers"))?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .map_err(sql("read the tiers"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql("read the tiers"))?
        };
        let retention = Retention {
            raw: Duration::ZERO,
            tiers: resolutions
                .iter()
                .skip(1)
                .map(|r| Tier {
                    resolution: Duration::from_millis(*r as u64),
                    keep: Duration::ZERO,
                })
                .collect(),
        };
        let series = load_series(&conn, &path)?;
        Ok(Store {
            conn,
            path,
            retention,
            series,
            stale_after: ms(DEFAULT_STALE_AFTER),
        })
    }

    /// A store in memory, for tests and one-off computations.
    pub fn in_memory(retention: Retention) -> Result<Self, TsdbError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(sql_err(&path, "open the database"))?;
        Self::init(conn, path, retention)
    }

    fn init(mut conn: Connection, path: PathBuf, retention: Retention) -> Result<Self, TsdbError> {
        retention.validate()?;
        let sql = |what| sql_err(&path, what);
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql("set the busy timeout"))?;
        // auto_vacuum takes effect only before the first table exists: a
        // new file gets it, an existing one keeps what it has.
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        )
        .map_err(sql("configure the database"))?;
        let known = MIGRATIONS.len() as i64;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql("begin a migration"))?;
        let found: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql("read the schema version"))?;
        if found > known {
            return Err(TsdbError::TooNew {
                path: path.clone(),
                found,
                known,
            });
        }
        for m in MIGRATIONS.iter().skip(found as usize) {
            tx.execute_batch(m).map_err(sql("migrate the schema"))?;
        }
        tx.pragma_update(None, "user_version", known)
            .map_err(sql("record the schema version"))?;
        // The levels follow the retention given: a changed resolution
        // starts that tier afresh (its old buckets are of another width).
        let mut resolutions = vec![1];
        resolutions.extend(retention.tiers.iter().map(|t| ms(t.resolution)));
        for (level, res) in resolutions.iter().enumerate() {
            let known: Option<Millis> = tx
                .query_row(
                    "SELECT resolution_ms FROM levels WHERE level = ?1",
                    [level as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("read the tiers"))?;
            if known != Some(*res) {
                if level > 0 {
                    tx.execute("DELETE FROM rollup WHERE tier = ?1", [level as i64])
                        .map_err(sql("reset a tier"))?;
                }
                tx.execute(
                    "INSERT OR REPLACE INTO levels (level, resolution_ms, kept_from, rolled_until) VALUES (?1, ?2, 0, 0)",
                    params![level as i64, res],
                )
                .map_err(sql("record the tiers"))?;
            }
        }
        tx.execute(
            "DELETE FROM levels WHERE level >= ?1",
            [resolutions.len() as i64],
        )
        .map_err(sql("record the tiers"))?;
        tx.execute(
            "DELETE FROM rollup WHERE tier >= ?1",
            [resolutions.len() as i64],
        )
        .map_err(sql("record the tiers"))?;
        tx.commit().map_err(sql("commit a migration"))?;

        let series = load_series(&conn, &path)?;
        Ok(Store {
            conn,
            path,
            retention,
            series,
            stale_after: ms(DEFAULT_STALE_AFTER),
        })
    }

    /// The connection, for the collector's own tables (alerts, targets)
    /// in the same file.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The database file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The retention policy in force.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// How old a counter's previous value may be for the next one to count
    /// as an increase ([`DEFAULT_STALE_AFTER`] unless set). A collector
    /// sets a few scrape intervals: after a longer gap (the collector was
    /// stopped, a target was unreachable) the next value is a baseline, so
    /// the gap's whole increase never lands in one instant and pages.
    pub fn set_stale_after(&mut self, after: Duration) {
        self.stale_after = ms(after).max(1);
    }

    /// Keep `exemplars`, each once (one scraped again is not a new row).
    /// Returns how many were new.
    pub fn append_exemplars(&mut self, exemplars: &[ExemplarPoint]) -> Result<usize, TsdbError> {
        if exemplars.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let sql = |what| sql_err(&path, what);
        let tx = self.conn.transaction().map_err(sql("begin an append"))?;
        let mut new = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO exemplars (ts, name, labels, request_id, value)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sql("prepare an append"))?;
            for e in exemplars.iter().filter(|e| e.value.is_finite()) {
                new += insert
                    .execute(params![
                        e.ts,
                        e.key.name,
                        e.key.labels_json(),
                        e.request_id,
                        e.value
                    ])
                    .map_err(sql("write an exemplar"))?;
            }
        }
        tx.commit().map_err(sql("commit an append"))?;
        Ok(new)
    }

    /// The exemplars of series `selector` takes over `[from, to)` whose
    /// value is at least `min_value`, the largest first, at most `limit`.
    pub fn exemplars(
        &self,
        selector: &Selector,
        from: Millis,
        to: Millis,
        min_value: f64,
        limit: usize,
    ) -> Result<Vec<ExemplarPoint>, TsdbError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT ts, labels, request_id, value FROM exemplars
                 WHERE name = ?1 AND ts >= ?2 AND ts < ?3 AND value >= ?4
                 ORDER BY value DESC, ts DESC",
            )
            .map_err(self.sql("read exemplars"))?;
        let mut rows = stmt
            .query(params![selector.name, from, to, min_value])
            .map_err(self.sql("read exemplars"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(self.sql("read exemplars"))? {
            let labels: String = r.get(1).map_err(self.sql("read exemplars"))?;
            let Ok(labels) = serde_json::from_str(&labels) else {
                continue;
            };
            let key = SeriesKey {
                name: selector.name.clone(),
                labels,
            };
            if !selector.matches(&key) {
                continue;
            }
            out.push(ExemplarPoint {
                key,
                ts: r.get(0).map_err(self.sql("read exemplars"))?,
                request_id: r.get(2).map_err(self.sql("read exemplars"))?,
                value: r.get(3).map_err(self.sql("read exemplars"))?,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A read transaction, so that one query sees one state of the file
    /// while the collector appends and compacts (none when one is open).
    fn snapshot(&self) -> Result<Option<rusqlite::Transaction<'_>>, TsdbError> {
        if !self.conn.is_autocommit() {
            return Ok(None);
        }
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.sql("begin a read"))?;
        // A deferred transaction takes its snapshot at the first read.
        tx.query_row("SELECT COUNT(*) FROM levels", [], |_| Ok(()))
            .map_err(self.sql("begin a read"))?;
        Ok(Some(tx))
    }

    /// Append one scrape taken at `ts`, in one transaction. With `reset`,
    /// every counter in `samples` is taken as restarted (its target's
    /// start time changed): its whole value is its increase.
    pub fn append(
        &mut self,
        ts: Millis,
        samples: &[Sample],
        reset: bool,
    ) -> Result<AppendOutcome, TsdbError> {
        let path = self.path.clone();
        let sql = |what| sql_err(&path, what);
        let mut out = AppendOutcome::default();
        let mut updates: HashMap<SeriesKey, SeriesState> = HashMap::new();
        let stale_after = self.stale_after;
        let tx = self.conn.transaction().map_err(sql("begin an append"))?;
        let rolled: Option<Millis> = tx
            .query_row("SELECT rolled_until FROM levels WHERE level = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("read the tiers"))?;
        if rolled.is_some_and(|until| ts < until) {
            out.late = samples.len();
            return Ok(out);
        }
        {
            let mut insert_series = tx
                .prepare_cached(
                    "INSERT INTO series (name, labels, kind) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name, labels) DO UPDATE SET kind = excluded.kind
                     RETURNING id",
                )
                .map_err(sql("prepare an append"))?;
            let mut add_counter = tx
                .prepare_cached(
                    "INSERT INTO raw (series, ts, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (series, ts) DO UPDATE SET value = value + excluded.value",
                )
                .map_err(sql("prepare an append"))?;
            let mut set_gauge = tx
                .prepare_cached(
                    "INSERT INTO raw (series, ts, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (series, ts) DO UPDATE SET value = excluded.value",
                )
                .map_err(sql("prepare an append"))?;
            let mut set_last = tx
                .prepare_cached("UPDATE series SET last_raw = ?2, last_ts = ?3 WHERE id = ?1")
                .map_err(sql("prepare an append"))?;
            for s in samples {
                if !s.value.is_finite() {
                    out.skipped += 1;
                    continue;
                }
                if updates.contains_key(&s.key) {
                    out.duplicates += 1;
                    continue;
                }
                let known = self
                    .series
                    .get(&s.key)
                    .copied()
                    .filter(|st| st.kind == s.kind);
                let mut state = match known {
                    Some(st) => st,
                    None => {
                        let id: i64 = insert_series
                            .query_row(
                                params![s.key.name, s.key.labels_json(), s.kind.as_str()],
                                |r| r.get(0),
                            )
                            .map_err(sql("record a series"))?;
                        SeriesState {
                            id,
                            kind: s.kind,
                            last_raw: None,
                            last_ts: None,
                        }
                    }
                };
                let stale = state
                    .last_ts
                    .is_some_and(|last| ts.saturating_sub(last) > stale_after);
                match s.kind {
                    SeriesKind::Gauge => {
                        set_gauge
                            .execute(params![state.id, ts, s.value])
                            .map_err(sql("write a point"))?;
                        out.written += 1;
                    }
                    SeriesKind::Counter => {
                        let increase = match state.last_raw {
                            Some(_) if stale => {
                                out.stale += 1;
                                None
                            }
                            None if !reset => {
                                out.baselines += 1;
                                None
                            }
                            None => {
                                out.resets += 1;
                                Some(s.value)
                            }
                            Some(last) if reset || s.value < last => {
                                out.resets += 1;
                                Some(s.value)
                            }
                            Some(last) => Some(s.value - last),
                        };
                        if let Some(inc) = increase {
                            add_counter
                                .execute(params![state.id, ts, inc])
                                .map_err(sql("write a point"))?;
                            out.written += 1;
                        }
                    }
                }
                state.last_raw = Some(s.value);
                state.last_ts = Some(ts);
                set_last
                    .execute(params![state.id, s.value, ts])
                    .map_err(sql("write a point"))?;
                updates.insert(s.key.clone(), state);
            }
        }
        tx.commit().map_err(sql("commit an append"))?;
        // Only what committed enters the cache.
        self.series.extend(updates);
        Ok(out)
    }

    fn levels(&self) -> Result<Vec<Level>, TsdbError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT resolution_ms, kept_from, rolled_until FROM levels ORDER BY level",
            )
            .map_err(self.sql("read the tiers"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Level {
                    resolution: r.get(0)?,
                    kept_from: r.get(1)?,
                    rolled_until: r.get(2)?,
                })
            })
            .map_err(self.sql("read the tiers"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.sql("read the tiers"))
    }

    /// Roll complete buckets up into each tier and delete what retention
    /// no longer keeps, as of `now`. Nothing is deleted before it is
    /// rolled up. Call it every minute or so; it does nothing when nothing
    /// is due.
    pub fn compact(&mut self, now: Millis) -> Result<CompactOutcome, TsdbError> {
        let path = self.path.clone();
        let sql = |what| sql_err(&path, what);
        let levels = self.levels()?;
        let mut out = CompactOutcome::default();
        let tx = self.conn.transaction().map_err(sql("begin a compaction"))?;
        // Roll up, finest first: tier i from level i - 1, complete buckets
        // only (a bucket is complete once `now` is past its end; for a
        // rollup source, once the source rolled past it).
        let mut complete_until = now;
        for (i, level) in levels.iter().enumerate().skip(1) {
            let res = level.resolution;
            let until = complete_until.div_euclid(res) * res;
            let from = if level.rolled_until > 0 {
                level.rolled_until
            } else {
                // First compaction: from the oldest point of the source.
                let oldest: Option<Millis> = if i == 1 {
                    tx.query_row("SELECT MIN(ts) FROM raw", [], |r| r.get(0))
                } else {
                    tx.query_row(
                        "SELECT MIN(ts) FROM rollup WHERE tier = ?1",
                        [(i - 1) as i64],
                        |r| r.get(0),
                    )
                }
                .map_err(sql("find the oldest point"))?;
                match oldest {
                    Some(t) => t.div_euclid(res) * res,
                    None => until,
                }
            };
            if until > from {
                out.rolled += roll_up(&tx, i, res, from, until).map_err(sql("roll up"))?;
                tx.execute(
                    "UPDATE levels SET rolled_until = ?2 WHERE level = ?1",
                    params![i as i64, until],
                )
                .map_err(sql("record a rollup"))?;
            }
            complete_until = until.max(level.rolled_until);
        }
        // Retention: level i keeps `keep_i`, cut at the next tier's bucket
        // boundary and never past what the next tier rolled up.
        let keeps: Vec<Millis> = std::iter::once(ms(self.retention.raw))
            .chain(self.retention.tiers.iter().map(|t| ms(t.keep)))
            .collect();
        let levels_now = {
            let mut stmt = tx
                .prepare("SELECT rolled_until FROM levels ORDER BY level")
                .map_err(sql("read the tiers"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, Millis>(0))
                .map_err(sql("read the tiers"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(sql("read the tiers"))?
        };
        for (i, keep) in keeps.iter().enumerate() {
            let mut cut = now - keep;
            if let Some(next) = levels.get(i + 1) {
                cut = cut.div_euclid(next.resolution) * next.resolution;
                cut = cut.min(levels_now[i + 1]);
            }
            if cut <= levels[i].kept_from {
                continue;
            }
            let deleted = if i == 0 {
                tx.execute("DELETE FROM raw WHERE ts < ?1", [cut])
            } else {
                tx.execute(
                    "DELETE FROM rollup WHERE tier = ?1 AND ts < ?2",
                    params![i as i64, cut],
                )
            }
            .map_err(sql("apply retention"))?;
            out.deleted += deleted;
            tx.execute(
                "UPDATE levels SET kept_from = ?2 WHERE level = ?1",
                params![i as i64, cut],
            )
            .map_err(sql("record retention"))?;
        }
        // Exemplars are kept as long as raw points.
        out.deleted += tx
            .execute("DELETE FROM exemplars WHERE ts < ?1", [now - keeps[0]])
            .map_err(sql("apply retention"))?;
        // The collector's logs (scrape failures, alert events and their
        // deliveries) are kept as long as the longest tier.
        let longest = keeps.iter().copied().max().unwrap_or(0);
        for table in ["scrape_errors", "alert_events", "deliveries"] {
            out.deleted += tx
                .execute(
                    &format!("DELETE FROM {table} WHERE ts < ?1"),
                    [now - longest],
                )
                .map_err(sql("apply retention"))?;
        }
        tx.commit().map_err(sql("commit a compaction"))?;
        if out.deleted > 0 {
            self.conn
                .execute_batch("PRAGMA incremental_vacuum;")
                .map_err(sql("vacuum"))?;
        }
        Ok(out)
    }

    /// The series `selector` takes, sorted.
    pub fn select(&self, selector: &Selector) -> Vec<(SeriesKey, SeriesKind)> {
        let mut found: Vec<_> = self
            .series
            .iter()
            .filter(|(k, _)| selector.matches(k))
            .map(|(k, s)| (k.clone(), s.kind))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Every series' name, sorted and deduplicated.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.series.keys().map(|k| k.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The pieces of `[from, to)` each level serves: the finest level
    /// where its points are kept, coarser tiers for older parts.
    fn pieces(levels: &[Level], from: Millis, to: Millis) -> Vec<(usize, Millis, Millis)> {
        let mut pieces = Vec::new();
        let mut end = to;
        for (i, level) in levels.iter().enumerate() {
            if end <= from {
                break;
            }
            let mut start = from.max(level.kept_from);
            if i > 0 {
                // A tier serves only what it rolled up.
                let until = level.rolled_until;
                if until <= start {
                    continue;
                }
                let piece_end = end.min(until);
                start = start.min(piece_end);
                pieces.push((i, start, piece_end));
            } else {
                start = start.min(end);
                pieces.push((0, start, end));
            }
            end = start;
        }
        pieces
    }

    /// Visit `(resolution, ts, count, sum)` of one series over
    /// `[from, to)`, stitched across levels (a raw point's resolution is
    /// 1 ms).
    fn scan(
        &self,
        id: i64,
        from: Millis,
        to: Millis,
        mut visit: impl FnMut(Millis, Millis, i64, f64),
    ) -> Result<(), TsdbError> {
        let levels = self.levels()?;
        for (level, start, end) in Self::pieces(&levels, from, to) {
            let res = levels.get(level).map_or(1, |l| l.resolution);
            if start >= end {
                continue;
            }
            if level == 0 {
                let mut stmt = self
                    .conn
                    .prepare_cached(
                        "SELECT ts, value FROM raw WHERE series = ?1 AND ts >= ?2 AND ts < ?3",
                    )
                    .map_err(self.sql("read points"))?;
                let mut rows = stmt
                    .query(params![id, start, end])
                    .map_err(self.sql("read points"))?;
                while let Some(r) = rows.next().map_err(self.sql("read points"))? {
                    let v: f64 = r.get(1).map_err(self.sql("read points"))?;
                    visit(res, r.get(0).map_err(self.sql("read points"))?, 1, v);
                }
            } else {
                let mut stmt = self
                    .conn
                    .prepare_cached(
                        "SELECT ts, count, sum FROM rollup
                         WHERE tier = ?1 AND series = ?2 AND ts >= ?3 AND ts < ?4",
                    )
                    .map_err(self.sql("read points"))?;
                let mut rows = stmt
                    .query(params![level as i64, id, start, end])
                    .map_err(self.sql("read points"))?;
                while let Some(r) = rows.next().map_err(self.sql("read points"))? {
                    visit(
                        res,
                        r.get(0).map_err(self.sql("read points"))?,
                        r.get(1).map_err(self.sql("read points"))?,
                        r.get(2).map_err(self.sql("read points"))?,
                    );
                }
            }
        }
        Ok(())
    }

    /// The total increase of the counters `selector` takes over
    /// `[from, to)` (gauges are ignored). At a rollup's resolution the
    /// window's edges are rounded to its buckets.
    pub fn increase(
        &self,
        selector: &Selector,
        from: Millis,
        to: Millis,
    ) -> Result<f64, TsdbError> {
        let _snapshot = self.snapshot()?;
        let mut total = 0.0;
        for (key, st) in &self.series {
            if st.kind != SeriesKind::Counter || !selector.matches(key) {
                continue;
            }
            self.scan(st.id, from, to, |_, _, _, sum| total += sum)?;
        }
        Ok(total)
    }

    /// Every selected series over `[from, to)` in steps of `step`: a
    /// counter's rate per second in each step, a gauge's average. Where
    /// the range is served by a rollup coarser than `step`, a counter's
    /// bucket is a rate over the bucket's width (its increase is not
    /// spread over finer steps: those steps have no point).
    pub fn range(
        &self,
        selector: &Selector,
        from: Millis,
        to: Millis,
        step: Duration,
    ) -> Result<Vec<SeriesPoints>, TsdbError> {
        let step = ms(step).max(1);
        let _snapshot = self.snapshot()?;
        let mut out = Vec::new();
        for (key, kind) in self.select(selector) {
            let id = self.series[&key].id;
            // Per step: points, their sum and the widest resolution seen.
            let mut buckets: BTreeMap<Millis, (i64, f64, Millis)> = BTreeMap::new();
            self.scan(id, from, to, |res, ts, count, sum| {
                let b = from + (ts - from).div_euclid(step) * step;
                let e = buckets.entry(b).or_default();
                e.0 += count;
                e.1 += sum;
                e.2 = e.2.max(res);
            })?;
            let points = buckets
                .into_iter()
                .map(|(ts, (count, sum, res))| Point {
                    ts,
                    value: match kind {
                        SeriesKind::Counter => sum / (step.max(res) as f64 / 1000.0),
                        SeriesKind::Gauge => sum / count.max(1) as f64,
                    },
                })
                .collect();
            out.push(SeriesPoints { key, kind, points });
        }
        Ok(out)
    }

    /// The `q`-quantile (0..=1) of histogram `name` (its `name_bucket`
    /// series, summed over every series `matchers` take) from the bucket
    /// increases over `[from, to)`, interpolated within a bucket as
    /// Prometheus' `histogram_quantile` does. `None` with no observations.
    pub fn quantile(
        &self,
        q: f64,
        name: &str,
        matchers: &[(String, String)],
        from: Millis,
        to: Millis,
    ) -> Result<Option<f64>, TsdbError> {
        let buckets = self.bucket_increases(name, matchers, from, to)?;
        Ok(histogram_quantile(q, &buckets))
    }

    /// The increase of each bucket (`le`, cumulative count) of histogram
    /// `name` over `[from, to)`, sorted by bound.
    pub fn bucket_increases(
        &self,
        name: &str,
        matchers: &[(String, String)],
        from: Millis,
        to: Millis,
    ) -> Result<Vec<(f64, f64)>, TsdbError> {
        let selector = Selector {
            name: format!("{name}_bucket"),
            matchers: matchers.to_vec(),
        };
        let _snapshot = self.snapshot()?;
        let mut by_le: BTreeMap<LeKey, f64> = BTreeMap::new();
        for (key, st) in &self.series {
            if st.kind != SeriesKind::Counter || !selector.matches(key) {
                continue;
            }
            let Some(le) = key.label("le").and_then(parse_le) else {
                continue;
            };
            let mut sum = 0.0;
            self.scan(st.id, from, to, |_, _, _, s| sum += s)?;
            *by_le.entry(LeKey(le)).or_default() += sum;
        }
        Ok(by_le.into_iter().map(|(k, v)| (k.0, v)).collect())
    }

    /// The database file's size in bytes (pages in use and free), or 0 in
    /// memory.
    pub fn size_bytes(&self) -> Result<u64, TsdbError> {
        let pages: i64 = self
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(self.sql("read the size"))?;
        let size: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(self.sql("read the size"))?;
        Ok((pages * size) as u64)
    }

    /// Rows held: raw points and rollup buckets per tier.
    pub fn row_counts(&self) -> Result<(u64, Vec<u64>), TsdbError> {
        let raw: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM raw", [], |r| r.get(0))
            .map_err(self.sql("count rows"))?;
        let mut tiers = Vec::new();
        for i in 1..=self.retention.tiers.len() {
            let n: i64 = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM rollup WHERE tier = ?1",
                    [i as i64],
                    |r| r.get(0),
                )
                .map_err(self.sql("count rows"))?;
            tiers.push(n as u64);
        }
        Ok((raw as u64, tiers))
    }

    fn sql(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> TsdbError + '_ {
        move |source| TsdbError::Sql {
            path: self.path.clone(),
            what,
            source,
        }
    }
}

/// Every series the database knows, with its kind and last raw value.
fn load_series(
    conn: &Connection,
    path: &Path,
) -> Result<HashMap<SeriesKey, SeriesState>, TsdbError> {
    let sql = |what| sql_err(path, what);
    let mut series = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT id, name, labels, kind, last_raw, last_ts FROM series")
        .map_err(sql("read the series"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<f64>>(4)?,
                r.get::<_, Option<Millis>>(5)?,
            ))
        })
        .map_err(sql("read the series"))?;
    for row in rows {
        let (id, name, labels, kind, last_raw, last_ts) = row.map_err(sql("read the series"))?;
        // A row this build cannot read is skipped, not fatal: its labels
        // came from an older mlops.
        let Ok(labels) = serde_json::from_str(&labels) else {
            continue;
        };
        series.insert(
            SeriesKey { name, labels },
            SeriesState {
                id,
                kind: SeriesKind::parse(&kind),
                last_raw,
                last_ts,
            },
        );
    }
    Ok(series)
}

fn sql_err(path: &Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> TsdbError {
    let path = path.to_owned();
    move |source| TsdbError::Sql { path, what, source }
}

/// A rollup bucket being built.
struct Bucket {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    last_ts: Millis,
    last: f64,
}

/// Write tier `tier`'s buckets of width `res` over `[from, until)` from
/// the level below it.
fn roll_up(
    tx: &rusqlite::Transaction<'_>,
    tier: usize,
    res: Millis,
    from: Millis,
    until: Millis,
) -> rusqlite::Result<usize> {
    let mut acc: BTreeMap<(i64, Millis), Bucket> = BTreeMap::new();
    let mut fold =
        |series: i64, ts: Millis, count: i64, sum: f64, min: f64, max: f64, last: f64| {
            let b = ts.div_euclid(res) * res;
            let e = acc.entry((series, b)).or_insert(Bucket {
                count: 0,
                sum: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                last_ts: Millis::MIN,
                last: 0.0,
            });
            e.count += count;
            e.sum += sum;
            e.min = e.min.min(min);
            e.max = e.max.max(max);
            if ts >= e.last_ts {
                e.last_ts = ts;
                e.last = last;
            }
        };
    if tier == 1 {
        let mut stmt =
            tx.prepare("SELECT series, ts, value FROM raw WHERE ts >= ?1 AND ts < ?2")?;
        let mut rows = stmt.query(params![from, until])?;
        while let Some(r) = rows.next()? {
            let v: f64 = r.get(2)?;
            fold(r.get(0)?, r.get(1)?, 1, v, v, v, v);
        }
    } else {
        let mut stmt = tx.prepare(
            "SELECT series, ts, count, sum, min, max, last FROM rollup
             WHERE tier = ?1 AND ts >= ?2 AND ts < ?3",
        )?;
        let mut rows = stmt.query(params![(tier - 1) as i64, from, until])?;
        while let Some(r) = rows.next()? {
            fold(
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            );
        }
    }
    let mut insert = tx.prepare(
        "INSERT OR REPLACE INTO rollup (tier, series, ts, count, sum, min, max, last)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for ((series, ts), b) in &acc {
        insert.execute(params![
            tier as i64,
            series,
            ts,
            b.count,
            b.sum,
            b.min,
            b.max,
            b.last
        ])?;
    }
    Ok(acc.len())
}

/// An `le` bound ordered as a number (`+Inf` last).
#[derive(Clone, Copy, Debug, PartialEq)]
struct LeKey(f64);
impl Eq for LeKey {}
impl PartialOrd for LeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for LeKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        s => s.parse().ok().filter(|v: &f64| !v.is_nan()),
    }
}

/// The `q`-quantile of a histogram given as cumulative counts per upper
/// bound (sorted by bound, `+Inf` last), as Prometheus'
/// `histogram_quantile`: linear interpolation within the bucket the rank
/// falls in, the first bucket's lower bound taken as 0 (when its bound is
/// positive), and the highest finite bound when the rank falls in `+Inf`.
/// `None` when there are no observations, no `+Inf` bucket or `q` is
/// outside `0..=1`.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let (last_bound, total) = *buckets.last()?;
    if last_bound != f64::INFINITY || total <= 0.0 {
        return None;
    }
    let rank = q * total;
    // Counts read one by one may be non-monotonic: take the running max.
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for (i, &(bound, count)) in buckets.iter().enumerate() {
        let count = count.max(prev_count);
        if count >= rank && count > 0.0 {
            if bound == f64::INFINITY {
                return Some(if i == 0 { 0.0 } else { buckets[i - 1].0 });
            }
            if i == 0 && bound <= 0.0 {
                return Some(bound);
            }
            let lower = if i == 0 { 0.0 } else { prev_bound };
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(lower + (bound - lower) * (rank - prev_count) / in_bucket);
        }
        prev_bound = bound;
        prev_count = count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            key: SeriesKey::new(name, labels.iter().copied()),
            kind: SeriesKind::Counter,
            value,
        }
    }

    fn gauge(name: &str, value: f64) -> Sample {
        Sample {
            key: SeriesKey::new(name, [("variant", "stable")]),
            kind: SeriesKind::Gauge,
            value,
        }
    }

    #[test]
    fn counters_become_increases_with_resets() {
        let mut s = Store::in_memory(Retention::default()).unwrap();
        let c = |v| counter("req_total", &[("variant", "stable")], v);
        let o = s.append(1_000, &[c(10.0)], false).unwrap();
        assert_eq!((o.written, o.baselines), (0, 1));
        s.append(2_000, &[c(15.0)], false).unwrap();
        // A reset: the value went down, all 3 are new.
        let o = s.append(3_000, &[c(3.0)], false).unwrap();
        assert_eq!(o.resets, 1);
        // A declared reset: 20 is new although it is above 3.
        s.append(4_000, &[c(20.0)], true).unwrap();
        s.append(5_000, &[c(21.0)], false).unwrap();
        let sel = Selector::name("req_total");
        assert_eq!(s.increase(&sel, 0, 10_000).unwrap(), 5.0 + 3.0 + 20.0 + 1.0);
        assert_eq!(s.increase(&sel, 3_000, 5_000).unwrap(), 23.0);
        assert_eq!(
            s.increase(&sel.clone().with("variant", "canary"), 0, 10_000)
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let mut s = Store::in_memory(Retention::default()).unwrap();
        let o = s
            .append(
                1_000,
                &[gauge("g", f64::NAN), gauge("g", f64::INFINITY)],
                false,
            )
            .unwrap();
        assert_eq!((o.written, o.skipped), (0, 2));
    }

    #[test]
    fn range_gives_rates_and_averages() {
        let mut s = Store::in_memory(Retention::default()).unwrap();
        for i in 0..=10 {
            let t = i * 1_000;
            s.append(
                t,
                &[
                    counter("req_total", &[("variant", "stable")], (i * 5) as f64),
                    gauge("in_flight", i as f64),
                ],
                false,
            )
            .unwrap();
        }
        let r = s
            .range(
                &Selector::name("req_total"),
                0,
                10_001,
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(r.len(), 1);
        // Steps [0,5s): increases at 1..4 s = 20 -> 4/s; [5,10s): 25 -> 5/s.
        let v: Vec<f64> = r[0].points.iter().map(|p| p.value).collect();
        assert_eq!(v, vec![4.0, 5.0, 1.0]);
        let g = s
            .range(
                &Selector::name("in_flight"),
                0,
                10_000,
                Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(g[0].points[0].value, 2.0);
        assert_eq!(g[0].points[1].value, 7.0);
    }

    /// Compaction rolls up before it deletes, reads stitch the tiers, and
    /// the rows held stay bounded however long it runs.
    #[test]
    fn compaction_keeps_sums_and_bounds_rows() {
        let retention = Retention {
            raw: Duration::from_secs(60),
            tiers: vec![
                Tier {
                    resolution: Duration::from_secs(10),
                    keep: Duration::from_secs(300),
                },
                Tier {
                    resolution: Duration::from_secs(60),
                    keep: Duration::from_secs(3600),
                },
            ],
        };
        let mut s = Store::in_memory(retention).unwrap();
        let mut max_rows = 0;
        // 2 hours of one-second scrapes, one request per second.
        for i in 0..=7200i64 {
            s.append(i * 1000, &[counter("req_total", &[], i as f64)], false)
                .unwrap();
            if i % 30 == 0 {
                s.compact(i * 1000).unwrap();
                let (raw, tiers) = s.row_counts().unwrap();
                max_rows = max_rows.max(raw + tiers.iter().sum::<u64>());
            }
        }
        let now = 7200 * 1000;
        let sel = Selector::name("req_total");
        // One point per second at 1..=7200 s, each an increase of 1.
        // The last 30 s: raw points.
        assert_eq!(s.increase(&sel, now - 30_000, now + 1).unwrap(), 31.0);
        // The last 4 minutes: raw, then 10 s buckets.
        assert_eq!(s.increase(&sel, now - 240_000, now + 1).unwrap(), 241.0);
        // The last 50 minutes: all three levels stitched.
        assert_eq!(s.increase(&sel, now - 3_000_000, now + 1).unwrap(), 3001.0);
        // Beyond the longest retention, nothing is left.
        assert_eq!(s.increase(&sel, 0, now - 3_700_000).unwrap(), 0.0);
        // Bounded: 60 s of raw points, 300 s of ten-second buckets and an
        // hour of minute buckets, plus what waits for the next compaction.
        assert!(max_rows <= 91 + 31 + 61 + 10, "{max_rows} rows");
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = |v: &[(f64, f64)]| histogram_quantile(0.5, v);
        assert_eq!(b(&[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        // 10 in (0,1], 10 in (1,2]: the median is the first bucket's top.
        assert_eq!(
            b(&[(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)]),
            Some(1.0)
        );
        assert_eq!(
            histogram_quantile(0.75, &[(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)]),
            Some(1.5)
        );
        // In +Inf: the highest finite bound.
        assert_eq!(
            histogram_quantile(0.99, &[(1.0, 10.0), (f64::INFINITY, 20.0)]),
            Some(1.0)
        );
        assert_eq!(histogram_quantile(1.5, &[(f64::INFINITY, 1.0)]), None);
    }

    #[test]
    fn store_survives_reopen_and_keeps_baselines() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path(), Retention::default()).unwrap();
            s.append(1_000, &[counter("c", &[], 100.0)], false).unwrap();
        }
        let mut s = Store::open(dir.path(), Retention::default()).unwrap();
        // The baseline was kept: 105 is an increase of 5, not a new series.
        s.append(2_000, &[counter("c", &[], 105.0)], false).unwrap();
        assert_eq!(s.increase(&Selector::name("c"), 0, 3_000).unwrap(), 5.0);
        assert!(s.size_bytes().unwrap() > 0);
        // A reader sees what the writer wrote and cannot write.
        let mut r = Store::open_read(dir.path()).unwrap();
        assert_eq!(r.increase(&Selector::name("c"), 0, 3_000).unwrap(), 5.0);
        assert_eq!(r.retention().tiers.len(), 2);
        assert!(r.append(3_000, &[counter("c", &[], 106.0)], false).is_err());
        assert!(Store::open_read(&dir.path().join("none")).is_err());
    }

    /// After a gap longer than the staleness bound, a counter's next value
    /// is a baseline: the gap's increase does not land in one point.
    #[test]
    fn a_gap_in_collection_is_a_new_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let c = |v| counter("c", &[], v);
        {
            let mut s = Store::open(dir.path(), Retention::default()).unwrap();
            s.set_stale_after(Duration::from_secs(5));
            s.append(1_000, &[c(10.0)], false).unwrap();
            s.append(2_000, &[c(12.0)], false).unwrap();
        }
        // A new collector, an hour later: 5000 requests went by unseen.
        let mut s = Store::open(dir.path(), Retention::default()).unwrap();
        s.set_stale_after(Duration::from_secs(5));
        let o = s.append(3_602_000, &[c(5_012.0)], false).unwrap();
        assert_eq!((o.stale, o.written), (1, 0));
        // Even declared reset: the gap's value is no burst either.
        let o = s.append(3_603_000, &[c(5_015.0)], false).unwrap();
        assert_eq!((o.stale, o.written), (0, 1));
        let o = s.append(3_700_000, &[c(3.0)], true).unwrap();
        assert_eq!((o.stale, o.resets, o.written), (1, 0, 0));
        let sel = Selector::name("c");
        assert_eq!(s.increase(&sel, 0, 4_000_000).unwrap(), 2.0 + 3.0);
    }

    /// A series given twice in one scrape counts once, counters and gauges
    /// alike, and the baseline is the first value.
    #[test]
    fn duplicate_series_in_one_scrape_count_once() {
        let mut s = Store::in_memory(Retention::default()).unwrap();
        let c = |v| counter("c", &[("a", "1")], v);
        s.append(1_000, &[c(10.0)], false).unwrap();
        let o = s
            .append(
                2_000,
                &[c(15.0), c(15.0), gauge("g", 1.0), gauge("g", 9.0)],
                false,
            )
            .unwrap();
        assert_eq!((o.written, o.duplicates), (2, 2));
        s.append(3_000, &[c(16.0)], false).unwrap();
        assert_eq!(s.increase(&Selector::name("c"), 0, 4_000).unwrap(), 6.0);
        let g = s
            .range(&Selector::name("g"), 0, 4_000, Duration::from_secs(10))
            .unwrap();
        assert_eq!(g[0].points[0].value, 1.0);
    }

    /// A point older than what the first tier rolled up (the clock went
    /// back) is refused rather than kept where no rollup takes it.
    #[test]
    fn points_behind_the_rollup_are_refused() {
        let mut s = Store::in_memory(Retention::default()).unwrap();
        s.append(100_000, &[gauge("g", 1.0)], false).unwrap();
        s.compact(200_000).unwrap();
        let o = s.append(90_000, &[gauge("g", 5.0)], false).unwrap();
        assert_eq!((o.late, o.written), (1, 0));
        let o = s.append(200_500, &[gauge("g", 5.0)], false).unwrap();
        assert_eq!((o.late, o.written), (0, 1));
    }

    /// A step finer than the rollup serving a range gives the rate over
    /// the rollup's bucket, not the bucket's sum over the step.
    #[test]
    fn range_finer_than_a_rollup_keeps_rates_true() {
        let retention = Retention {
            raw: Duration::from_secs(60),
            tiers: vec![Tier {
                resolution: Duration::from_secs(60),
                keep: Duration::from_secs(3600),
            }],
        };
        let mut s = Store::in_memory(retention).unwrap();
        // Two requests per second for ten minutes.
        for i in 0..=600i64 {
            s.append(i * 1000, &[counter("c", &[], (2 * i) as f64)], false)
                .unwrap();
        }
        s.compact(600_000).unwrap();
        s.compact(700_000).unwrap();
        let r = s
            .range(&Selector::name("c"), 0, 300_000, Duration::from_secs(10))
            .unwrap();
        let points = &r[0].points;
        assert!(!points.is_empty());
        for p in points {
            assert!((p.value - 2.0).abs() < 0.05, "{p:?} is not 2/s");
        }
    }

    #[test]
    fn bad_retention_is_refused() {
        let r = Retention {
            raw: Duration::from_secs(60),
            tiers: vec![Tier {
                resolution: Duration::from_secs(7),
                keep: Duration::from_secs(30),
            }],
        };
        assert!(Store::in_memory(r).is_err());
    }
}
