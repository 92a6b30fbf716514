//! Statistics for release analysis.
