//! The crate's error type: a lowercase, user-facing message plus an exit code.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit code for runtime failures (a check failed, a file is missing, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for command-line usage errors (unknown flag, bad value, ...).
pub const EXIT_USAGE: u8 = 2;

/// An error with a message that says what went wrong and where.
///
/// Messages are lowercase and carry no trailing period, so they compose:
/// `cannot read model file model.json: no such file or directory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    exit_code: u8,
}

impl Error {
    /// A runtime failure; the process exits with [`EXIT_FAILURE`].
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: EXIT_FAILURE,
        }
    }

    /// A command-line usage error; the process exits with [`EXIT_USAGE`].
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: EXIT_USAGE,
        }
    }

    /// The user-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }

    /// Prefixes the message with some context, keeping the exit code.
    #[must_use]
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self {
            message: format!("{context}: {}", self.message),
            exit_code: self.exit_code,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Renders an error and its chain of sources as `outer: inner: innermost`.
///
/// Library errors (hyper, io) often keep the useful part in a source, e.g.
/// `client error (Connect): tcp connect error: connection refused`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = lowercase_first(&err.to_string());
    let mut source = err.source();
    while let Some(inner) = source {
        let part = lowercase_first(&inner.to_string());
        // Some errors repeat their source in their own message.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

/// Lowercases the first character of an OS or library message
/// ("No such file or directory" becomes "no such file or directory").
pub fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_and_keeps_exit_code() {
        let err = Error::usage("bad value").context("--epochs");
        assert_eq!(err.message(), "--epochs: bad value");
        assert_eq!(err.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn chain_joins_sources_in_lowercase() {
        let io = std::io::Error::other("Connection refused");
        assert_eq!(chain(&io), "connection refused");
    }
}
