//! A line-based outline of a YAML file: keys, list items and their values,
//! each with its line and the keys above it.
//!
//! It is enough to find the commands and triggers of CI files; it is not a
//! YAML parser. Anchors, aliases, tags and complex keys are read leniently,
//! multi-line plain scalars are folded into the value above them. It rejects
//! what would make a CI system reject the file outright: tabs in
//! indentation, unclosed quotes and brackets, and lines that are neither a
//! key, a list item nor the continuation of a value.

/// The ancestors of a list item are marked with this name.
pub(super) const ITEM: &str = "-";

/// One key or list item.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// 1-based line of the key or item.
    pub(super) line: usize,
    /// The keys (and [`ITEM`] for list items) above it, outermost first.
    pub(super) ancestors: Vec<String>,
    /// The key, or `None` for a list item that is a plain value.
    pub(super) key: Option<String>,
    /// Its value as written on the line (or the lines of a block scalar).
    pub(super) value: Value,
}

impl Node {
    /// The key it is directly under, skipping list-item markers.
    pub(super) fn parent_key(&self) -> Option<&str> {
        self.ancestors
            .iter()
            .rev()
            .find(|a| a.as_str() != ITEM)
            .map(String::as_str)
    }

    /// Whether it is a list item that is a value (not a key).
    pub(super) fn is_item_value(&self) -> bool {
        self.key.is_none() && self.ancestors.last().is_some_and(|a| a == ITEM)
    }

    /// Whether its ancestors start with `path`.
    pub(super) fn is_under(&self, path: &[&str]) -> bool {
        self.ancestors.len() >= path.len() && self.ancestors.iter().zip(path).all(|(a, p)| a == p)
    }

    /// The scalar strings of the value: one for a scalar, the items of a
    /// flow sequence, each line of a block scalar; with their lines.
    pub(super) fn strings(&self) -> Vec<(usize, String)> {
        match &self.value {
            Value::Empty => Vec::new(),
            Value::Scalar(s) => vec![(self.line, s.clone())],
            Value::Flow(f) => flow_items(f)
                .into_iter()
                .map(|item| (self.line, item))
                .collect(),
            Value::Block(lines) => lines.clone(),
        }
    }
}

/// The value of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    /// Nothing on the line: the value, if any, is on the lines below.
    Empty,
    /// A scalar, unquoted.
    Scalar(String),
    /// A flow collection (`[a, b]`, `{a: b}`), as written.
    Flow(String),
    /// The non-empty lines of a block scalar (`|`, `>`), with their
    /// lines, the block's indentation removed.
    Block(Vec<(usize, String)>),
}

/// Why a file does not read as YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct YamlError {
    /// 1-based line.
    pub(super) line: usize,
    /// What is wrong.
    pub(super) message: String,
}

struct Open {
    col: usize,
    name: String,
    item: bool,
}

/// The outline of `text`.
pub(super) fn outline(text: &str) -> Result<Vec<Node>, YamlError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut stack: Vec<Open> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let no = i + 1;
        i += 1;
        let content = raw.trim_start_matches(' ');
        let trimmed = content.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if content.starts_with('\t') {
            return Err(error(no, "tab character in indentation"));
        }
        let mut col = raw.len() - content.len();
        if col == 0 && (is_marker(trimmed, "---") || is_marker(trimmed, "...")) {
            stack.clear();
            continue;
        }
        if col == 0 && trimmed.starts_with('%') {
            continue;
        }
        let mut rest = content.trim_end();
        let mut in_item = false;
        let mut item_col = col;
        while rest == "-" || rest.starts_with("- ") {
            while stack
                .last()
                .is_some_and(|o| o.col > col || (o.col == col && o.item))
            {
                stack.pop();
            }
            stack.push(Open {
                col,
                name: ITEM.to_owned(),
                item: true,
            });
            in_item = true;
            item_col = col;
            let after = &rest[1..];
            let inner = after.trim_start_matches(' ');
            col += 1 + after.len() - inner.len();
            rest = inner;
        }
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        if let Some((key, value_text)) = split_key(rest, in_item) {
            while stack.last().is_some_and(|o| o.col >= col) {
                stack.pop();
            }
            let value = read_value(value_text, col, &lines, &mut i, no)?;
            nodes.push(Node {
                line: no,
                ancestors: stack.iter().map(|o| o.name.clone()).collect(),
                key: Some(key.clone()),
                value,
            });
            stack.push(Open {
                col,
                name: key,
                item: false,
            });
        } else if in_item {
            let value = read_value(rest, item_col, &lines, &mut i, no)?;
            nodes.push(Node {
                line: no,
                ancestors: stack.iter().map(|o| o.name.clone()).collect(),
                key: None,
                value,
            });
        } else if stack.last().is_some_and(|o| col > o.col)
            && let Some(last) = nodes.last_mut()
            && matches!(last.value, Value::Empty | Value::Scalar(_))
        {
            // A plain scalar continued on a more indented line.
            let folded = strip_comment(rest);
            last.value = match std::mem::replace(&mut last.value, Value::Empty) {
                Value::Scalar(s) => Value::Scalar(format!("{s} {folded}")),
                _ => Value::Scalar(folded.to_owned()),
            };
        } else {
            return Err(error(no, "expected `key: value` or `- item`"));
        }
    }
    Ok(nodes)
}

fn is_marker(line: &str, marker: &str) -> bool {
    line == marker || line.starts_with(&format!("{marker} "))
}

fn error(line: usize, message: &str) -> YamlError {
    YamlError {
        line,
        message: message.to_owned(),
    }
}

/// `key: value` → (key, value text). In a list item, a "key" with spaces or
/// quotes is taken as part of a plain value (`- echo "a: b"`).
fn split_key(rest: &str, in_item: bool) -> Option<(String, &str)> {
    let first = rest.chars().next()?;
    if first == '"' || first == '\'' {
        let close = closing_quote(rest, first)?;
        let after = rest[close + 1..].trim_start();
        let value = after.strip_prefix(':')?;
        if !(value.is_empty() || value.starts_with([' ', '\t'])) {
            return None;
        }
        let key = unquote(&rest[..=close]);
        return Some((key, value.trim()));
    }
    if matches!(
        first,
        '[' | '{' | '|' | '>' | '*' | '!' | '&' | '#' | '@' | '`'
    ) {
        return None;
    }
    let bytes = rest.as_bytes();
    let mut at = None;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && i > 0 && bytes[i - 1] == b' ' {
            return None;
        }
        if b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t') {
            at = Some(i);
            break;
        }
    }
    let at = at?;
    let key = rest[..at].trim_end();
    if key.is_empty() {
        return None;
    }
    if in_item && key.contains([' ', '"', '\'', '$', '(', '=']) {
        return None;
    }
    Some((key.to_owned(), rest[at + 1..].trim()))
}

/// Reads the value after a key (or of a list item) at column `col`; block
/// scalars and unclosed flow collections or quotes consume further lines.
fn read_value(
    text: &str,
    col: usize,
    lines: &[&str],
    next: &mut usize,
    no: usize,
) -> Result<Value, YamlError> {
    let mut text = text.trim();
    // Anchors and tags qualify the value; they are not part of it.
    while text.starts_with('&') || text.starts_with('!') {
        text = text
            .split_once(char::is_whitespace)
            .map_or("", |(_, rest)| rest.trim_start());
    }
    if text.is_empty() || text.starts_with('#') {
        return Ok(Value::Empty);
    }
    if is_block_header(text) {
        let mut block = Vec::new();
        let mut indent = None;
        while *next < lines.len() {
            let line = lines[*next];
            let content = line.trim_start_matches(' ');
            if content.trim().is_empty() {
                *next += 1;
                continue;
            }
            let this = line.len() - content.len();
            if this <= col {
                break;
            }
            let strip = (*indent.get_or_insert(this)).min(this);
            block.push((*next + 1, line[strip..].trim_end().to_owned()));
            *next += 1;
        }
        return Ok(Value::Block(block));
    }
    let first = text.chars().next().unwrap_or(' ');
    if first == '[' || first == '{' {
        let mut joined = text.to_owned();
        while !balanced(&joined) {
            if *next >= lines.len() {
                return Err(error(no, &format!("unclosed `{first}`")));
            }
            joined.push(' ');
            joined.push_str(lines[*next].trim());
            *next += 1;
        }
        return Ok(Value::Flow(strip_comment(&joined).to_owned()));
    }
    if first == '"' || first == '\'' {
        let mut joined = text.to_owned();
        while closing_quote(&joined, first).is_none() {
            if *next >= lines.len() {
                return Err(error(no, "unclosed quote"));
            }
            joined.push(' ');
            joined.push_str(lines[*next].trim());
            *next += 1;
        }
        let close = closing_quote(&joined, first).unwrap_or(joined.len() - 1);
        return Ok(Value::Scalar(unquote(&joined[..=close])));
    }
    Ok(Value::Scalar(strip_comment(text).to_owned()))
}

fn is_block_header(text: &str) -> bool {
    let text = strip_comment(text);
    let mut chars = text.chars();
    matches!(chars.next(), Some('|' | '>')) && chars.all(|c| matches!(c, '+' | '-' | '0'..='9'))
}

/// The index of the quote closing the one at index 0.
fn closing_quote(s: &str, quote: char) -> Option<usize> {
    let bytes = s.as_bytes();
    let q = quote as u8;
    let mut i = 1;
    while i < bytes.len() {
        if quote == '"' && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == q {
            if quote == '\'' && bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unquote(s: &str) -> String {
    let inner = s.get(1..s.len().saturating_sub(1)).unwrap_or("");
    if s.starts_with('\'') {
        inner.replace("''", "'")
    } else {
        inner.replace("\\\"", "\"").replace("\\\\", "\\")
    }
}

/// Drops a ` # comment` outside quotes.
fn strip_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') => {
                return s[..i].trim_end();
            }
            None => {}
        }
    }
    s.trim_end()
}

fn balanced(s: &str) -> bool {
    let mut depth: i64 = 0;
    let mut quote = None;
    for b in strip_comment(s).bytes() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth -= 1,
                _ => {}
            },
        }
    }
    depth <= 0 && quote.is_none()
}

/// The items of a flow collection: `[a, "b"]` → a, b; `{a: 1, b: {c: 2}}` →
/// a, b (the keys).
pub(super) fn flow_items(flow: &str) -> Vec<String> {
    let flow = flow.trim();
    let mapping = flow.starts_with('{');
    let inner = flow
        .get(1..flow.len().saturating_sub(1))
        .unwrap_or("")
        .trim();
    let mut items = Vec::new();
    let mut depth = 0i64;
    let mut quote = None;
    let mut start = 0;
    let bytes = inner.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth -= 1,
                b',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let item = if mapping {
                item.split_once(':').map_or(item, |(key, _)| key).trim()
            } else {
                item
            };
            if item.len() >= 2 && (item.starts_with('"') || item.starts_with('\'')) {
                unquote(item)
            } else {
                item.to_owned()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<(usize, String, Option<String>, Value)> {
        outline(text)
            .unwrap()
            .into_iter()
            .map(|n| (n.line, n.ancestors.join("."), n.key, n.value))
            .collect()
    }

    #[test]
    fn nested_keys_items_and_blocks() {
        let text = "\
on:
  push:
    tags: ['v*']
jobs:
  test:
    steps:
      - uses: actions/checkout@v4 # pinned
      - name: Run
        run: |
          pip install -r requirements.txt

          pytest -q
      - run: echo done
";
        let got = keys(text);
        assert_eq!(got[0], (1, String::new(), Some("on".into()), Value::Empty));
        assert_eq!(got[2].0, 3);
        assert_eq!(got[2].1, "on.push");
        assert_eq!(got[2].3, Value::Flow("['v*']".into()));
        assert_eq!(
            got[6],
            (
                7,
                "jobs.test.steps.-".into(),
                Some("uses".into()),
                Value::Scalar("actions/checkout@v4".into())
            )
        );
        assert_eq!(
            got[8].3,
            Value::Block(vec![
                (10, "pip install -r requirements.txt".into()),
                (12, "pytest -q".into())
            ])
        );
        assert_eq!(
            got[9],
            (
                13,
                "jobs.test.steps.-".into(),
                Some("run".into()),
                Value::Scalar("echo done".into())
            )
        );
    }

    #[test]
    fn list_items_at_the_key_indent_and_quoted_commands() {
        let text = "test:\n  script:\n  - echo \"a: b\"\n  - 'pytest -q'\n  variables: {A: 1}\n";
        let got = keys(text);
        assert_eq!(
            got[2],
            (
                3,
                "test.script.-".into(),
                None,
                Value::Scalar("echo \"a: b\"".into())
            )
        );
        assert_eq!(
            got[3],
            (
                4,
                "test.script.-".into(),
                None,
                Value::Scalar("pytest -q".into())
            )
        );
        assert_eq!(got[4].1, "test");
    }

    #[test]
    fn malformed_files_are_errors_with_a_line() {
        assert_eq!(outline("on: [push\njobs:\n").unwrap_err().line, 1);
        assert_eq!(outline("on: push\njobs:\n\tbuild:\n").unwrap_err().line, 3);
        assert_eq!(outline("on: push\njobs\n").unwrap_err().line, 2);
        assert_eq!(outline("run: \"unclosed\n").unwrap_err().line, 1);
    }

    #[test]
    fn flow_items_of_sequences_and_mappings() {
        assert_eq!(
            flow_items("[push, 'pull_request']"),
            ["push", "pull_request"]
        );
        assert_eq!(
            flow_items("{push: {branches: [main]}, schedule: []}"),
            ["push", "schedule"]
        );
    }
}
