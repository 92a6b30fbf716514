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
//! tests need them), a categorical one its distinct values' counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};

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

/// A column's values.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    Numeric(Vec<f64>),
    Categorical(HashMap<String, u64>),
}

/// One feature's values in a data set.
#[derive(Debug, Clone, PartialEq)]
struct Column {
    values: Values,
    missing: u64,
}

impl Column {
    fn new() -> Self {
        Column {
            values: Values::Numeric(Vec::new()),
            missing: 0,
        }
    }

    fn present(&self) -> u64 {
        match &self.values {
            Values::Numeric(v) => v.len() as u64,
            Values::Categorical(m) => m.values().sum(),
        }
    }

    /// Adds a value given as text (a CSV field, a JSON string).
    fn push_text(&mut self, text: &str) {
        let t = text.trim();
        if t.is_empty() {
            self.missing += 1;
            return;
        }
        match (&mut self.values, t.parse::<f64>()) {
            (Values::Numeric(v), Ok(x)) if x.is_finite() => v.push(x),
            _ => self.push_category(t.to_owned()),
        }
    }

    fn push_number(&mut self, x: f64) {
        match &mut self.values {
            Values::Numeric(v) if x.is_finite() => v.push(x),
            _ => self.push_category(format_number(x)),
        }
    }

    fn push_category(&mut self, c: String) {
        if let Values::Numeric(v) = &self.values {
            // The column turns out categorical: its numbers become
            // categories.
            let mut counts: HashMap<String, u64> = HashMap::new();
            for x in v {
                *counts.entry(format_number(*x)).or_default() += 1;
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
#[derive(Debug, Clone, PartialEq)]
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
}

impl Dataset {
    /// Read `path`: JSON lines when its name ends in `.jsonl`, `.ndjson`
    /// or `.json` (or its first byte is `{`), else CSV with a header row.
    pub fn read(path: &Path) -> Result<Self, DriftError> {
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
        let set = if json {
            Self::read_json_lines(path, reader)?
        } else {
            Self::read_csv(path, reader)?
        };
        if set.rows == 0 {
            return Err(DriftError::Empty(path.to_owned()));
        }
        Ok(set)
    }

    fn read_csv(path: &Path, reader: impl std::io::Read) -> Result<Self, DriftError> {
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
        let mut rows = 0;
        let mut record = csv::StringRecord::new();
        while csv.read_record(&mut record).map_err(malformed)? {
            rows += 1;
            for (c, field) in columns.iter_mut().zip(record.iter()) {
                c.push_text(field);
            }
        }
        Ok(Dataset {
            path: path.to_owned(),
            rows,
            order: Some(headers.clone()),
            columns: headers.into_iter().zip(columns).collect(),
            nested_skipped: 0,
        })
    }

    /// A data set from JSON objects (one per row), as JSON lines are read;
    /// `label` names it in reports.
    pub fn from_objects(
        label: impl Into<PathBuf>,
        objects: impl IntoIterator<Item = serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        let mut set = Dataset {
            path: label.into(),
            rows: 0,
            columns: BTreeMap::new(),
            nested_skipped: 0,
            order: None,
        };
        for object in objects {
            set.push_object(&object);
        }
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
        for (key, c) in self.columns.iter_mut() {
            match object.get(key) {
                None | Some(serde_json::Value::Null) => c.missing += 1,
                Some(serde_json::Value::Number(n)) => c.push_number(n.as_f64().unwrap_or(f64::NAN)),
                Some(serde_json::Value::String(s)) => c.push_text(s),
                Some(serde_json::Value::Bool(b)) => c.push_category(b.to_string()),
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

    fn read_json_lines(path: &Path, reader: impl BufRead) -> Result<Self, DriftError> {
        let mut set = Dataset::from_objects(path, std::iter::empty());
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
    let categorical = |col: &Column| -> HashMap<String, u64> {
        match &col.values {
            Values::Categorical(m) => m.clone(),
            Values::Numeric(v) => {
                let mut m = HashMap::new();
                for x in v {
                    *m.entry(format_number(*x)).or_default() += 1;
                }
                m
            }
        }
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
        let (ra, ca) = (categorical(r), categorical(c));
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

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
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
