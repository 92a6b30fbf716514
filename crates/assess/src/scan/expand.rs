//! What automated commands run indirectly: the lines of the shell scripts
//! and make targets of the repository they invoke (`./scripts/test.sh`,
//! `make check`), followed a few levels deep.
//!
//! Those lines run without a person too: they show evidence (a `kubectl
//! apply` in `deploy.sh`) and link evidence (`pytest` in the `test` recipe)
//! like the automated command itself, each pointing at the line where it
//! is written and at the command that runs it.

use std::collections::{HashMap, HashSet};

use super::link::tokens;
use super::{Invocation, MakeTarget};
use crate::evidence::Source;

/// How deep scripts calling scripts are followed.
const MAX_DEPTH: usize = 4;

/// The script and recipe lines `direct` invocations run.
pub(super) fn indirect(
    direct: &[Invocation],
    scripts: &HashMap<String, Vec<(usize, String)>>,
    make: &HashMap<String, MakeTarget>,
) -> Vec<Invocation> {
    let mut out = Vec::new();
    if scripts.is_empty() && make.is_empty() {
        return out;
    }
    for invocation in direct {
        let via = invocation.source.clone();
        let mut seen: HashSet<String> = HashSet::new();
        let mut pending: Vec<(String, usize)> = vec![(invocation.text.clone(), 0)];
        while let Some((text, depth)) = pending.pop() {
            if depth >= MAX_DEPTH {
                continue;
            }
            for (file, line, command) in invoked(&text, scripts, make, &mut seen) {
                pending.push((command.clone(), depth + 1));
                out.push(Invocation {
                    system: invocation.system.clone(),
                    text: command,
                    source: Source::file(file, Some(line)),
                    via: Some(via.clone()),
                    origin: invocation.origin.clone(),
                    on_schedule: invocation.on_schedule,
                });
            }
        }
    }
    out
}

/// The lines (file, line, command) that `command` runs, skipping scripts
/// and targets already `seen`.
fn invoked(
    command: &str,
    scripts: &HashMap<String, Vec<(usize, String)>>,
    make: &HashMap<String, MakeTarget>,
    seen: &mut HashSet<String>,
) -> Vec<(String, usize, String)> {
    let mut lines = Vec::new();
    let tokens = tokens(command);
    for token in &tokens {
        let Some(path) = script_path(token, scripts) else {
            continue;
        };
        if seen.insert(format!("script {path}"))
            && let Some(body) = scripts.get(path)
        {
            lines.extend(
                body.iter()
                    .map(|(line, text)| (path.to_owned(), *line, text.clone())),
            );
        }
    }
    let Some(at) = tokens
        .iter()
        .position(|t| t == "make" || t.ends_with("/make"))
    else {
        return lines;
    };
    let mut goals: Vec<&str> = tokens[at + 1..]
        .iter()
        .map(String::as_str)
        .filter(|t| make.contains_key(*t))
        .collect();
    while let Some(goal) = goals.pop() {
        if !seen.insert(format!("make {goal}")) {
            continue;
        }
        let Some(target) = make.get(goal) else {
            continue;
        };
        lines.extend(
            target
                .recipe
                .iter()
                .map(|(line, text)| (target.file.clone(), *line, text.clone())),
        );
        goals.extend(
            target
                .prerequisites
                .iter()
                .map(String::as_str)
                .filter(|p| make.contains_key(*p)),
        );
    }
    lines
}

/// The script a token names: its path, or the one script whose path ends
/// in it (`cd sub && ./run.sh`).
fn script_path<'a>(
    token: &str,
    scripts: &'a HashMap<String, Vec<(usize, String)>>,
) -> Option<&'a str> {
    if !(token.ends_with(".sh") || token.ends_with(".bash")) {
        return None;
    }
    if let Some((path, _)) = scripts.get_key_value(token) {
        return Some(path);
    }
    let suffix = format!("/{token}");
    let mut matches = scripts.keys().filter(|path| path.ends_with(&suffix));
    let first = matches.next()?;
    matches.next().is_none().then_some(first.as_str())
}
