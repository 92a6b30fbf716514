//! The Prometheus text exposition format: a parser and a writer.
//!
//! [`parse`] reads format 0.0.4 (what the gateway, the `iris` server and
//! Prometheus' client libraries write by default) and the parts of
//! OpenMetrics 1.0 text a scrape meets (`# UNIT`, `# EOF`, exemplars after
//! ` # `, the `info`, `stateset`, `gaugehistogram` and `unknown` types),
//! into [`Family`]s of [`Sample`]s; [`Family::histograms`] and
//! [`Family::summaries`] group a histogram's buckets, sum and count (a
//! summary's quantiles) by label set. It never panics, and it is bounded:
//! [`Limits`] caps the input's size, a line's length, a sample's labels,
//! the families and the samples, so an untrusted target (the collector
//! scrapes model servers) cannot make it hold more than the caller allows.
//! Every error names its line.
//!
//! [`write()`] renders families back as 0.0.4 text, escaping help texts and
//! label values, such that `parse(write(f)) == f`.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// What a family measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricType {
    /// A cumulative count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations in cumulative buckets, with their sum and count.
    Histogram,
    /// Observations as quantiles, with their sum and count.
    Summary,
    /// No `# TYPE` (0.0.4), or `unknown` (OpenMetrics).
    Untyped,
    /// OpenMetrics `info`: labels with the value 1.
    Info,
    /// OpenMetrics `stateset`.
    StateSet,
    /// OpenMetrics `gaugehistogram`.
    GaugeHistogram,
}

impl MetricType {
    /// Its name in a `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::GaugeHistogram => "gaugehistogram",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" | "unknown" => MetricType::Untyped,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "gaugehistogram" => MetricType::GaugeHistogram,
            _ => return None,
        })
    }

    /// The sample name suffixes this type's samples may carry.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            MetricType::Summary => &["_sum", "_count", "_created"],
            MetricType::Info => &["_info"],
            _ => &[],
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OpenMetrics exemplar: a trace of one observation (`# {trace_id="…"} 0.31 1700000000.5`).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Its labels (a request or trace id).
    pub labels: Vec<(String, String)>,
    /// The observed value.
    pub value: f64,
    /// When, in seconds since the epoch.
    pub timestamp: Option<f64>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (a histogram's `_bucket`, `_sum`… included).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value (NaN and ±Inf allowed).
    pub value: f64,
    /// Its timestamp in milliseconds since the epoch, if it has one.
    pub timestamp_ms: Option<i64>,
    /// An exemplar, if it has one.
    pub exemplar: Option<Exemplar>,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A metric family: its name, help, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family's name (a histogram's without `_bucket`).
    pub name: String,
    /// Its `# HELP` text, unescaped.
    pub help: Option<String>,
    /// Its `# TYPE` (untyped without one).
    pub kind: MetricType,
    /// Its OpenMetrics `# UNIT`.
    pub unit: Option<String>,
    /// Its samples, in the order read.
    pub samples: Vec<Sample>,
}

/// A histogram's series: one label set's buckets, sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSeries {
    /// The labels but `le`.
    pub labels: Vec<(String, String)>,
    /// Upper bounds and cumulative counts, sorted by bound (`+Inf` last).
    pub buckets: Vec<(f64, f64)>,
    /// The sum of the observations, if given.
    pub sum: Option<f64>,
    /// Their count, if given.
    pub count: Option<f64>,
}

/// A summary's series: one label set's quantiles, sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct SummarySeries {
    /// The labels but `quantile`.
    pub labels: Vec<(String, String)>,
    /// Quantiles (0..1) and their values, sorted.
    pub quantiles: Vec<(f64, f64)>,
    /// The sum, if given.
    pub sum: Option<f64>,
    /// The count, if given.
    pub count: Option<f64>,
}

fn without(labels: &[(String, String)], name: &str) -> Vec<(String, String)> {
    let mut l: Vec<_> = labels.iter().filter(|(k, _)| k != name).cloned().collect();
    l.sort();
    l
}

impl Family {
    /// A histogram's (or gauge histogram's) series by label set; none
    /// for other types. A bucket whose `le` is not a number is skipped.
    pub fn histograms(&self) -> Vec<HistogramSeries> {
        if !matches!(
            self.kind,
            MetricType::Histogram | MetricType::GaugeHistogram
        ) {
            return Vec::new();
        }
        let mut by: BTreeMap<Vec<(String, String)>, HistogramSeries> = BTreeMap::new();
        for s in &self.samples {
            let labels = without(&s.labels, "le");
            let entry = by.entry(labels.clone()).or_insert_with(|| HistogramSeries {
                labels,
                buckets: Vec::new(),
                sum: None,
                count: None,
            });
            let suffix = &s.name[self.name.len().min(s.name.len())..];
            match suffix {
                "_bucket" => {
                    if let Some(le) = s.label("le").and_then(parse_float) {
                        entry.buckets.push((le, s.value));
                    }
                }
                "_sum" | "_gsum" => entry.sum = Some(s.value),
                "_count" | "_gcount" => entry.count = Some(s.value),
                _ => {}
            }
        }
        by.into_values()
            .map(|mut h| {
                h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                h
            })
            .collect()
    }

    /// A summary's series by label set; none for other types.
    pub fn summaries(&self) -> Vec<SummarySeries> {
        if self.kind != MetricType::Summary {
            return Vec::new();
        }
        let mut by: BTreeMap<Vec<(String, String)>, SummarySeries> = BTreeMap::new();
        for s in &self.samples {
            let labels = without(&s.labels, "quantile");
            let entry = by.entry(labels.clone()).or_insert_with(|| SummarySeries {
                labels,
                quantiles: Vec::new(),
                sum: None,
                count: None,
            });
            let suffix = &s.name[self.name.len().min(s.name.len())..];
            match suffix {
                "" => {
                    if let Some(q) = s.label("quantile").and_then(parse_float) {
                        entry.quantiles.push((q, s.value));
                    }
                }
                "_sum" => entry.sum = Some(s.value),
                "_count" => entry.count = Some(s.value),
                _ => {}
            }
        }
        by.into_values()
            .map(|mut s| {
                s.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                s
            })
            .collect()
    }
}

/// How much a parse may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of input.
    pub max_bytes: usize,
    /// Bytes of one line.
    pub max_line: usize,
    /// Labels of one sample.
    pub max_labels: usize,
    /// Families.
    pub max_families: usize,
    /// Samples in all.
    pub max_samples: usize,
}

impl Default for Limits {
    /// 10 MiB, 64 KiB lines, 64 labels, 10 000 families, 200 000 samples.
    fn default() -> Self {
        Limits {
            max_bytes: 10 * 1024 * 1024,
            max_line: 64 * 1024,
            max_labels: 64,
            max_families: 10_000,
            max_samples: 200_000,
        }
    }
}

/// Why a text is not valid exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based line (0: the input as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A float as the format writes one: a decimal, `NaN`, `+Inf`, `-Inf`.
fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            // Rust also reads "infinity" and friends; the format does not.
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                return None;
            }
            s.parse().ok()
        }
    }
}

/// A cursor over one line.
struct Line<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Line<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_blanks(&mut self) {
        while self.rest().starts_with([' ', '\t']) {
            self.pos += 1;
        }
    }

    fn token(&mut self, stop: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.rest().chars().next() {
            if stop(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.s[start..self.pos]
    }

    fn eat(&mut self, c: char) -> bool {
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// `{name="value",…}` (the `{` already seen); escapes `\\`, `\"`, `\n`.
    fn labels(&mut self, max: usize) -> Result<Vec<(String, String)>, String> {
        let mut labels: Vec<(String, String)> = Vec::new();
        loop {
            self.skip_blanks();
            if self.eat('}') {
                return Ok(labels);
            }
            let name = self.token(|c| c == '=' || c == ' ' || c == '\t' || c == '}' || c == ',');
            if !valid_label_name(name) {
                return Err(if name.is_empty() {
                    format!("expected a label name at column {}", self.pos + 1)
                } else {
                    format!("invalid label name `{name}`")
                });
            }
            self.skip_blanks();
            if !self.eat('=') {
                return Err(format!("expected `=` after label `{name}`"));
            }
            self.skip_blanks();
            if !self.eat('"') {
                return Err(format!(
                    "the value of label `{name}` must be in double quotes"
                ));
            }
            let mut value = String::new();
            loop {
                let Some(c) = self.rest().chars().next() else {
                    return Err(format!("the value of label `{name}` has no closing quote"));
                };
                self.pos += c.len_utf8();
                match c {
                    '"' => break,
                    '\\' => {
                        let Some(e) = self.rest().chars().next() else {
                            return Err(format!("unfinished escape in label `{name}`"));
                        };
                        self.pos += e.len_utf8();
                        match e {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            other => {
                                return Err(format!(
                                    "invalid escape `\\{other}` in label `{name}` (only \\\\, \\\" and \\n)"
                                ));
                            }
                        }
                    }
                    c => value.push(c),
                }
            }
            if labels.iter().any(|(k, _)| k == name) {
                return Err(format!("label `{name}` appears twice"));
            }
            if labels.len() >= max {
                return Err(format!("more than {max} labels"));
            }
            labels.push((name.to_owned(), value));
            self.skip_blanks();
            if self.eat(',') {
                continue;
            }
            if self.eat('}') {
                return Ok(labels);
            }
            return Err(format!("expected `,` or `}}` after label `{name}`"));
        }
    }
}

/// Unescape a `# HELP` text: `\\` and `\n`.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The family a sample named `name` belongs to: the declared family it
/// names exactly, else the one whose name it extends by one of its type's
/// suffixes.
fn family_of(name: &str, declared: &BTreeMap<String, usize>, families: &[Family]) -> Option<usize> {
    if let Some(&i) = declared.get(name) {
        return Some(i);
    }
    for suffix in [
        "_bucket", "_sum", "_count", "_total", "_created", "_info", "_gsum", "_gcount",
    ] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(&i) = declared.get(base)
            && families[i].kind.suffixes().contains(&suffix)
        {
            return Some(i);
        }
    }
    None
}

/// Parse exposition `text` within `limits`.
pub fn parse(text: &str, limits: &Limits) -> Result<Vec<Family>, ParseError> {
    if text.len() > limits.max_bytes {
        return Err(ParseError {
            line: 0,
            message: format!(
                "{} bytes, over the limit of {} bytes",
                text.len(),
                limits.max_bytes
            ),
        });
    }
    let mut families: Vec<Family> = Vec::new();
    // Family name -> index, for names declared by HELP/TYPE or seen.
    let mut declared: BTreeMap<String, usize> = BTreeMap::new();
    let mut samples = 0usize;
    let mut eof = false;
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let err = |message: String| ParseError { line: n, message };
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.len() > limits.max_line {
            return Err(err(format!(
                "{} bytes, over the limit of {} bytes per line",
                line.len(),
                limits.max_line
            )));
        }
        if eof {
            if line.trim().is_empty() {
                continue;
            }
            return Err(err("text after `# EOF`".to_owned()));
        }
        if line.trim().is_empty() {
            continue;
        }
        let new_family = |name: &str,
                          families: &mut Vec<Family>,
                          declared: &mut BTreeMap<String, usize>|
         -> Result<usize, ParseError> {
            if let Some(&i) = declared.get(name) {
                return Ok(i);
            }
            if families.len() >= limits.max_families {
                return Err(err(format!("more than {} families", limits.max_families)));
            }
            families.push(Family {
                name: name.to_owned(),
                help: None,
                kind: MetricType::Untyped,
                unit: None,
                samples: Vec::new(),
            });
            declared.insert(name.to_owned(), families.len() - 1);
            Ok(families.len() - 1)
        };
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start_matches([' ', '\t']);
            if comment == "EOF" {
                eof = true;
                continue;
            }
            let mut words = comment.splitn(3, [' ', '\t']);
            let keyword = words.next().unwrap_or("");
            if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
                continue; // a free comment
            }
            let name = words.next().unwrap_or("");
            if !valid_metric_name(name) {
                return Err(err(format!("invalid metric name `{name}` in # {keyword}")));
            }
            let rest = words.next().unwrap_or("");
            let idx = new_family(name, &mut families, &mut declared)?;
            let f = &mut families[idx];
            match keyword {
                "HELP" => {
                    if f.help.is_some() {
                        return Err(err(format!("a second # HELP for `{name}`")));
                    }
                    f.help = Some(unescape_help(rest));
                }
                "TYPE" => {
                    let kind = MetricType::parse(rest.trim()).ok_or_else(|| {
                        err(format!("unknown type `{}` for `{name}`", rest.trim()))
                    })?;
                    if !f.samples.is_empty() {
                        return Err(err(format!("# TYPE for `{name}` after its samples")));
                    }
                    if f.kind != MetricType::Untyped && f.kind != kind {
                        return Err(err(format!("a second # TYPE for `{name}`")));
                    }
                    f.kind = kind;
                }
                _ => f.unit = Some(rest.trim().to_owned()),
            }
            continue;
        }
        // A sample.
        let mut l = Line { s: line, pos: 0 };
        l.skip_blanks();
        let name = l.token(|c| c == '{' || c == ' ' || c == '\t');
        if !valid_metric_name(name) {
            return Err(err(if name.is_empty() {
                "a sample with no metric name".to_owned()
            } else {
                format!("invalid metric name `{name}`")
            }));
        }
        let labels = if l.eat('{') {
            l.labels(limits.max_labels)
                .map_err(|m| err(format!("`{name}`: {m}")))?
        } else {
            Vec::new()
        };
        l.skip_blanks();
        let value_text = l.token(|c| c == ' ' || c == '\t');
        let value = parse_float(value_text).ok_or_else(|| {
            err(if value_text.is_empty() {
                format!("`{name}` has no value")
            } else {
                format!("`{name}`: `{value_text}` is not a number")
            })
        })?;
        l.skip_blanks();
        let mut timestamp_ms = None;
        if !l.rest().is_empty() && !l.rest().starts_with('#') {
            let t = l.token(|c| c == ' ' || c == '\t');
            timestamp_ms = Some(
                parse_timestamp(t)
                    .ok_or_else(|| err(format!("`{name}`: `{t}` is not a timestamp")))?,
            );
            l.skip_blanks();
        }
        let mut exemplar = None;
        if l.eat('#') {
            l.skip_blanks();
            if !l.eat('{') {
                return Err(err(format!("`{name}`: an exemplar starts with `{{`")));
            }
            let labels = l
                .labels(limits.max_labels)
                .map_err(|m| err(format!("`{name}` exemplar: {m}")))?;
            l.skip_blanks();
            let v = l.token(|c| c == ' ' || c == '\t');
            let value = parse_float(v)
                .ok_or_else(|| err(format!("`{name}` exemplar: `{v}` is not a number")))?;
            l.skip_blanks();
            let timestamp =
                if l.rest().is_empty() {
                    None
                } else {
                    let t = l.token(|c| c == ' ' || c == '\t');
                    Some(parse_float(t).filter(|t| t.is_finite()).ok_or_else(|| {
                        err(format!("`{name}` exemplar: `{t}` is not a timestamp"))
                    })?)
                };
            exemplar = Some(Exemplar {
                labels,
                value,
                timestamp,
            });
            l.skip_blanks();
        }
        if !l.rest().is_empty() {
            return Err(err(format!(
                "`{name}`: unexpected `{}` after the value",
                l.rest()
            )));
        }
        samples += 1;
        if samples > limits.max_samples {
            return Err(err(format!("more than {} samples", limits.max_samples)));
        }
        let idx = match family_of(name, &declared, &families) {
            Some(i) => i,
            None => new_family(name, &mut families, &mut declared)?,
        };
        families[idx].samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
            timestamp_ms,
            exemplar,
        });
    }
    Ok(families)
}

/// A timestamp: integer milliseconds (0.0.4), or seconds with a fraction
/// (OpenMetrics).
fn parse_timestamp(t: &str) -> Option<i64> {
    if let Ok(ms) = t.parse::<i64>() {
        return Some(ms);
    }
    let s = parse_float(t).filter(|s| s.is_finite())?;
    let ms = s * 1000.0;
    (ms.abs() < 9.0e18).then_some(ms.round() as i64)
}

/// Escape a label value: backslash, double quote, line feed.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A value as the format writes it (`NaN`, `+Inf`, `-Inf`, or the
/// shortest decimal that reads back to the same float).
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

fn write_labels(out: &mut String, labels: &[(String, String)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
    }
    out.push('}');
}

/// Render `families` as exposition text (format 0.0.4; a family's unit
/// and exemplars are OpenMetrics and written only when present).
pub fn write(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        if let Some(h) = &f.help {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(h));
        }
        if f.kind != MetricType::Untyped {
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        }
        if let Some(u) = &f.unit {
            let _ = writeln!(out, "# UNIT {} {u}", f.name);
        }
        for s in &f.samples {
            out.push_str(&s.name);
            write_labels(&mut out, &s.labels);
            let _ = write!(out, " {}", format_value(s.value));
            if let Some(t) = s.timestamp_ms {
                let _ = write!(out, " {t}");
            }
            if let Some(e) = &s.exemplar {
                out.push_str(" # {");
                for (i, (k, v)) in e.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                }
                let _ = write!(out, "}} {}", format_value(e.value));
                if let Some(t) = e.timestamp {
                    let _ = write!(out, " {}", format_value(t));
                }
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Family>, ParseError> {
        parse(text, &Limits::default())
    }

    #[test]
    fn a_client_library_exposition_is_read() {
        let text = "# HELP http_requests_total The total number of HTTP requests.\n\
# TYPE http_requests_total counter\n\
http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\
\n\
# Escaping in label values:\n\
msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
# Minimalistic line:\n\
metric_without_timestamp_and_labels 12.47\n\
# A weird metric from before the epoch:\n\
something_weird{problem=\"division by zero\"} +Inf -3982045\n\
# TYPE http_request_duration_seconds histogram\n\
http_request_duration_seconds_bucket{le=\"0.05\"} 24054\n\
http_request_duration_seconds_bucket{le=\"0.1\"} 33444\n\
http_request_duration_seconds_bucket{le=\"+Inf\"} 144320\n\
http_request_duration_seconds_sum 53423\n\
http_request_duration_seconds_count 144320\n\
# TYPE rpc_duration_seconds summary\n\
rpc_duration_seconds{quantile=\"0.01\"} 3102\n\
rpc_duration_seconds{quantile=\"0.5\"} 4773\n\
rpc_duration_seconds_sum 1.7560473e+07\n\
rpc_duration_seconds_count 2693\n";
        let f = p(text).unwrap();
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http_requests_total",
                "msdos_file_access_time_seconds",
                "metric_without_timestamp_and_labels",
                "something_weird",
                "http_request_duration_seconds",
                "rpc_duration_seconds"
            ]
        );
        assert_eq!(f[0].kind, MetricType::Counter);
        assert_eq!(f[0].samples[1].timestamp_ms, Some(1_395_066_363_000));
        assert_eq!(
            f[1].samples[0].label("error"),
            Some("Cannot find file:\n\"FILE.TXT\"")
        );
        assert_eq!(f[1].samples[0].label("path"), Some("C:\\DIR\\FILE.TXT"));
        assert_eq!(f[3].samples[0].value, f64::INFINITY);
        assert_eq!(f[3].samples[0].timestamp_ms, Some(-3_982_045));
        let h = f[4].histograms();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].buckets.last(), Some(&(f64::INFINITY, 144_320.0)));
        assert_eq!((h[0].sum, h[0].count), (Some(53_423.0), Some(144_320.0)));
        let s = f[5].summaries();
        assert_eq!(s[0].quantiles, vec![(0.01, 3102.0), (0.5, 4773.0)]);
        assert_eq!(s[0].count, Some(2693.0));
    }

    #[test]
    fn openmetrics_units_exemplars_and_eof_are_read() {
        let text = "# TYPE lat_seconds histogram\n# UNIT lat_seconds seconds\n\
lat_seconds_bucket{le=\"0.1\"} 8 # {request_id=\"abc\"} 0.093 1700000000.25\n\
lat_seconds_bucket{le=\"+Inf\"} 9\nlat_seconds_count 9\nlat_seconds_sum 1.5\n\
lat_seconds_created 1700000000.0\n# TYPE build info\nbuild_info{version=\"1\"} 1\n# EOF\n";
        let f = p(text).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].unit.as_deref(), Some("seconds"));
        let e = f[0].samples[0].exemplar.as_ref().unwrap();
        assert_eq!(e.labels, vec![("request_id".to_owned(), "abc".to_owned())]);
        assert_eq!(e.timestamp, Some(1_700_000_000.25));
        assert_eq!(f[1].kind, MetricType::Info);
        assert!(
            p("# EOF\nx 1\n")
                .unwrap_err()
                .message
                .contains("after `# EOF`")
        );
    }

    #[test]
    fn malformed_lines_say_where_and_what() {
        let cases = [
            ("x{a=\"1\" 2\n", 1, "expected `,` or `}`"),
            ("ok 1\nx{a=1} 2\n", 2, "double quotes"),
            ("x{a=\"1\",a=\"2\"} 3\n", 1, "appears twice"),
            ("x abc\n", 1, "not a number"),
            ("x\n", 1, "has no value"),
            ("x 1 2 3\n", 1, "unexpected"),
            ("1x 1\n", 1, "invalid metric name"),
            ("x{a=\"\\t\"} 1\n", 1, "invalid escape"),
            ("x{a=\"open} 1\n", 1, "no closing quote"),
            ("# TYPE x blob\n", 1, "unknown type"),
            ("# TYPE x counter\n# TYPE x gauge\n", 2, "second # TYPE"),
            ("x 1\n# TYPE x counter\n", 2, "after its samples"),
            ("x 1 soon\n", 1, "not a timestamp"),
            ("x infinity\n", 1, "not a number"),
        ];
        for (text, line, what) in cases {
            let e = p(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn limits_bound_what_is_held() {
        let small = Limits {
            max_bytes: 100,
            max_line: 20,
            max_labels: 2,
            max_families: 2,
            max_samples: 3,
        };
        assert!(
            parse(&"x 1\n".repeat(30), &small)
                .unwrap_err()
                .message
                .contains("limit of 100 bytes")
        );
        assert!(
            parse(&format!("{} 1\n", "x".repeat(30)), &small)
                .unwrap_err()
                .message
                .contains("per line")
        );
        assert!(
            parse(
                "x{a=\"1\",b=\"2\",c=\"3\"} 1\n",
                &Limits {
                    max_line: 100,
                    ..small
                }
            )
            .unwrap_err()
            .message
            .contains("more than 2 labels")
        );
        assert!(
            parse("a 1\nb 1\nc 1\n", &small)
                .unwrap_err()
                .message
                .contains("more than 2 families")
        );
        assert!(
            parse("a 1\na 1\na 1\na 1\n", &small)
                .unwrap_err()
                .message
                .contains("more than 3 samples")
        );
    }

    #[test]
    fn written_text_reads_back() {
        let f = vec![Family {
            name: "m".into(),
            help: Some("a \\ help\nwith lines".into()),
            kind: MetricType::Gauge,
            unit: None,
            samples: vec![Sample {
                name: "m".into(),
                labels: vec![("a".into(), "q\"uo\\te\nnl ü".into())],
                value: -0.1,
                timestamp_ms: Some(12),
                exemplar: None,
            }],
        }];
        assert_eq!(p(&write(&f)).unwrap(), f);
    }
}
