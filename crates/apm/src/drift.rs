//! Data and prediction drift between a reference sample and live inputs,
//! per feature.
//!
//! [`Dataset::read`] streams a CSV file (a header row) or JSON lines (one
//! object per line) into typed columns; [`compare`] tests each feature of
//! the current data against the reference and decides with effect sizes
//! ([`Thresholds`]): p-values alone flag everything on large samples.
//!
//! - A **numeric** feature (every present value a number) gets the
//!   population stability index over 10 quantile bins of the reference,
//!   the two-sample Kolmogorov-Smirnov test, and the Wasserstein-1
//!   distance divided by the reference's standard deviation (scale-free;
//!   by its interquartile range when the deviation is 0, raw when both
//!   are). It drifted when `PSI ≥ psi`, or `W₁/σ ≥ wasserstein`, or
//!   `D ≥ ks` with `p < alpha`.
//! - A **categorical** feature (any present value not a number: strings,
//!   booleans) gets the chi-square test of homogeneity of the two samples'
//!   category counts and the Jensen-Shannon distance (base 2) between their
//!   distributions. It drifted when `JS ≥ js` and `p < alpha`.
//! - A feature with fewer than `min_samples` present values on either side
//!   is **insufficient data**, never drift.
//!
//! Missing values (an empty CSV field, `null` or an absent key) are
//! counted, not tested; a feature in only one of the data sets is reported.
//! Memory: a numeric column holds its values (8 bytes each: the exact
//! tests need them), a categorical one its distinct values' counts. Past
//! the data set's memory budget ([`ReadOptions::memory`], 1 GiB by
//! default) numeric columns spill to files of their own in a temporary
//! directory, and [`compare`] loads one column per side per thread at a
//! time: the memory a comparison holds is the budget, or two columns per
//! thread, whichever is larger.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlops_release::stats;
use serde::Serialize;

/// What can go wrong reading a data set.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line or record is malformed.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The file has no rows.
    #[error("{0} has no rows")]
    Empty(PathBuf),
}

/// How a data set is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Bytes of numeric values held in memory before columns spill to
    /// temporary files.
    pub memory: u64,
}

impl Default for ReadOptions {
    /// A budget of 1 GiB.
    fn default() -> Self {
        ReadOptions { memory: 1 << 30 }
    }
}

/// The memory budget of one data set being read, and where spilled
/// columns go.
#[derive(Debug)]
struct Spill {
    budget: u64,
    held: u64,
    /// Created at the first spill; removed with the data set.
    dir: Option<Arc<tempfile::TempDir>>,
    next: usize,
    /// The first write that failed (reported when reading ends).
    error: Option<std::io::Error>,
}

impl Spill {
    fn new(options: ReadOptions) -> Self {
        Spill {
            budget: options.memory,
            held: 0,
            dir: None,
            next: 0,
            error: None,
        }
    }

    fn over(&self) -> bool {
        self.held > self.budget
    }

    /// A new file for a column's values.
    fn file(&mut self) -> std::io::Result<(PathBuf, std::io::BufWriter<std::fs::File>)> {
        if self.dir.is_none() {
            self.dir = Some(Arc::new(
                tempfile::Builder::new().prefix("mlops-drift-").tempdir()?,
            ));
        }
        let dir = self
            .dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default();
        self.next += 1;
        let path = dir.join(format!("column-{}.f64", self.next));
        let file = std::fs::File::create(&path)?;
        Ok((path, std::io::BufWriter::with_capacity(64 << 10, file)))
    }
}

/// A numeric column's values: in memory, then (past the budget) in a file.
#[derive(Debug, Default)]
struct Numbers {
    memory: Vec<f64>,
    file: Option<(PathBuf, Option<std::io::BufWriter<std::fs::File>>)>,
    len: u64,
}

impl Numbers {
    fn push(&mut self, x: f64, spill: &mut Spill) {
        self.len += 1;
        if self.file.is_none() {
            self.memory.push(x);
            spill.held += 8;
            if !spill.over() {
                return;
            }
            // Over the budget: this column moves to its file.
            match spill.file() {
                Ok((path, out)) => {
                    self.file = Some((path, Some(out)));
                    spill.held -= 8 * self.memory.len() as u64;
                    let held = std::mem::take(&mut self.memory);
                    self.write(&held, spill);
                }
                Err(e) => {
                    spill.error.get_or_insert(e);
                }
            }
            return;
        }
        self.write(&[x], spill);
    }

    fn write(&mut self, xs: &[f64], spill: &mut Spill) {
        if let Some((_, Some(out))) = &mut self.file {
            for x in xs {
                if let Err(e) = out.write_all(&x.to_le_bytes()) {
                    spill.error.get_or_insert(e);
                    return;
                }
            }
        }
    }

    /// Flush the file, once reading ends.
    fn finish(&mut self, spill: &mut Spill) {
        if let Some((_, out)) = &mut self.file
            && let Some(mut w) = out.take()
            && let Err(e) = w.flush()
        {
            spill.error.get_or_insert(e);
        }
    }

    /// Every value, in the order read.
    fn values(&self) -> std::io::Result<Cow<'_, [f64]>> {
        let Some((path, _)) = &self.file else {
            return Ok(Cow::Borrowed(&self.memory));
        };
        // Read in blocks straight into the values: no second copy.
        let mut out = Vec::with_capacity(self.len as usize);
        let mut file = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path)?);
        let mut block = [0u8; 1 << 16];
        loop {
            let n = read_full(&mut file, &mut block)?;
            out.extend(
                block[..n - n % 8]
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            );
            if n < block.len() {
                break;
            }
        }
        out.extend_from_slice(&self.memory);
        Ok(Cow::Owned(out))
    }
}

/// Fill `block` from `r` as far as it goes: fewer bytes only at the end.
fn read_full(r: &mut impl std::io::Read, block: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < block.len() {
        match r.read(&mut block[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A column's values.
#[derive(Debug)]
enum Values {
    Numeric(Numbers),
    Categorical(HashMap<String, u64>),
}

/// One feature's values in a data set.
#[derive(Debug)]
struct Column {
    values: Values,
    missing: u64,
}

impl Column {
    fn new() -> Self {
        Column {
            values: Values::Numeric(Numbers::default()),
            missing: 0,
        }
    }

    fn present(&self) -> u64 {
        match &self.values {
            Values::Numeric(v) => v.len,
            Values::Categorical(m) => m.values().sum(),
        }
    }

    /// Adds a value given as text (a CSV field, a JSON string).
    fn push_text(&mut self, text: &str, spill: &mut Spill) {
        let t = text.trim();
        if t.is_empty() {
            self.missing += 1;
            return;
        }
        match (&mut self.values, t.parse::<f64>()) {
            (Values::Numeric(v), Ok(x)) if x.is_finite() => v.push(x, spill),
            _ => self.push_category(t.to_owned(), spill),
        }
    }

    fn push_number(&mut self, x: f64, spill: &mut Spill) {
        match &mut self.values {
            Values::Numeric(v) if x.is_finite() => v.push(x, spill),
            _ => self.push_category(format_number(x), spill),
        }
    }

    fn push_category(&mut self, c: String, spill: &mut Spill) {
        if let Values::Numeric(v) = &mut self.values {
            // The column turns out categorical: its numbers become
            // categories.
            v.finish(spill);
            let mut counts: HashMap<String, u64> = HashMap::new();
            match v.values() {
                Ok(values) => {
                    for x in values.iter() {
                        *counts.entry(format_number(*x)).or_default() += 1;
                    }
                }
                Err(e) => {
                    spill.error.get_or_insert(e);
                }
            }
            spill.held = spill.held.saturating_sub(8 * v.memory.len() as u64);
            if let Some((path, _)) = &v.file {
                let _ = std::fs::remove_file(path);
            }
            self.values = Values::Categorical(counts);
        }
        if let Values::Categorical(m) = &mut self.values {
            *m.entry(c).or_default() += 1;
        }
    }
}

fn format_number(x: f64) -> String {
    format!("{x}")
}

/// A data set read into columns.
#[derive(Debug)]
pub struct Dataset {
    /// Where it came from.
    pub path: PathBuf,
    /// Rows read.
    pub rows: u64,
    columns: BTreeMap<String, Column>,
    /// Values skipped because they were nested (arrays, objects).
    pub nested_skipped: u64,
    /// A CSV's header order.
    order: Option<Vec<String>>,
    /// The memory budget and the spilled columns' directory (kept while
    /// the data set lives).
    spill: Spill,
    /// The directories of columns taken from other data sets.
    keep: Vec<Arc<tempfile::TempDir>>,
}

impl Dataset {
    /// Read `path`: JSON lines when its name ends in `.jsonl`, `.ndjson`
    /// or `.json` (or its first byte is `{`), else CSV with a header row.
    pub fn read(path: &Path) -> Result<Self, DriftError> {
        Self::read_with(path, ReadOptions::default())
    }

    /// [`read`](Self::read) within a memory budget of `options`.
    pub fn read_with(path: &Path, options: ReadOptions) -> Result<Self, DriftError> {
        let read_err = |source| DriftError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let json = match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson" | "json") => true,
            Some("csv") => false,
            _ => reader.fill_buf().map_err(read_err)?.first() == Some(&b'{'),
        };
        let mut set = if json {
            Self::read_json_lines(path, reader, options)?
        } else {
            Self::read_csv(path, reader, options)?
        };
        set.finish();
        if let Some(source) = set.spill.error.take() {
            return Err(DriftError::Read {
                path: set
                    .spill
                    .dir
                    .as_ref()
                    .map_or_else(|| path.to_owned(), |d| d.path().to_owned()),
                source,
            });
        }
        if set.rows == 0 {
            return Err(DriftError::Empty(path.to_owned()));
        }
        Ok(set)
    }

    /// Flush the spilled columns.
    fn finish(&mut self) {
        for c in self.columns.values_mut() {
            if let Values::Numeric(n) = &mut c.values {
                n.finish(&mut self.spill);
            }
        }
    }

    fn read_csv(
        path: &Path,
        reader: impl std::io::Read,
        options: ReadOptions,
    ) -> Result<Self, DriftError> {
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(reader);
        let malformed = |e: csv::Error| {
            let line = e.position().map_or(0, |p| p.line());
            DriftError::Malformed {
                path: path.to_owned(),
                line,
                message: e.to_string(),
            }
        };
        let headers: Vec<String> = csv
            .headers()
            .map_err(malformed)?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        if headers.is_empty() || headers.iter().all(String::is_empty) {
            return Err(DriftError::Malformed {
                path: path.to_owned(),
                line: 1,
                message: "no header row".to_owned(),
            });
        }
        let mut seen = BTreeSet::new();
        for h in &headers {
            if !seen.insert(h) {
                return Err(DriftError::Malformed {
                    path: path.to_owned(),
                    line: 1,
                    message: format!("column `{h}` appears twice in the header"),
                });
            }
        }
        let mut columns: Vec<Column> = headers.iter().map(|_| Column::new()).collect();
        let mut spill = Spill::new(options);
        let mut rows = 0;
        let mut record = csv::StringRecord::new();
        while csv.read_record(&mut record).map_err(malformed)? {
            rows += 1;
            for (c, field) in columns.iter_mut().zip(record.iter()) {
                c.push_text(field, &mut spill);
            }
        }
        Ok(Dataset {
            path: path.to_owned(),
            rows,
            order: Some(headers.clone()),
            columns: headers.into_iter().zip(columns).collect(),
            nested_skipped: 0,
            spill,
            keep: Vec::new(),
        })
    }

    /// A data set from JSON objects (one per row), as JSON lines are read;
    /// `label` names it in reports.
    pub fn from_objects(
        label: impl Into<PathBuf>,
        objects: impl IntoIterator<Item = serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        Self::objects_with(label, objects, ReadOptions::default())
    }

    fn objects_with(
        label: impl Into<PathBuf>,
        objects: impl IntoIterator<Item = serde_json::Map<String, serde_json::Value>>,
        options: ReadOptions,
    ) -> Self {
        let mut set = Dataset {
            path: label.into(),
            rows: 0,
            columns: BTreeMap::new(),
            nested_skipped: 0,
            order: None,
            spill: Spill::new(options),
            keep: Vec::new(),
        };
        for object in objects {
            set.push_object(&object);
        }
        set.finish();
        set
    }

    fn push_object(&mut self, object: &serde_json::Map<String, serde_json::Value>) {
        // A key first seen now was missing from every earlier row.
        for key in object.keys() {
            if !self.columns.contains_key(key) {
                let mut c = Column::new();
                c.missing = self.rows;
                self.columns.insert(key.clone(), c);
            }
        }
        let spill = &mut self.spill;
        for (key, c) in self.columns.iter_mut() {
            match object.get(key) {
                None | Some(serde_json::Value::Null) => c.missing += 1,
                Some(serde_json::Value::Number(n)) => {
                    c.push_number(n.as_f64().unwrap_or(f64::NAN), spill)
                }
                Some(serde_json::Value::String(s)) => c.push_text(s, spill),
                Some(serde_json::Value::Bool(b)) => c.push_category(b.to_string(), spill),
                Some(_) => {
                    self.nested_skipped += 1;
                    c.missing += 1;
                }
            }
        }
        self.rows += 1;
    }

    /// Without the columns `names`.
    pub fn without(mut self, names: &[String]) -> Self {
        self.columns.retain(|k, _| !names.contains(k));
        self
    }

    /// With column `from` named `to` (nothing when there is no `from`).
    pub fn renamed(mut self, from: &str, to: &str) -> Self {
        if let Some(c) = self.columns.remove(from) {
            self.columns.insert(to.to_owned(), c);
        }
        self
    }

    /// With `other`'s columns too (each column is compared on its own, so
    /// their rows need not line up).
    pub fn with_columns_of(mut self, other: Dataset) -> Self {
        self.rows = self.rows.max(other.rows);
        self.nested_skipped += other.nested_skipped;
        self.columns.extend(other.columns);
        self.order = None;
        // Its spilled columns' directory lives as long as this one.
        self.keep.extend(other.spill.dir);
        self.keep.extend(other.keep);
        self
    }

    /// The column names, in the file's order for a CSV (sorted for JSON).
    pub fn column_names(&self) -> Vec<String> {
        match &self.order {
            Some(order) => order
                .iter()
                .filter(|c| self.columns.contains_key(*c))
                .cloned()
                .collect(),
            None => self.columns.keys().cloned().collect(),
        }
    }

    fn read_json_lines(
        path: &Path,
        reader: impl BufRead,
        options: ReadOptions,
    ) -> Result<Self, DriftError> {
        let mut set = Dataset::objects_with(path, std::iter::empty(), options);
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| DriftError::Read {
                path: path.to_owned(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| DriftError::Malformed {
                    path: path.to_owned(),
                    line: i as u64 + 1,
                    message: format!("not JSON: {e}"),
                })?;
            let serde_json::Value::Object(object) = value else {
                return Err(DriftError::Malformed {
                    path: path.to_owned(),
                    line: i as u64 + 1,
                    message: "not a JSON object".to_owned(),
                });
            };
            set.push_object(&object);
        }
        Ok(set)
    }

    /// The feature names, sorted.
    pub fn features(&self) -> Vec<&str> {
        self.columns.keys().map(String::as_str).collect()
    }
}

/// The thresholds a drift decision uses; the defaults are common choices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// PSI at or above which a numeric feature drifted (0.2: "significant").
    pub psi: f64,
    /// Wasserstein-1 over the reference's standard deviation at or above
    /// which a numeric feature drifted (0.1).
    pub wasserstein: f64,
    /// The KS statistic at or above which (with `p < alpha`) a numeric
    /// feature drifted (0.1).
    pub ks: f64,
    /// The Jensen-Shannon distance at or above which (with the chi-square
    /// test's `p < alpha`) a categorical feature drifted (0.1).
    pub js: f64,
    /// The significance level of the KS and chi-square tests (0.01).
    pub alpha: f64,
    /// Fewer present values than this on either side is insufficient data
    /// (100).
    pub min_samples: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            psi: 0.2,
            wasserstein: 0.1,
            ks: 0.1,
            js: 0.1,
            alpha: 0.01,
            min_samples: 100,
        }
    }
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestValue {
    /// `psi`, `ks`, `wasserstein`, `chi-square`, `jensen-shannon`.
    pub test: &'static str,
    /// Its value (the statistic or the distance).
    pub value: f64,
    /// Its p-value, for the hypothesis tests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The threshold it is compared with, if it decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Whether it says drift.
    pub drift: bool,
}

/// A feature's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// No test says drift.
    NoDrift,
    /// A test says drift.
    Drift,
    /// Too few values to say.
    InsufficientData,
}

impl Verdict {
    /// How it reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NoDrift => "no drift",
            Verdict::Drift => "drift",
            Verdict::InsufficientData => "insufficient data",
        }
    }
}

/// One feature compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    /// The feature.
    pub feature: String,
    /// `numeric` or `categorical`.
    pub kind: &'static str,
    /// Present values in the reference.
    pub reference_n: u64,
    /// Present values in the current data.
    pub current_n: u64,
    /// Missing values in the reference.
    pub reference_missing: u64,
    /// Missing values in the current data.
    pub current_missing: u64,
    /// The tests.
    pub tests: Vec<TestValue>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in words.
    pub reason: String,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// The reference file.
    pub reference: String,
    /// The current file.
    pub current: String,
    /// Rows of each.
    pub reference_rows: u64,
    /// Rows of the current data.
    pub current_rows: u64,
    /// The thresholds used.
    pub thresholds: Thresholds,
    /// Each feature in both, sorted by name.
    pub features: Vec<FeatureDrift>,
    /// Features only in the reference.
    pub only_in_reference: Vec<String>,
    /// Features only in the current data.
    pub only_in_current: Vec<String>,
    /// The features that drifted.
    pub drifted: Vec<String>,
    /// `drift` when any feature drifted, `insufficient data` when none
    /// did and some could not be judged, else `no drift`.
    pub verdict: Verdict,
}

/// Compare every feature of `current` with `reference`, the features
/// tested in parallel (one thread per core).
pub fn compare(reference: &Dataset, current: &Dataset, t: &Thresholds) -> DriftReport {
    let shared: Vec<(&String, &Column, &Column)> = reference
        .columns
        .iter()
        .filter_map(|(k, r)| current.columns.get(k).map(|c| (k, r, c)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(shared.len().max(1));
    let mut features: Vec<FeatureDrift> = std::thread::scope(|scope| {
        let chunks: Vec<_> = shared
            .chunks(shared.len().div_ceil(threads).max(1))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(name, r, c)| feature(name, r, c, t))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    features.sort_by(|a, b| a.feature.cmp(&b.feature));
    let only = |a: &Dataset, b: &Dataset| -> Vec<String> {
        a.columns
            .keys()
            .filter(|k| !b.columns.contains_key(*k))
            .cloned()
            .collect()
    };
    let drifted: Vec<String> = features
        .iter()
        .filter(|f| f.verdict == Verdict::Drift)
        .map(|f| f.feature.clone())
        .collect();
    let verdict = if !drifted.is_empty() {
        Verdict::Drift
    } else if features.is_empty()
        || features
            .iter()
            .any(|f| f.verdict == Verdict::InsufficientData)
    {
        Verdict::InsufficientData
    } else {
        Verdict::NoDrift
    };
    DriftReport {
        reference: reference.path.display().to_string(),
        current: current.path.display().to_string(),
        reference_rows: reference.rows,
        current_rows: current.rows,
        thresholds: *t,
        features,
        only_in_reference: only(reference, current),
        only_in_current: only(current, reference),
        drifted,
        verdict,
    }
}

/// The reference's spread for the Wasserstein normalization: standard
/// deviation, else interquartile range, else 1.
fn spread(sorted: &[f64]) -> f64 {
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let var = sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    if var > 0.0 {
        return var.sqrt();
    }
    let q = |p: f64| sorted[((n - 1.0) * p).round() as usize];
    let iqr = q(0.75) - q(0.25);
    if iqr > 0.0 { iqr } else { 1.0 }
}

fn feature(name: &str, r: &Column, c: &Column, t: &Thresholds) -> FeatureDrift {
    let (rn, cn) = (r.present(), c.present());
    let mut out = FeatureDrift {
        feature: name.to_owned(),
        kind: "numeric",
        reference_n: rn,
        current_n: cn,
        reference_missing: r.missing,
        current_missing: c.missing,
        tests: Vec::new(),
        verdict: Verdict::NoDrift,
        reason: String::new(),
    };
    // A feature categorical on either side is compared as categories.
    let categorical = |col: &Column| -> std::io::Result<HashMap<String, u64>> {
        Ok(match &col.values {
            Values::Categorical(m) => m.clone(),
            Values::Numeric(v) => {
                let mut m = HashMap::new();
                for x in v.values()?.iter() {
                    *m.entry(format_number(*x)).or_default() += 1;
                }
                m
            }
        })
    };
    let unreadable = |mut out: FeatureDrift, e: std::io::Error| {
        out.verdict = Verdict::InsufficientData;
        out.reason = format!("cannot read the values spilled to disk: {e}");
        out
    };
    let numeric = matches!(
        (&r.values, &c.values),
        (Values::Numeric(_), Values::Numeric(_))
    );
    if !numeric {
        out.kind = "categorical";
    }
    if rn < t.min_samples || cn < t.min_samples {
        out.verdict = Verdict::InsufficientData;
        out.reason = format!(
            "{rn} reference and {cn} current values; at least {} each are needed",
            t.min_samples
        );
        return out;
    }
    if let (Values::Numeric(a), Values::Numeric(b)) = (&r.values, &c.values) {
        let (a, b) = match (a.values(), b.values()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return unreadable(out, e),
        };
        let (sa, sb) = (sorted(a), sorted(b));
        match stats::psi_sorted_reference(&sa, &sb, 10) {
            Ok(v) => out.tests.push(TestValue {
                test: "psi",
                value: v,
                p_value: None,
                threshold: Some(t.psi),
                drift: v >= t.psi,
            }),
            Err(e) => out.reason = e.to_string(),
        }
        match stats::ks_two_sample_sorted(&sa, &sb) {
            Ok(o) => out.tests.push(TestValue {
                test: "ks",
                value: o.statistic,
                p_value: Some(o.p_value),
                threshold: Some(t.ks),
                drift: o.statistic >= t.ks && o.p_value < t.alpha,
            }),
            Err(e) => out.reason = e.to_string(),
        }
        let w = stats::wasserstein_sorted(&sa, &sb);
        let scale = spread(&sa);
        out.tests.push(TestValue {
            test: "wasserstein",
            value: w / scale,
            p_value: None,
            threshold: Some(t.wasserstein),
            drift: w / scale >= t.wasserstein,
        });
    } else {
        let (ra, ca) = match (categorical(r), categorical(c)) {
            (Ok(ra), Ok(ca)) => (ra, ca),
            (Err(e), _) | (_, Err(e)) => return unreadable(out, e),
        };
        let keys: BTreeSet<&String> = ra.keys().chain(ca.keys()).collect();
        let a: Vec<u64> = keys
            .iter()
            .map(|k| ra.get(*k).copied().unwrap_or(0))
            .collect();
        let b: Vec<u64> = keys
            .iter()
            .map(|k| ca.get(*k).copied().unwrap_or(0))
            .collect();
        let p = match stats::chi_square_homogeneity(&a, &b) {
            Ok(o) => {
                out.tests.push(TestValue {
                    test: "chi-square",
                    value: o.statistic,
                    p_value: Some(o.p_value),
                    threshold: None,
                    drift: false,
                });
                Some(o.p_value)
            }
            // One category on both sides: identical distributions.
            Err(_) => None,
        };
        let af: Vec<f64> = a.iter().map(|x| *x as f64).collect();
        let bf: Vec<f64> = b.iter().map(|x| *x as f64).collect();
        if let Ok(js) = stats::jensen_shannon(&af, &bf) {
            out.tests.push(TestValue {
                test: "jensen-shannon",
                value: js,
                p_value: None,
                threshold: Some(t.js),
                drift: js >= t.js && p.is_some_and(|p| p < t.alpha),
            });
        }
    }
    let over: Vec<String> = out
        .tests
        .iter()
        .filter(|x| x.drift)
        .map(|x| format!("{} {:.3} ≥ {}", x.test, x.value, x.threshold.unwrap_or(0.0)))
        .collect();
    if over.is_empty() {
        out.reason = "every test within its threshold".to_owned();
    } else {
        out.verdict = Verdict::Drift;
        out.reason = over.join(", ");
    }
    out
}

fn sorted(v: Cow<'_, [f64]>) -> Vec<f64> {
    let mut s = v.into_owned();
    s.sort_unstable_by(f64::total_cmp);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn csv(rows: impl Iterator<Item = (f64, &'static str)>) -> String {
        let mut s = String::from("x,color\n");
        for (x, c) in rows {
            s.push_str(&format!("{x},{c}\n"));
        }
        s
    }

    #[test]
    fn same_data_has_no_drift_and_shifted_data_has() {
        let dir = tempfile::tempdir().unwrap();
        let colors = ["red", "green", "blue"];
        let base = |i: usize| ((i * 7919) % 1000) as f64 / 100.0;
        let r = write(
            dir.path(),
            "r.csv",
            &csv((0..2000).map(|i| (base(i), colors[i % 3]))),
        );
        let same = write(
            dir.path(),
            "s.csv",
            &csv((0..1500).map(|i| (base(i + 3), colors[(i + 1) % 3]))),
        );
        let shifted = write(
            dir.path(),
            "d.csv",
            &csv((0..1500).map(|i| (base(i) + 2.0, if i % 4 == 0 { "red" } else { "blue" }))),
        );
        let t = Thresholds::default();
        let reference = Dataset::read(&r).unwrap();
        let report = compare(&reference, &Dataset::read(&same).unwrap(), &t);
        assert_eq!(report.verdict, Verdict::NoDrift, "{report:#?}");
        let report = compare(&reference, &Dataset::read(&shifted).unwrap(), &t);
        assert_eq!(report.verdict, Verdict::Drift);
        assert_eq!(report.drifted, ["color", "x"]);
        let x = &report.features[1];
        assert_eq!(x.kind, "numeric");
        assert!(x.tests.iter().any(|t| t.test == "psi" && t.drift));
        assert_eq!(report.features[0].kind, "categorical");
    }

    #[test]
    fn small_samples_are_insufficient_never_drift() {
        let dir = tempfile::tempdir().unwrap();
        let r = write(dir.path(), "r.csv", &csv((0..500).map(|i| (i as f64, "a"))));
        let c = write(
            dir.path(),
            "c.csv",
            &csv((0..20).map(|i| (i as f64 + 1000.0, "b"))),
        );
        let report = compare(
            &Dataset::read(&r).unwrap(),
            &Dataset::read(&c).unwrap(),
            &Thresholds::default(),
        );
        assert_eq!(report.verdict, Verdict::InsufficientData);
        assert!(report.drifted.is_empty());
    }

    #[test]
    fn json_lines_missing_values_and_extra_columns_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = String::new();
        let mut c = String::new();
        for i in 0..200 {
            r.push_str(&format!("{{\"x\": {i}, \"flag\": {}}}\n", i % 2 == 0));
            if i % 10 == 0 {
                c.push_str("{\"x\": null, \"extra\": [1, 2]}\n");
            } else {
                c.push_str(&format!("{{\"x\": \"{i}\", \"flag\": {}}}\n", i % 2 == 0));
            }
        }
        let r = write(dir.path(), "r.jsonl", &r);
        let c = write(dir.path(), "c.jsonl", &c);
        let (rd, cd) = (Dataset::read(&r).unwrap(), Dataset::read(&c).unwrap());
        assert_eq!(cd.nested_skipped, 20);
        let report = compare(&rd, &cd, &Thresholds::default());
        assert_eq!(report.only_in_current, ["extra"]);
        let x = report.features.iter().find(|f| f.feature == "x").unwrap();
        assert_eq!((x.current_n, x.current_missing), (180, 20));
        assert_eq!(x.kind, "numeric");
        let flag = report
            .features
            .iter()
            .find(|f| f.feature == "flag")
            .unwrap();
        assert_eq!(flag.kind, "categorical");
        assert_eq!(flag.current_missing, 20);
    }

    /// Past the memory budget numeric columns spill to files; the report
    /// is the one computed in memory, a column that turns categorical
    /// after spilling included, and the files go with the data set.
    #[test]
    fn spilled_columns_give_the_same_report() {
        let dir = tempfile::tempdir().unwrap();
        let table = |shift: f64| {
            let mut t = String::from("x,y,z,w\n");
            for i in 0..3000 {
                let z = if i == 2900 {
                    "n/a".to_owned()
                } else {
                    format!("{}", i % 7)
                };
                t.push_str(&format!(
                    "{},{},{z},{}\n",
                    (i % 97) as f64 * 0.5 + shift,
                    (i * 31 % 1000) as f64,
                    if i % 3 == 0 { "a" } else { "b" }
                ));
            }
            t
        };
        let r = write(dir.path(), "r.csv", &table(0.0));
        let c = write(dir.path(), "c.csv", &table(3.0));
        let t = Thresholds::default();
        let in_memory = compare(&Dataset::read(&r).unwrap(), &Dataset::read(&c).unwrap(), &t);
        let small = ReadOptions { memory: 4096 };
        let (rs, cs) = (
            Dataset::read_with(&r, small).unwrap(),
            Dataset::read_with(&c, small).unwrap(),
        );
        let spilled = rs.spill.dir.as_ref().map(|d| d.path().to_owned()).unwrap();
        assert!(std::fs::read_dir(&spilled).unwrap().count() >= 2);
        assert!(rs.spill.held <= 4096 + 8, "{}", rs.spill.held);
        let on_disk = compare(&rs, &cs, &t);
        assert_eq!(
            serde_json::to_value(&in_memory).unwrap(),
            serde_json::to_value(&on_disk).unwrap()
        );
        assert_eq!(in_memory.verdict, Verdict::Drift);
        let z = on_disk.features.iter().find(|f| f.feature == "z").unwrap();
        assert_eq!(z.kind, "categorical");
        drop((rs, cs));
        assert!(
            !spilled.exists(),
            "the spill directory outlived its data set"
        );
    }

    #[test]
    fn bad_files_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let ragged = write(dir.path(), "r.csv", "a,b\n1,2\n3\n");
        let e = Dataset::read(&ragged).unwrap_err().to_string();
        assert!(e.contains("r.csv:3"), "{e}");
        let json = write(dir.path(), "j.jsonl", "{\"a\": 1}\n[1]\n");
        let e = Dataset::read(&json).unwrap_err().to_string();
        assert!(e.contains("j.jsonl:2: not a JSON object"), "{e}");
        let empty = write(dir.path(), "e.csv", "a,b\n");
        assert!(
            Dataset::read(&empty)
                .unwrap_err()
                .to_string()
                .contains("no rows")
        );
        assert!(Dataset::read(&dir.path().join("none.csv")).is_err());
        let dup = write(dir.path(), "d.csv", "a,a\n1,2\n");
        assert!(
            Dataset::read(&dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
