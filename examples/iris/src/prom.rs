//! Prometheus text exposition format 0.0.4: the server's metrics registry and
//! renderer. (mlops's collector scrapes and parses it.)

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the request duration histogram buckets.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative histogram with fixed bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram with the given (ascending) upper bounds.
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, value: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[slot] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count;
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| format_value(*b));
            write_sample(
                out,
                &format!("{name}_bucket"),
                &[("le", &le)],
                &cumulative.to_string(),
            );
        }
        write_sample(out, &format!("{name}_sum"), &[], &format_value(self.sum));
        write_sample(out, &format!("{name}_count"), &[], &self.count.to_string());
    }
}

/// The model server's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerMetrics {
    model_version: String,
    requests: BTreeMap<(String, u16), u64>,
    duration: Histogram,
    predictions: BTreeMap<String, u64>,
}

impl ServerMetrics {
    /// A fresh registry; prediction counters start at zero for every class.
    pub fn new(model_version: &str, classes: &[String]) -> Self {
        Self {
            model_version: model_version.to_owned(),
            requests: BTreeMap::new(),
            duration: Histogram::new(DURATION_BUCKETS),
            predictions: classes.iter().map(|c| (c.clone(), 0)).collect(),
        }
    }

    /// Records one handled request. `path` should be a fixed route name so
    /// that label cardinality stays bounded.
    pub fn record_request(&mut self, path: &str, code: u16, seconds: f64) {
        *self.requests.entry((path.to_owned(), code)).or_insert(0) += 1;
        self.duration.observe(seconds);
    }

    /// Counts predicted labels.
    pub fn record_predictions<'a>(&mut self, labels: impl IntoIterator<Item = &'a String>) {
        for label in labels {
            *self.predictions.entry(label.clone()).or_insert(0) += 1;
        }
    }

    /// Total requests recorded so far.
    pub fn total_requests(&self) -> u64 {
        self.duration.count()
    }

    /// Renders all metrics in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        write_header(
            &mut out,
            "iris_requests_total",
            "HTTP requests handled, by route and status code.",
            "counter",
        );
        for ((path, code), count) in &self.requests {
            write_sample(
                &mut out,
                "iris_requests_total",
                &[("path", path), ("code", &code.to_string())],
                &count.to_string(),
            );
        }
        write_header(
            &mut out,
            "iris_request_duration_seconds",
            "Time to handle an HTTP request, in seconds.",
            "histogram",
        );
        self.duration
            .render(&mut out, "iris_request_duration_seconds");
        write_header(
            &mut out,
            "iris_predictions_total",
            "Predictions returned, by predicted label.",
            "counter",
        );
        for (label, count) in &self.predictions {
            write_sample(
                &mut out,
                "iris_predictions_total",
                &[("label", label)],
                &count.to_string(),
            );
        }
        write_header(
            &mut out,
            "iris_model_info",
            "Served model; the value is always 1.",
            "gauge",
        );
        write_sample(
            &mut out,
            "iris_model_info",
            &[("version", &self.model_version)],
            "1",
        );
        out
    }
}

fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn write_sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label_value(val));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Formats a sample value (`+Inf`, `-Inf`, `NaN`, or a plain decimal).
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        vec!["setosa".to_owned(), "virginica".to_owned()]
    }

    #[test]
    fn renders_the_exposition_format() {
        let mut metrics = ServerMetrics::new("abc123", &classes());
        metrics.record_request("/health", 200, 0.000244140625);
        metrics.record_request("/health", 200, 0.00390625);
        metrics.record_request("/v2/models/iris/infer", 400, 20.0);
        metrics.record_predictions(&["setosa".to_owned()]);
        let text = metrics.render();
        let expected = "\
# HELP iris_requests_total HTTP requests handled, by route and status code.
# TYPE iris_requests_total counter
iris_requests_total{path=\"/health\",code=\"200\"} 2
iris_requests_total{path=\"/v2/models/iris/infer\",code=\"400\"} 1
# HELP iris_request_duration_seconds Time to handle an HTTP request, in seconds.
# TYPE iris_request_duration_seconds histogram
iris_request_duration_seconds_bucket{le=\"0.0005\"} 1
iris_request_duration_seconds_bucket{le=\"0.001\"} 1
iris_request_duration_seconds_bucket{le=\"0.0025\"} 1
iris_request_duration_seconds_bucket{le=\"0.005\"} 2
iris_request_duration_seconds_bucket{le=\"0.01\"} 2
iris_request_duration_seconds_bucket{le=\"0.025\"} 2
iris_request_duration_seconds_bucket{le=\"0.05\"} 2
iris_request_duration_seconds_bucket{le=\"0.1\"} 2
iris_request_duration_seconds_bucket{le=\"0.25\"} 2
iris_request_duration_seconds_bucket{le=\"0.5\"} 2
iris_request_duration_seconds_bucket{le=\"1\"} 2
iris_request_duration_seconds_bucket{le=\"2.5\"} 2
iris_request_duration_seconds_bucket{le=\"5\"} 2
iris_request_duration_seconds_bucket{le=\"10\"} 2
iris_request_duration_seconds_bucket{le=\"+Inf\"} 3
iris_request_duration_seconds_sum 20.004150390625
iris_request_duration_seconds_count 3
# HELP iris_predictions_total Predictions returned, by predicted label.
# TYPE iris_predictions_total counter
iris_predictions_total{label=\"setosa\"} 1
iris_predictions_total{label=\"virginica\"} 0
# HELP iris_model_info Served model; the value is always 1.
# TYPE iris_model_info gauge
iris_model_info{version=\"abc123\"} 1
";
        assert_eq!(text, expected);
        assert_eq!(metrics.total_requests(), 3);
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = String::new();
        write_sample(&mut out, "m", &[("l", "x\"y")], "1");
        assert_eq!(out, "m{l=\"x\\\"y\"} 1\n");
    }

    #[test]
    fn formats_special_values() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(3.0), "3");
    }
}
