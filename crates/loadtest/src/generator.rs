//! The load generator's results: what `mlops loadtest run` records, how
//! several generators' results merge, the thresholds that pass or fail a
//! run, and the exports for the people who read them.
//!
//! The traffic itself is sent by the release stage's request driver
//! ([`mlops_release::driver`]): open workloads (constant, stepped or ramped
//! arrival rates, latency from each request's intended send time) and
//! closed ones (users with a think time). This module adds what a load
//! *test* needs around a run:
//!
//! - [`LoadResult`]: the driver's report with its latency histograms
//!   (overall and per second, serialized losslessly), the file format of
//!   `mlops loadtest run --out` and `--json`;
//! - [`merge`]: results of several generator processes combined exactly —
//!   counts add, histograms add without loss, seconds align by their offset
//!   from each run's start;
//! - [`Threshold`]: `p99 < 200ms`, `error_rate < 1%`, `rps > 500`, checked
//!   against a result, each saying by how much it failed;
//! - [`serve_worker`] and [`run_on_workers`]: one run split among
//!   generator processes (workers, driven over HTTP with a token), their
//!   results merged;
//! - [`per_second_csv`], [`summary_table`] and [`html_report`] (a
//!   self-contained page with SVG charts of rate, latency and errors over
//!   the run): the exports.

mod export;
mod remote;
mod report;
mod result;
mod threshold;

pub use export::{per_second_csv, summary_table};
pub use remote::{RemoteError, RunSpec, run_on_workers, serve_worker};
pub use report::html_report;
pub use result::{LoadResult, MergeError, RESULT_FORMAT, merge, run};
pub use threshold::{Metric, Op, Threshold, ThresholdError, Verdict, check_all};
