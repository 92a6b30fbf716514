//! Iris: a small, complete model project used as the `mlops` example.
//!
//! The crate trains a multinomial logistic regression (softmax) classifier on
//! Fisher's Iris data set, evaluates it on a deterministic held-out split, and
//! serves it over HTTP using the Open Inference Protocol (KServe v2). It also
//! ships the client-side checks a pipeline needs: a smoke test and a bounded
//! load test (stage 6 still runs it until mlops's load generator does).
//! Monitoring is mlops's: its collector scrapes the server's `/metrics`.
//! Everything is reachable through the
//! `iris` binary; see [`cli::USAGE`].

pub mod background;
pub mod cli;
pub mod client;
pub mod data;
pub mod error;
pub mod fsutil;
pub mod hash;
pub mod model;
pub mod oip;
pub mod prom;
pub mod scoring;
pub mod server;
pub mod smoke;
pub mod train;

pub use error::{Error, Result};
