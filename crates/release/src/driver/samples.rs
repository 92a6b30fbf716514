//! The request bodies a run sends, cycled through in order: request `i`
//! carries sample `i % len`.
//!
//! Loading reads files synchronously; async callers load them in
//! `tokio::task::spawn_blocking`. Bodies are built once here, so sending one
//! is a reference-count increment.

use std::path::Path;

use bytes::Bytes;
use serde::Serialize;

use super::DriverError;

/// The request bodies of a run, never empty.
#[derive(Debug, Clone)]
pub struct Samples {
    bodies: Vec<Bytes>,
}

/// Which columns of a CSV become the model's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CsvColumns {
    /// Every column, in the file's order.
    #[default]
    All,
    /// These columns, in this order.
    Only(Vec<String>),
    /// Every column but these (say, the label), in the file's order.
    Exclude(Vec<String>),
}

impl Samples {
    /// Bodies given in memory, sent as they are.
    pub fn from_bodies(bodies: impl IntoIterator<Item = Bytes>) -> Result<Self, DriverError> {
        Self::non_empty(bodies.into_iter().collect(), "the given bodies")
    }

    /// A JSON-lines file: each non-blank line is one request body (any JSON
    /// value, sent as written).
    pub fn from_json_lines(path: &Path) -> Result<Self, DriverError> {
        let text = std::fs::read_to_string(path).map_err(|source| DriverError::ReadSamples {
            path: path.to_owned(),
            source,
        })?;
        let mut bodies = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            serde_json::from_str::<serde::de::IgnoredAny>(line).map_err(|source| {
                DriverError::SampleJson {
                    path: path.to_owned(),
                    line: n as u64 + 1,
                    source,
                }
            })?;
            bodies.push(Bytes::copy_from_slice(line.as_bytes()));
        }
        Self::non_empty(bodies, &path.display().to_string())
    }

    /// A CSV file with a header: each row becomes one Open Inference
    /// Protocol v2 request ([`oip_request_body`]) of the chosen columns,
    /// which must all hold finite numbers.
    pub fn from_csv(path: &Path, columns: &CsvColumns) -> Result<Self, DriverError> {
        let rows = csv_rows(path, columns)?;
        let bodies = rows
            .iter()
            .map(|row| Bytes::from(oip_request_body(row)))
            .collect();
        Self::non_empty(bodies, &path.display().to_string())
    }

    /// [`Samples::from_csv`] with `batch` rows in each request (shape
    /// `[batch, columns]`): the rows are taken in order and cycled, so
    /// every request holds exactly `batch` rows, however many the file
    /// has.
    pub fn from_csv_batched(
        path: &Path,
        columns: &CsvColumns,
        batch: usize,
    ) -> Result<Self, DriverError> {
        let rows = csv_rows(path, columns)?;
        if rows.is_empty() || batch == 0 {
            return Self::non_empty(Vec::new(), &path.display().to_string());
        }
        let requests = rows.len().div_ceil(batch);
        let bodies = (0..requests)
            .map(|r| {
                let batch_rows: Vec<&[f64]> = (0..batch)
                    .map(|j| rows[(r * batch + j) % rows.len()].as_slice())
                    .collect();
                Bytes::from(oip_batch_body(&batch_rows))
            })
            .collect();
        Self::non_empty(bodies, &path.display().to_string())
    }

    /// How many samples there are (at least one).
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    /// Always false: samples are never empty.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    /// The samples, in order.
    pub fn bodies(&self) -> &[Bytes] {
        &self.bodies
    }

    /// The sample request `index` carries, and its position.
    pub(super) fn for_request(&self, index: u64) -> (usize, &Bytes) {
        let at = (index % self.bodies.len() as u64) as usize;
        (at, &self.bodies[at])
    }

    fn non_empty(bodies: Vec<Bytes>, origin: &str) -> Result<Self, DriverError> {
        if bodies.is_empty() {
            return Err(DriverError::EmptySamples {
                origin: origin.to_owned(),
            });
        }
        Ok(Self { bodies })
    }
}

/// The chosen columns of every row of a CSV file with a header, each a
/// finite number.
fn csv_rows(path: &Path, columns: &CsvColumns) -> Result<Vec<Vec<f64>>, DriverError> {
    let csv_error = |line: u64, source: csv::Error| DriverError::SampleCsv {
        path: path.to_owned(),
        line,
        source,
    };
    let file = std::fs::File::open(path).map_err(|source| DriverError::ReadSamples {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = csv::Reader::from_reader(file);
    let header = reader.headers().map_err(|e| csv_error(1, e))?.clone();
    let chosen = choose_columns(path, &header, columns)?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            csv_error(line, e)
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        let mut row = Vec::with_capacity(chosen.len());
        for &i in &chosen {
            let cell = record.get(i).unwrap_or("");
            match cell.trim().parse::<f64>() {
                Ok(value) if value.is_finite() => row.push(value),
                _ => {
                    return Err(DriverError::SampleNotNumber {
                        path: path.to_owned(),
                        line,
                        column: header[i].to_owned(),
                        value: cell.to_owned(),
                    });
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The header positions of the chosen columns, in sending order.
fn choose_columns(
    path: &Path,
    header: &csv::StringRecord,
    columns: &CsvColumns,
) -> Result<Vec<usize>, DriverError> {
    let position = |name: &String| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DriverError::UnknownColumn {
                path: path.to_owned(),
                column: name.clone(),
            })
    };
    let chosen: Vec<usize> = match columns {
        CsvColumns::All => (0..header.len()).collect(),
        CsvColumns::Only(names) => names.iter().map(position).collect::<Result<_, _>>()?,
        CsvColumns::Exclude(names) => {
            let excluded = names.iter().map(position).collect::<Result<Vec<_>, _>>()?;
            (0..header.len())
                .filter(|i| !excluded.contains(i))
                .collect()
        }
    };
    if chosen.is_empty() {
        return Err(DriverError::NoColumns {
            path: path.to_owned(),
        });
    }
    Ok(chosen)
}

/// The Open Inference Protocol v2 request for a batch of rows of the same
/// width: shape `[rows, width]`, the data flat in row-major order.
pub fn oip_batch_body(rows: &[&[f64]]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Request<'a> {
        inputs: [Tensor<'a>; 1],
    }
    #[derive(Serialize)]
    struct Tensor<'a> {
        name: &'static str,
        shape: [usize; 2],
        datatype: &'static str,
        data: &'a [f64],
    }
    let data: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let request = Request {
        inputs: [Tensor {
            name: "input-0",
            shape: [rows.len(), rows.first().map_or(0, |r| r.len())],
            datatype: "FP64",
            data: &data,
        }],
    };
    serde_json::to_vec(&request).expect("a struct of numbers and strings serializes")
}

/// The Open Inference Protocol v2 request for one row of features:
/// `{"inputs":[{"name":"input-0","shape":[1,N],"datatype":"FP64","data":[...]}]}`.
pub fn oip_request_body(row: &[f64]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Request<'a> {
        inputs: [Tensor<'a>; 1],
    }
    #[derive(Serialize)]
    struct Tensor<'a> {
        name: &'static str,
        shape: [usize; 2],
        datatype: &'static str,
        data: &'a [f64],
    }
    let request = Request {
        inputs: [Tensor {
            name: "input-0",
            shape: [1, row.len()],
            datatype: "FP64",
            data: row,
        }],
    };
    serde_json::to_vec(&request).expect("a struct of numbers and strings serializes")
}
