//! Integration tests of mlops-core, one binary: manifests, the executor with
//! real processes, and the ledger.

mod engine;
mod manifest;
mod sections;
