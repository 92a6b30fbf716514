//! Data and prediction drift between a reference sample and live inputs, per feature.
