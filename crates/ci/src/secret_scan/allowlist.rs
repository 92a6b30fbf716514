//! The allowlist file: findings a project has reviewed and accepted.
//!
//! The default file is [`DEFAULT_ALLOWLIST`](super::DEFAULT_ALLOWLIST) in
//! the scan root. One entry per line; blank lines and lines starting with
//! `#` are ignored, and ` #` starts a trailing comment. An entry is one or
//! more whitespace-separated terms that must all hold for a finding to be
//! accepted:
//!
//! - `rule:<id>` — the finding's rule (`rule:jwt`);
//! - `path:<glob>` — the finding's file, relative to the scan root, with
//!   the conventions of [`PathGlobs`];
//! - `commit:<hex>` — the commit a history finding was made in, by a
//!   prefix of at least 7 hex digits;
//! - `finding:<fingerprint>` — exactly one finding, by the fingerprint
//!   printed in the report; it takes the rest of the line.
//!
//! ```text
//! # test fixtures hold fake keys on purpose
//! path:tests/fixtures/**
//! rule:jwt path:docs/**
//! commit:4f2a9c1e          # key revoked on 2024-03-01
//! finding:config/app.env:generic-password:3
//! ```
//!
//! This module parses and matches; it does not know where findings come
//! from.

use std::path::{Path, PathBuf};

use super::paths::PathGlobs;
use super::{Finding, SecretScanError, rules};

/// A parsed allowlist.
#[derive(Debug, Default)]
pub(super) struct Allowlist {
    entries: Vec<Entry>,
}

/// One line of the allowlist: every term present must hold.
#[derive(Debug, Default)]
struct Entry {
    rule: Option<String>,
    path: Option<PathGlobs>,
    commit: Option<String>,
    finding: Option<String>,
}

impl Entry {
    fn allows(&self, finding: &Finding) -> bool {
        self.rule.as_ref().is_none_or(|r| *r == finding.rule)
            && self.path.as_ref().is_none_or(|g| g.is_match(&finding.file))
            && self.commit.as_ref().is_none_or(|prefix| {
                finding
                    .commit
                    .as_ref()
                    .is_some_and(|c| c.starts_with(prefix.as_str()))
            })
            && self
                .finding
                .as_ref()
                .is_none_or(|f| *f == finding.fingerprint)
    }
}

impl Allowlist {
    /// Reads and parses the allowlist at `path`.
    pub(super) fn load(path: &Path) -> Result<Allowlist, SecretScanError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SecretScanError::ReadAllowlist {
                path: path.to_path_buf(),
                source,
            })?;
        Allowlist::parse(path, &text)
    }

    /// Parses allowlist text; `path` is only used in messages.
    pub(super) fn parse(path: &Path, text: &str) -> Result<Allowlist, SecretScanError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let error = |message: String| SecretScanError::Allowlist {
                path: PathBuf::from(path),
                line: index + 1,
                message,
            };
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            entries.push(parse_entry(line).map_err(error)?);
        }
        Ok(Allowlist { entries })
    }

    /// Whether some entry accepts the finding.
    pub(super) fn allows(&self, finding: &Finding) -> bool {
        self.entries.iter().any(|e| e.allows(finding))
    }
}

/// The line without its comment: `#` at the start or after whitespace.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

fn parse_entry(line: &str) -> Result<Entry, String> {
    if let Some(fingerprint) = line.strip_prefix("finding:") {
        let fingerprint = fingerprint.trim();
        if fingerprint.is_empty() {
            return Err("`finding:` needs a fingerprint from the report".to_owned());
        }
        return Ok(Entry {
            finding: Some(fingerprint.to_owned()),
            ..Entry::default()
        });
    }
    let mut entry = Entry::default();
    for term in line.split_whitespace() {
        let Some((key, value)) = term.split_once(':') else {
            return Err(format!(
                "`{term}` is not an entry; expected `rule:<id>`, `path:<glob>`, `commit:<hex>` or `finding:<fingerprint>`"
            ));
        };
        if value.is_empty() {
            return Err(format!("`{key}:` needs a value"));
        }
        let duplicate = || format!("`{key}:` appears twice in one entry");
        match key {
            "rule" => {
                if rules::rule(value).is_none() {
                    let known: Vec<&str> = rules::rules().iter().map(|r| r.id).collect();
                    return Err(format!(
                        "unknown rule `{value}`; known rules: {}",
                        known.join(", ")
                    ));
                }
                if entry.rule.replace(value.to_owned()).is_some() {
                    return Err(duplicate());
                }
            }
            "path" => {
                let globs = PathGlobs::new([value]).map_err(|(pattern, e)| {
                    format!("invalid path pattern `{pattern}`: {}", e.kind())
                })?;
                if entry.path.replace(globs).is_some() {
                    return Err(duplicate());
                }
            }
            "commit" => {
                if !(7..=40).contains(&value.len()) || !value.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(format!(
                        "`commit:{value}` must name a commit by 7 to 40 hex digits"
                    ));
                }
                if entry.commit.replace(value.to_ascii_lowercase()).is_some() {
                    return Err(duplicate());
                }
            }
            "finding" => {
                return Err("`finding:` must be alone on its line".to_owned());
            }
            other => {
                return Err(format!(
                    "unknown term `{other}:`; expected `rule:`, `path:`, `commit:` or `finding:`"
                ));
            }
        }
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_stripped() {
        assert_eq!(strip_comment("# all"), "");
        assert_eq!(strip_comment("rule:jwt # why"), "rule:jwt ");
        assert_eq!(strip_comment("path:a#b"), "path:a#b");
    }
}
