//! Linking: evidence that a tool runs becomes automated when an automated
//! command runs that tool.
//!
//! A command is split into tokens (on whitespace, quotes and shell
//! punctuation; `./` and a bare `--` dropped). A one-token word matches a
//! token equal to it, a path token ending in it (`.venv/bin/pytest` runs
//! `pytest`), or a token it ends in at a `/` or `.` boundary (the script
//! `examples/wine/wine_model/train.py` is run by `python wine_model/train.py`,
//! the module `src.wine_model.train` by `python -m wine_model.train`). A word
//! of several tokens (`cargo test`, `iris train`) matches those tokens in a
//! row. Commands that only install packages (`pip install pytest`) link
//! nothing.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::bytes::Regex;

use super::text::pattern;
use crate::evidence::{Evidence, Signal, Source};

/// Something that runs without a person, as tokens: an automated command,
/// a line of a script or make recipe one runs, or a reference an automated
/// step makes (a file named in a `kind` step's parameters).
#[derive(Debug, Clone)]
pub(super) struct Target {
    tokens: Vec<String>,
    /// Where it is written.
    pub(super) source: Source,
    /// Where, for people: `mlops.toml:31`, `test.sh:2 via ci.yml:14`.
    pub(super) label: String,
}

impl Target {
    /// A target for `text`, or `None` for a command that only installs
    /// packages.
    pub(super) fn new(text: &str, source: Source, label: String) -> Option<Target> {
        if only_installs(text) {
            return None;
        }
        Some(Target {
            tokens: tokens(text),
            source,
            label,
        })
    }
}

/// Whether a command only installs packages (`pip install pytest`): naming
/// a tool there does not run it.
pub(super) fn only_installs(command: &str) -> bool {
    static INSTALL: LazyLock<Regex> = LazyLock::new(|| {
        pattern(
            r"^\s*(?:sudo\s+)?(?:\S*python3?\s+-m\s+)?(?:\S*/)?(?:pip3?|uv\s+pip|uv|pipx|poetry|pdm|conda|mamba|micromamba|apt|apt-get|apk|brew|npm|yarn|pnpm|cargo)\s+(?:install|add)\b",
        )
    });
    INSTALL.is_match(command.as_bytes()) && !command.contains("&&") && !command.contains(';')
}

/// The tokens of a command.
pub(super) fn tokens(command: &str) -> Vec<String> {
    command
        .split(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    ';' | '&' | '|' | '(' | ')' | '<' | '>' | '`' | '\'' | '"' | '=' | ','
                )
        })
        .map(|t| t.trim_start_matches("./"))
        .filter(|t| !t.is_empty() && *t != "--" && *t != "\\")
        .map(str::to_owned)
        .collect()
}

/// The automated targets, indexed for matching words.
pub(super) struct Linker<'a> {
    targets: &'a [Target],
    exact: HashMap<&'a str, usize>,
    /// The `/`-suffixes of path tokens: `bin/pytest`, `pytest` of
    /// `.venv/bin/pytest`.
    suffixes: HashMap<&'a str, usize>,
    memo: HashMap<String, Option<usize>>,
}

impl<'a> Linker<'a> {
    /// Indexes `targets`; earlier targets win when several match.
    pub(super) fn new(targets: &'a [Target]) -> Linker<'a> {
        let mut exact = HashMap::new();
        let mut suffixes = HashMap::new();
        for (index, target) in targets.iter().enumerate() {
            for token in &target.tokens {
                exact.entry(token.as_str()).or_insert(index);
                for (at, _) in token.match_indices('/') {
                    let suffix = &token[at + 1..];
                    if !suffix.is_empty() {
                        suffixes.entry(suffix).or_insert(index);
                    }
                }
            }
        }
        Linker {
            targets,
            exact,
            suffixes,
            memo: HashMap::new(),
        }
    }

    /// The first target that runs `word`.
    pub(super) fn find(&mut self, word: &str) -> Option<&'a Target> {
        let index = match self.memo.get(word) {
            Some(found) => *found,
            None => {
                let found = self.search(word);
                self.memo.insert(word.to_owned(), found);
                found
            }
        };
        index.map(|i| &self.targets[i])
    }

    fn search(&self, word: &str) -> Option<usize> {
        let parts = tokens(word);
        match parts.as_slice() {
            [] => None,
            [one] => self.search_token(one),
            many => self
                .targets
                .iter()
                .position(|target| contains_run(&target.tokens, many)),
        }
    }

    fn search_token(&self, word: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(word).or_else(|| self.suffixes.get(word)) {
            return Some(i);
        }
        if word.contains('/') {
            word.match_indices('/')
                .filter_map(|(at, _)| self.exact.get(&word[at + 1..]).copied())
                .min()
        } else {
            word.match_indices('.')
                .map(|(at, _)| &word[at + 1..])
                .filter(|rest| rest.contains('.'))
                .filter_map(|rest| self.exact.get(rest).copied())
                .min()
        }
    }
}

/// Whether `tokens` holds `words` in a row (a token may be a path ending in
/// its word).
fn contains_run(tokens: &[String], words: &[String]) -> bool {
    tokens.windows(words.len()).any(|window| {
        window.iter().zip(words).all(|(token, word)| {
            token == word
                || token
                    .strip_suffix(word.as_str())
                    .is_some_and(|head| head.ends_with('/'))
        })
    })
}

/// Marks automated every evidence whose `run_by` words a target runs, and
/// returns the training-pipeline evidence that running training code makes.
pub(super) fn link(evidence: &mut [Evidence], targets: &[Target]) -> Vec<Evidence> {
    let mut linker = Linker::new(targets);
    let mut pipelines = Vec::new();
    for e in evidence.iter_mut() {
        if e.automated || e.run_by.is_empty() {
            continue;
        }
        let Some(target) = e.run_by.iter().find_map(|word| linker.find(word)) else {
            continue;
        };
        e.automated = true;
        e.summary = format!("{}; run by {}", e.summary, target.label);
        if e.signal == Signal::TrainingCode
            && let Source::File { path, .. } = &e.source
        {
            let (file, line) = match &target.source {
                Source::File { path, line } => (path.clone(), *line),
                _ => continue,
            };
            pipelines.push(
                Evidence::file(
                    Signal::TrainingPipeline,
                    file,
                    line,
                    format!("automation trains with {path}"),
                )
                .automated(),
            );
        }
    }
    pipelines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linked(command: &str, word: &str) -> bool {
        let targets: Vec<Target> = Target::new(
            command,
            Source::file("ci.yml", Some(1)),
            "ci.yml:1".to_owned(),
        )
        .into_iter()
        .collect();
        Linker::new(&targets).find(word).is_some()
    }

    #[test]
    fn words_match_tools_paths_and_modules() {
        assert!(linked("python -m pytest -q", "pytest"));
        assert!(linked("uv run pytest", "pytest"));
        assert!(linked(".venv/bin/pytest tests", "pytest"));
        assert!(linked("\"pytest -q\"", "pytest"));
        assert!(linked(
            ".venv/bin/python -m wine_model.train --data x",
            "wine_model.train"
        ));
        assert!(linked(
            "python -m wine_model.train",
            "examples.wine.wine_model.train"
        ));
        assert!(linked(
            "python ./wine_model/train.py",
            "wine_model/train.py"
        ));
        assert!(linked(
            "python wine_model/train.py",
            "examples/wine/wine_model/train.py"
        ));
        assert!(linked(
            "cargo nextest run --locked -p iris",
            "cargo nextest"
        ));
        assert!(linked(
            "cargo run --locked --bin iris -- train --data d",
            "iris train"
        ));
        assert!(linked("target/release/iris train", "iris train"));
        assert!(linked("Rscript -e 'devtools::test()'", "devtools::test"));
    }

    #[test]
    fn words_do_not_match_lookalikes() {
        assert!(!linked("pytest-cov report", "pytest"));
        assert!(!linked("cargo build && make test", "cargo test"));
        assert!(!linked("python -m other.train", "wine_model.train"));
        assert!(!linked("python -m pytest", "py.test"));
        assert!(!linked("cargo test", "py.test"));
        assert!(!linked("pip install pytest", "pytest"));
        assert!(!linked("cargo run --bin iris -- scrape", "iris train"));
    }
}
