//! Small helpers over file text: line numbers, snippets, patterns.

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// A byte pattern, ASCII-only (`\b`, `\w` and `.` over bytes), compiled
/// once by the caller's `LazyLock`. ASCII classes keep the fast engines on
/// files with non-ASCII text.
pub(super) fn pattern(source: &str) -> Regex {
    RegexBuilder::new(source)
        .unicode(false)
        .build()
        .unwrap_or_else(|err| panic!("invalid built-in pattern {source:?}: {err}"))
}

/// A set of [`pattern`]s.
pub(super) fn pattern_set<'a>(sources: impl IntoIterator<Item = &'a str>) -> RegexSet {
    RegexSetBuilder::new(sources)
        .unicode(false)
        .build()
        .unwrap_or_else(|err| panic!("invalid built-in pattern set: {err}"))
}

/// The 1-based line holding byte `offset` of `text`.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The trimmed line holding byte `offset`, cut to 80 characters.
pub(super) fn snippet_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let bytes = text.as_bytes();
    let start = bytes[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let end = bytes[offset..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |i| offset + i);
    // `start` and `end` sit next to '\n' or at the ends: char boundaries.
    cut(text.get(start..end).unwrap_or("").trim(), 80)
}

/// `s` cut to `max` characters, with an ellipsis when cut.
pub(super) fn cut(s: &str, max: usize) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// The first line (1-based) for which `test` holds, with the line.
pub(super) fn find_line(text: &str, mut test: impl FnMut(&str) -> bool) -> Option<(usize, &str)> {
    text.lines()
        .enumerate()
        .find(|(_, line)| test(line))
        .map(|(i, line)| (i + 1, line))
}

/// The Python module of a `.py` file: `a/b/c.py` → `a.b.c`, `a/b/__init__.py`
/// and `a/b/__main__.py` → `a.b`.
pub(super) fn python_module(rel: &str) -> Option<String> {
    let stem = rel.strip_suffix(".py")?;
    let stem = stem
        .strip_suffix("/__init__")
        .or_else(|| stem.strip_suffix("/__main__"))
        .unwrap_or(stem);
    Some(stem.replace('/', "."))
}

/// Whether `text` speaks of training: a word starting with `train` or
/// `retrain` (`train`, `trainer`, `retraining`; not `constraint`).
pub(super) fn mentions_training(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphabetic()).any(|word| {
        let word = word.to_ascii_lowercase();
        word.starts_with("train") || word.starts_with("retrain")
    })
}

/// Shell command lines: backslash continuations joined (at the first
/// line's number), blank lines, comments and bare shell keywords dropped.
pub(super) fn shell_lines(
    lines: impl IntoIterator<Item = (usize, String)>,
) -> Vec<(usize, String)> {
    const KEYWORDS: &[&str] = &[
        "fi", "done", "then", "else", "esac", "do", "{", "}", ";;", "EOF", "'EOF'",
    ];
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (line, text) in lines {
        let trimmed = text.trim();
        if pending.is_none()
            && (trimmed.is_empty() || trimmed.starts_with('#') || KEYWORDS.contains(&trimmed))
        {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((line, String::new()));
        if !joined.is_empty() {
            joined.push(' ');
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head.trim_end());
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(trimmed);
                out.push((start, joined));
            }
        }
    }
    if let Some((line, text)) = pending
        && !text.is_empty()
    {
        out.push((line, text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_snippets() {
        let text = "a\nbé b\n  c = 1  \n";
        assert_eq!(line_at(text, 0), 1);
        assert_eq!(line_at(text, 3), 2);
        assert_eq!(line_at(text, 9), 3);
        assert_eq!(snippet_at(text, 10), "c = 1");
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(
            python_module("src/pkg/train.py").as_deref(),
            Some("src.pkg.train")
        );
        assert_eq!(python_module("pkg/__main__.py").as_deref(), Some("pkg"));
        assert!(mentions_training("src/train_model.py"));
        assert!(mentions_training("Trainer"));
        assert!(!mentions_training("constraints.py"));
    }

    #[test]
    fn shell_lines_join_continuations() {
        let lines = [
            "set -e",
            "# build",
            "",
            "pytest \\",
            "  -q",
            "fi",
            "echo ok",
        ];
        let got = shell_lines(
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| (i + 1, (*l).to_owned())),
        );
        assert_eq!(
            got,
            [
                (1, "set -e".to_owned()),
                (4, "pytest -q".to_owned()),
                (7, "echo ok".to_owned())
            ]
        );
    }
}
