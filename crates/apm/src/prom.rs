//! The Prometheus text exposition format: a parser and a writer.
