//! Manifest diagnostics: a message tied to a byte span of `mlops.toml`,
//! rendered as `file:line:column` with the offending source line underlined.
//!
//! A leaf module: it depends on nothing in the crate, so `kind`, `section`
//! and `manifest` all report with it (re-exported as
//! `mlops_core::manifest::Diagnostic`) without depending on each other.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
    /// Byte range in the source that the message is about.
    pub span: Option<Range<usize>>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic about `span`.
    pub fn new(message: impl Into<String>, span: Option<Range<usize>>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            help: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A source position, 1-based, columns counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// Converts a byte offset into a line and column.
pub fn locate(source: &str, offset: usize) -> Location {
    let offset = floor_char_boundary(source, offset.min(source.len()));
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..offset].chars().count() + 1;
    Location { line, column }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// All the problems of one manifest, reported together.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The manifest's path, as given.
    pub path: PathBuf,
    /// The manifest's text.
    pub source: String,
    /// Every problem, in source order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// The location of a diagnostic's span start.
    pub fn location(&self, diagnostic: &Diagnostic) -> Option<Location> {
        diagnostic
            .span
            .as_ref()
            .map(|span| locate(&self.source, span.start))
    }

    /// The path the diagnostics refer to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for Diagnostics {
    /// Renders every diagnostic like a compiler would:
    ///
    /// ```text
    /// error: unknown field `tiemout`
    ///  --> mlops.toml:7:1
    ///   |
    /// 7 | tiemout = "10m"
    ///   | ^^^^^^^
    ///   = help: ...
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: {}", d.message)?;
            match &d.span {
                Some(span) => {
                    let loc = locate(&self.source, span.start);
                    let gutter = loc.line.to_string().len();
                    let pad = " ".repeat(gutter);
                    writeln!(f, "{pad}--> {path}:{}:{}", loc.line, loc.column)?;
                    let line_text = self.source.lines().nth(loc.line - 1).unwrap_or("");
                    let line_end = self.source
                        [..floor_char_boundary(&self.source, span.start.min(self.source.len()))]
                        .rfind('\n')
                        .map_or(0, |i| i + 1)
                        + line_text.len();
                    let end = span.end.clamp(span.start, line_end.max(span.start));
                    let width = self
                        .source
                        .get(span.start..end)
                        .map_or(1, |s| s.chars().count())
                        .max(1);
                    writeln!(f, "{pad} |")?;
                    writeln!(f, "{} | {}", loc.line, line_text.trim_end())?;
                    write!(
                        f,
                        "{pad} | {}{}",
                        " ".repeat(loc.column - 1),
                        "^".repeat(width)
                    )?;
                    if let Some(help) = &d.help {
                        write!(f, "\n{pad} = help: {help}")?;
                    }
                    writeln!(f)?;
                }
                None => {
                    writeln!(f, " --> {path}")?;
                    if let Some(help) = &d.help {
                        writeln!(f, "  = help: {help}")?;
                    }
                }
            }
        }
        let n = self.items.len();
        write!(f, "\n{n} error{} in {path}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_lines_and_characters() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(locate(src, 0), Location { line: 1, column: 1 });
        assert_eq!(locate(src, 6), Location { line: 2, column: 1 });
        // after the two-byte 'é'
        assert_eq!(locate(src, 9), Location { line: 2, column: 3 });
        // inside a multi-byte char falls back to its start
        assert_eq!(locate(src, 8), Location { line: 2, column: 2 });
        assert_eq!(locate(src, 999).line, 3);
    }
}
