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
use crate::tsdb::{Sample, SeriesKey, SeriesKind};

/// The samples of exposition `text`, with `labels` added. The error is
/// the parser's, with its line.
pub fn samples_from_text(text: &str, labels: &[(&str, &str)]) -> Result<Vec<Sample>, String> {
    let families = prom::parse(text, &Limits::default()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
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
            out.push(Sample {
                key,
                kind,
                value: s.value,
            });
        }
    }
    Ok(out)
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
}
