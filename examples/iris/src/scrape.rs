//! `iris scrape`: fetch /metrics and check that expected metrics are present.

use std::path::PathBuf;

use crate::cli::{FlagSpec, Flags};
use crate::client::{self, HttpClient};
use crate::error::{Error, Result};
use crate::prom::{self, Sample};

/// Options of `iris scrape`.
#[derive(Debug, Clone)]
pub struct ScrapeOptions {
    /// Port file written by `iris serve`.
    pub port_file: PathBuf,
    /// Metric names that must be present.
    pub expect: Vec<String>,
}

impl ScrapeOptions {
    const FLAGS: &[FlagSpec] = &[FlagSpec::value("port-file"), FlagSpec::repeated("expect")];

    /// Parses the flags of `iris scrape`.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let flags = Flags::parse("scrape", Self::FLAGS, args)?;
        let expect: Vec<String> = flags.all("expect").into_iter().map(str::to_owned).collect();
        if expect.is_empty() {
            return Err(flags.error("at least one --expect METRIC is required"));
        }
        Ok(Self {
            port_file: flags.required_path("port-file")?,
            expect,
        })
    }
}

/// Whether a metric is a counter that must have counted something:
/// `*_total` counters and histogram/summary `*_count` samples.
pub fn must_be_positive(name: &str) -> bool {
    name.ends_with("_total") || name.ends_with("_count")
}

/// Checks one expected metric against the scraped samples; returns a summary line.
///
/// `name` is a sample name (`iris_requests_total`) or the family name of a
/// histogram or counter (`iris_request_duration_seconds` is checked through its
/// `_count` sample).
pub fn check_metric(samples: &[Sample], name: &str) -> std::result::Result<String, String> {
    let with =
        |wanted: &str| -> Vec<&Sample> { samples.iter().filter(|s| s.name == wanted).collect() };
    let candidates = [
        name.to_owned(),
        format!("{name}_count"),
        format!("{name}_total"),
    ];
    let Some((name, found)) = candidates
        .iter()
        .map(|candidate| (candidate.as_str(), with(candidate)))
        .find(|(_, found)| !found.is_empty())
    else {
        let similar = samples
            .iter()
            .map(|s| s.name.as_str())
            .find(|n| n.starts_with(name) || name.starts_with(*n));
        let hint = similar
            .map(|n| format!(" (did you mean {n}?)"))
            .unwrap_or_default();
        return Err(format!("{name} is missing{hint}"));
    };
    let total: f64 = found.iter().map(|s| s.value).sum();
    let series: Vec<String> = found
        .iter()
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            if labels.is_empty() {
                prom::format_value(s.value)
            } else {
                format!("{{{}}} {}", labels.join(","), prom::format_value(s.value))
            }
        })
        .collect();
    let summary = if found.len() == 1 {
        format!("{name} = {}", series[0])
    } else {
        format!(
            "{name} = {} over {} series: {}",
            prom::format_value(total),
            found.len(),
            series.join(", ")
        )
    };
    if must_be_positive(name) && total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(format!(
            "{summary}, but a counter should be greater than zero"
        ));
    }
    Ok(summary)
}

/// Runs `iris scrape`.
pub async fn run(args: &[String]) -> Result<()> {
    let options = ScrapeOptions::from_args(args)?;
    let port = client::read_port_file(&options.port_file)?;
    let client = HttpClient::new(port);
    let response = client
        .get("/metrics")
        .await
        .map_err(|err| err.context("scrape"))?;
    if response.status != 200 {
        return Err(Error::new(format!(
            "scrape: {} answered {}",
            client.url("/metrics"),
            response.status
        )));
    }
    let samples = prom::parse_text(&response.text()).map_err(|err| err.context("scrape"))?;
    println!(
        "scrape: {} samples from {}",
        samples.len(),
        client.url("/metrics")
    );
    let mut failures = Vec::new();
    for name in &options.expect {
        match check_metric(&samples, name) {
            Ok(summary) => println!("  ok    {summary}"),
            Err(reason) => {
                println!("  FAIL  {reason}");
                failures.push(reason);
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!("scrape: {}", failures.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Sample> {
        prom::parse_text(
            "iris_requests_total{path=\"/health\",code=\"200\"} 2\n\
             iris_requests_total{path=\"/metrics\",code=\"200\"} 1\n\
             iris_predictions_total{label=\"setosa\"} 0\n\
             iris_request_duration_seconds_count 3\n",
        )
        .unwrap()
    }

    #[test]
    fn checks_presence_and_counters() {
        let samples = samples();
        let ok = check_metric(&samples, "iris_requests_total").unwrap();
        assert!(
            ok.starts_with("iris_requests_total = 3 over 2 series"),
            "{ok}"
        );
        assert_eq!(
            check_metric(&samples, "iris_request_duration_seconds_count").unwrap(),
            "iris_request_duration_seconds_count = 3"
        );
        let zero = check_metric(&samples, "iris_predictions_total").unwrap_err();
        assert!(zero.contains("should be greater than zero"), "{zero}");
        assert_eq!(
            check_metric(&samples, "iris_request_duration_seconds").unwrap(),
            "iris_request_duration_seconds_count = 3"
        );
        assert!(
            check_metric(&samples, "iris_requests")
                .unwrap()
                .starts_with("iris_requests_total = 3")
        );
        assert_eq!(
            check_metric(&samples, "iris_request").unwrap_err(),
            "iris_request is missing (did you mean iris_requests_total?)"
        );
        assert_eq!(check_metric(&samples, "up").unwrap_err(), "up is missing");
    }
}
