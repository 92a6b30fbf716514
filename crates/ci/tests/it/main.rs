//! Integration tests of the `ci` stage kinds, one module per kind, in one
//! test binary.

mod data;
mod secret_scan;
