//! Loading the CSV data set, a tiny seeded PRNG and the stratified train/test split.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

/// A labelled tabular data set: numeric feature columns followed by one label column.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Names of the feature columns, in file order.
    pub feature_names: Vec<String>,
    /// Name of the label column (the last column).
    pub label_name: String,
    /// One row of feature values per sample.
    pub features: Vec<Vec<f64>>,
    /// One label per sample.
    pub labels: Vec<String>,
}

impl Dataset {
    /// Reads and parses a CSV file (see [`Dataset::parse_csv`]), returning
    /// the data set and the raw file bytes (for hashing).
    pub fn load(path: &Path) -> Result<(Self, Vec<u8>)> {
        let bytes = fsutil::read_bytes(path, "data file")?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::new(format!(
                "data file {} is not valid utf-8 text",
                path.display()
            ))
        })?;
        let data = Self::parse_csv(text, &path.display().to_string())?;
        Ok((data, bytes))
    }

    /// Parses CSV text with a header row. The last column is the label, all
    /// others must be finite numbers. Blank lines are skipped; quoting is not
    /// supported. `source` names the input in error messages (`file:line: ...`).
    pub fn parse_csv(text: &str, source: &str) -> Result<Self> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line.trim_end_matches('\r')))
            .filter(|(_, line)| !line.trim().is_empty());

        let Some((header_line, header)) = lines.next() else {
            return Err(Error::new(format!(
                "{source}: file is empty (expected a header row)"
            )));
        };
        let columns = split_fields(header, source, header_line)?;
        if columns.len() < 2 {
            return Err(Error::new(format!(
                "{source}:{header_line}: header needs at least one feature column and a label column, found {} column(s)",
                columns.len()
            )));
        }
        if let Some(empty) = columns.iter().position(|c| c.is_empty()) {
            return Err(Error::new(format!(
                "{source}:{header_line}: header column {} has no name",
                empty + 1
            )));
        }
        let (label_name, feature_names) = columns
            .split_last()
            .map(|(l, f)| (l.clone(), f.to_vec()))
            .unwrap_or_default();

        let mut features = Vec::new();
        let mut labels = Vec::new();
        for (line_no, line) in lines {
            let fields = split_fields(line, source, line_no)?;
            if fields.len() != columns.len() {
                return Err(Error::new(format!(
                    "{source}:{line_no}: expected {} fields, found {}",
                    columns.len(),
                    fields.len()
                )));
            }
            let mut row = Vec::with_capacity(feature_names.len());
            for (value, name) in fields.iter().zip(&feature_names) {
                let number: f64 = value.parse().map_err(|_| {
                    Error::new(format!(
                        "{source}:{line_no}: column '{name}' is not a number: '{value}'"
                    ))
                })?;
                if !number.is_finite() {
                    return Err(Error::new(format!(
                        "{source}:{line_no}: column '{name}' must be a finite number, found '{value}'"
                    )));
                }
                row.push(number);
            }
            let label = fields.last().cloned().unwrap_or_default();
            if label.is_empty() {
                return Err(Error::new(format!(
                    "{source}:{line_no}: label column '{label_name}' is empty"
                )));
            }
            features.push(row);
            labels.push(label);
        }
        if features.is_empty() {
            return Err(Error::new(format!(
                "{source}: no data rows after the header"
            )));
        }
        Ok(Self {
            feature_names,
            label_name,
            features,
            labels,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The distinct labels, sorted, which fixes the class order of a model.
    pub fn classes(&self) -> Vec<String> {
        let mut classes = self.labels.clone();
        classes.sort();
        classes.dedup();
        classes
    }
}

fn split_fields(line: &str, source: &str, line_no: usize) -> Result<Vec<String>> {
    if line.contains('"') {
        return Err(Error::new(format!(
            "{source}:{line_no}: quoted fields are not supported"
        )));
    }
    Ok(line
        .split(',')
        .map(|field| field.trim().to_owned())
        .collect())
}

/// SplitMix64, a tiny, well-known 64-bit PRNG (Steele, Lea and Flood, 2014).
///
/// Good enough to shuffle a data set reproducibly; not for cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (multiply-shift reduction; `bound` must be non-zero).
    pub fn below(&mut self, bound: usize) -> usize {
        let wide = u128::from(self.next_u64()) * bound as u128;
        (wide >> 64) as usize
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Row indices of a train/test split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Training rows, ascending.
    pub train: Vec<usize>,
    /// Held-out rows, ascending.
    pub test: Vec<usize>,
}

/// Splits rows so that every class keeps its proportion in both parts.
///
/// Classes are visited in sorted order; within a class the row indices are
/// shuffled with [`SplitMix64`] seeded by `seed`, and the first
/// `round(n * test_fraction)` (at least 1, at most n - 1) go to the test set.
/// The same labels, fraction and seed always give the same split.
pub fn stratified_split(labels: &[String], test_fraction: f64, seed: u64) -> Result<Split> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(Error::usage(format!(
            "test fraction must be between 0 and 1 (exclusive), got {test_fraction}"
        )));
    }
    let mut classes: Vec<&String> = labels.iter().collect();
    classes.sort();
    classes.dedup();

    let mut rng = SplitMix64::new(seed);
    let mut split = Split {
        train: Vec::new(),
        test: Vec::new(),
    };
    for class in classes {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&i| &labels[i] == class).collect();
        if rows.len() < 2 {
            return Err(Error::new(format!(
                "class '{class}' has {} row(s); at least 2 are needed to split into train and test",
                rows.len()
            )));
        }
        rng.shuffle(&mut rows);
        let n_test = ((rows.len() as f64) * test_fraction).round() as usize;
        let n_test = n_test.clamp(1, rows.len() - 1);
        split.test.extend_from_slice(&rows[..n_test]);
        split.train.extend_from_slice(&rows[n_test..]);
    }
    split.train.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IRIS: &str = include_str!("../data/iris.csv");

    fn parse_err(text: &str) -> String {
        Dataset::parse_csv(text, "t.csv")
            .unwrap_err()
            .message()
            .to_owned()
    }

    #[test]
    fn parses_the_bundled_iris_file() {
        let data = Dataset::parse_csv(IRIS, "iris.csv").unwrap();
        assert_eq!(data.len(), 150);
        assert_eq!(
            data.feature_names,
            ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        );
        assert_eq!(data.label_name, "species");
        assert_eq!(data.classes(), ["setosa", "versicolor", "virginica"]);
        for class in data.classes() {
            assert_eq!(data.labels.iter().filter(|l| **l == class).count(), 50);
        }
        assert_eq!(data.features[0], [5.1, 3.5, 1.4, 0.2]);
        // Well-known column sums of Fisher's data.
        let sum = |j: usize| data.features.iter().map(|r| r[j]).sum::<f64>();
        assert!((sum(0) - 876.5).abs() < 1e-9);
        assert!((sum(1) - 458.6).abs() < 1e-9);
        assert!((sum(2) - 563.7).abs() < 1e-9);
        assert!((sum(3) - 179.9).abs() < 1e-9);
    }

    #[test]
    fn tolerates_crlf_and_blank_lines() {
        let data = Dataset::parse_csv("a,b,y\r\n1,2,x\r\n\r\n3,4,z\r\n", "t.csv").unwrap();
        assert_eq!(data.features, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(data.labels, ["x", "z"]);
    }

    #[test]
    fn csv_errors_say_what_and_where() {
        assert_eq!(
            parse_err(""),
            "t.csv: file is empty (expected a header row)"
        );
        assert_eq!(parse_err("a,b,y\n"), "t.csv: no data rows after the header");
        assert_eq!(
            parse_err("y\n1\n"),
            "t.csv:1: header needs at least one feature column and a label column, found 1 column(s)"
        );
        assert_eq!(
            parse_err("a,b,y\n1,2,x\n1,2\n"),
            "t.csv:3: expected 3 fields, found 2"
        );
        assert_eq!(
            parse_err("a,b,y\n1,two,x\n"),
            "t.csv:2: column 'b' is not a number: 'two'"
        );
        assert_eq!(
            parse_err("a,b,y\n1,NaN,x\n"),
            "t.csv:2: column 'b' must be a finite number, found 'NaN'"
        );
        assert_eq!(
            parse_err("a,b,y\n1,2,\n"),
            "t.csv:2: label column 'y' is empty"
        );
        assert_eq!(
            parse_err("a,,y\n1,2,x\n"),
            "t.csv:1: header column 2 has no name"
        );
        assert_eq!(
            parse_err("a,b,y\n1,2,\"x\"\n"),
            "t.csv:2: quoted fields are not supported"
        );
    }

    #[test]
    fn splitmix_is_deterministic() {
        // Reference output of SplitMix64 seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..100 {
            let x = a.below(7);
            assert!(x < 7);
            assert_eq!(x, b.below(7));
        }
    }

    #[test]
    fn split_is_stratified_and_reproducible() {
        let data = Dataset::parse_csv(IRIS, "iris.csv").unwrap();
        let split = stratified_split(&data.labels, 0.2, 42).unwrap();
        assert_eq!(split.test.len(), 30);
        assert_eq!(split.train.len(), 120);
        for class in data.classes() {
            let n = split
                .test
                .iter()
                .filter(|&&i| data.labels[i] == class)
                .count();
            assert_eq!(n, 10, "{class}");
        }
        let mut all: Vec<usize> = split.train.iter().chain(&split.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..150).collect::<Vec<_>>());
        assert_eq!(split, stratified_split(&data.labels, 0.2, 42).unwrap());
        assert_ne!(split, stratified_split(&data.labels, 0.2, 43).unwrap());
    }

    #[test]
    fn split_rejects_bad_input() {
        let labels: Vec<String> = ["a", "a", "b"].iter().map(|s| (*s).to_owned()).collect();
        assert!(stratified_split(&labels, 0.0, 1).is_err());
        assert!(stratified_split(&labels, 1.0, 1).is_err());
        let err = stratified_split(&labels, 0.5, 1).unwrap_err();
        assert!(err.message().contains("class 'b' has 1 row(s)"));
    }
}
