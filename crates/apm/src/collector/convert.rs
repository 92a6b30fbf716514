//! Scraped exposition text into samples for the store.
//!
//! Counters, and a histogram's or summary's `_bucket`, `_sum` and `_count`
//! (and `_created`), are stored as counters (their increases); gauges, a
//! summary's quantiles, and untyped, info and stateset samples as gauges.
//! A gauge histogram's samples are gauges. Timestamps in the text are
//! ignored: a point is stamped with its scrape's time. The scraper's
//! labels are added to every sample; a label the target sets itself with
//! the same name is kept as `exported_<name>`, as Prometheus does by
//! default (`honor_labels: false`).

use crate::prom::{self, Limits, MetricType};
use crate::tsdb::{ExemplarPoint, Millis, Sample, SeriesKey, SeriesKind};

/// The samples of exposition `text`, with `labels` added. The error is
/// the parser's, with its line.
pub fn samples_from_text(text: &str, labels: &[(&str, &str)]) -> Result<Vec<Sample>, String> {
    Ok(scrape_from_text(text, labels, 0)?.0)
}

/// The samples of exposition `text`, with `labels` added, and the
/// exemplars that name a request (a `request_id` or `trace_id` label),
/// stamped with their own time or else `now`.
pub fn scrape_from_text(
    text: &str,
    labels: &[(&str, &str)],
    now: Millis,
) -> Result<(Vec<Sample>, Vec<ExemplarPoint>), String> {
    let families = prom::parse(text, &Limits::default()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut exemplars = Vec::new();
    for f in &families {
        for s in &f.samples {
            let suffix = s.name.strip_prefix(f.name.as_str()).unwrap_or("");
            let kind = match (f.kind, suffix) {
                (MetricType::Counter, _) => SeriesKind::Counter,
                (MetricType::Histogram, _) => SeriesKind::Counter,
                (MetricType::Summary, "_sum" | "_count" | "_created") => SeriesKind::Counter,
                _ => SeriesKind::Gauge,
            };
            let mut key = SeriesKey::new(
                s.name.as_str(),
                s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
            for (k, v) in labels {
                if let Some(own) = key.labels.remove(*k) {
                    key.labels.insert(format!("exported_{k}"), own);
                }
                key.labels.insert((*k).to_owned(), (*v).to_owned());
            }
            if let Some(e) = &s.exemplar
                && let Some((_, id)) = e
                    .labels
                    .iter()
                    .find(|(k, _)| k == "request_id" || k == "trace_id")
            {
                exemplars.push(ExemplarPoint {
                    key: key.clone(),
                    request_id: id.clone(),
                    value: e.value,
                    ts: e
                        .timestamp
                        .filter(|t| t.is_finite() && *t > 0.0)
                        .map_or(now, |t| (t * 1000.0) as Millis),
                });
            }
            out.push(Sample {
                key,
                kind,
                value: s.value,
            });
        }
    }
    Ok((out, exemplars))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_labels_follow_the_families() {
        let text = "# TYPE r counter\nr_total{job=\"mine\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n# TYPE s summary\ns{quantile=\"0.5\"} 0.1\ns_count 4\ng 7\n";
        let s = samples_from_text(text, &[("job", "replica")]).unwrap();
        let kind = |name: &str| s.iter().find(|x| x.key.name == name).unwrap().kind;
        assert_eq!(kind("r_total"), SeriesKind::Counter);
        assert_eq!(kind("h_bucket"), SeriesKind::Counter);
        assert_eq!(kind("h_sum"), SeriesKind::Counter);
        assert_eq!(kind("s"), SeriesKind::Gauge);
        assert_eq!(kind("s_count"), SeriesKind::Counter);
        assert_eq!(kind("g"), SeriesKind::Gauge);
        let r = &s[0].key;
        assert_eq!(r.label("job"), Some("replica"));
        assert_eq!(r.label("exported_job"), Some("mine"));
        assert!(samples_from_text("x{", &[]).unwrap_err().contains("line 1"));
    }

    #[test]
    fn exemplars_naming_a_request_are_kept() {
        let text = "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1 # {request_id=\"abc\"} 0.05 1700000000.5\nh_bucket{le=\"+Inf\"} 2 # {span=\"x\"} 3\nh_count 2\nh_sum 3.05\n# EOF\n";
        let (s, e) = scrape_from_text(text, &[("job", "gateway")], 42).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].request_id, "abc");
        assert_eq!(e[0].ts, 1_700_000_000_500);
        assert_eq!(e[0].key.label("le"), Some("0.1"));
        assert_eq!(e[0].key.label("job"), Some("gateway"));
    }
}
