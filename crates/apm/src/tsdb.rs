//! Time series in SQLite, with downsampling and retention.
