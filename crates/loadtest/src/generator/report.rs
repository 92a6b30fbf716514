//! The load test as a self-contained HTML page: the summary, the
//! thresholds, and charts over the run's seconds — the rate, latency
//! percentiles, errors — as inline SVG (the monitoring dashboard's
//! charts). No script, nothing loaded: it opens from a file, a CI
//! artifact or an e-mail.

use std::fmt::Write as _;

use mlops_apm::dashboard::{STYLE, esc, line_chart};
use mlops_apm::tsdb::Point;

use super::result::LoadResult;

/// The page for `result`, titled `title`.
pub fn html_report(result: &LoadResult, title: &str) -> String {
    let r = &result.report;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}{EXTRA}</style></head><body>\
         <header><h1>{}</h1><p>{} {} · {}</p></header><main>",
        esc(title),
        esc(title),
        esc(&r.method),
        esc(&r.target),
        esc(&workload(result)),
    );
    // The summary.
    let rate = if r.requests > 0 {
        r.errors as f64 / r.requests as f64 * 100.0
    } else {
        0.0
    };
    out.push_str("<section><h2>Summary</h2><table class=\"summary\"><tbody>");
    let row = |out: &mut String, name: &str, value: String| {
        let _ = write!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(name),
            esc(&value)
        );
    };
    row(&mut out, "requests", r.requests.to_string());
    row(&mut out, "rate achieved", format!("{:.1}/s", r.rps));
    if let Some(target) = r.target_rps {
        row(&mut out, "rate asked (mean)", format!("{target:.1}/s"));
    }
    row(
        &mut out,
        "errors",
        format!(
            "{} ({rate:.2} %): 4xx {}, 5xx {}, connect {}, timeout {}, transport {}",
            r.errors,
            r.errors_by_kind.status_4xx,
            r.errors_by_kind.status_5xx,
            r.errors_by_kind.connect,
            r.errors_by_kind.timeout,
            r.errors_by_kind.transport
        ),
    );
    row(&mut out, "elapsed", format!("{:.2} s", r.elapsed_s));
    match &r.latency_ms {
        Some(l) => row(
            &mut out,
            "latency (ms)",
            format!(
                "min {:.3} · mean {:.3} · p50 {:.3} · p90 {:.3} · p99 {:.3} · max {:.3}",
                l.min, l.mean, l.p50, l.p90, l.p99, l.max
            ),
        ),
        None => row(&mut out, "latency", "no response".to_owned()),
    }
    if result.runs > 1 {
        row(&mut out, "generators merged", result.runs.to_string());
    }
    out.push_str("</tbody></table></section>");
    // The thresholds.
    if !result.thresholds.is_empty() {
        out.push_str(
            "<section><h2>Thresholds</h2><table><thead><tr><th>threshold</th><th>result</th>\
             <th>detail</th></tr></thead><tbody>",
        );
        for v in &result.thresholds {
            let (class, word) = if v.passed {
                ("pass", "passed")
            } else {
                ("fail", "FAILED")
            };
            let _ = write!(
                out,
                "<tr class=\"{class}\"><td>{}</td><td>{word}</td><td>{}</td></tr>",
                esc(&v.threshold),
                esc(&v.detail)
            );
        }
        out.push_str("</tbody></table></section>");
    }
    // The charts, over seconds since the start (drawn as a clock from 0).
    let seconds = &r.per_second;
    let last = seconds.last().map_or(1, |b| (b.second as i64).max(1));
    let range = (0, last * 1000, 1000);
    let series = |f: &dyn Fn(&mlops_release::driver::SecondBucket) -> Option<f64>| -> Vec<Point> {
        seconds
            .iter()
            .filter_map(|b| {
                f(b).map(|value| Point {
                    ts: b.second as i64 * 1000,
                    value,
                })
            })
            .collect()
    };
    out.push_str("<section><h2>Over time</h2><p class=\"note\">Each second holds the requests due in it (sent in it, for a closed workload); the clock runs from the start of the run.</p><div class=\"charts\">");
    out.push_str(&line_chart(
        "Requests",
        "per second",
        &[("requests".to_owned(), series(&|b| Some(b.requests as f64)))],
        range,
        &[],
    ));
    out.push_str(&line_chart(
        "Latency",
        "ms",
        &[
            ("p50".to_owned(), series(&|b| b.latency_ms.map(|l| l.p50))),
            ("p90".to_owned(), series(&|b| b.latency_ms.map(|l| l.p90))),
            ("p99".to_owned(), series(&|b| b.latency_ms.map(|l| l.p99))),
            ("max".to_owned(), series(&|b| b.latency_ms.map(|l| l.max))),
        ],
        range,
        &[],
    ));
    out.push_str(&line_chart(
        "Errors",
        "per second",
        &[
            ("all".to_owned(), series(&|b| Some(b.errors.total() as f64))),
            (
                "5xx".to_owned(),
                series(&|b| Some(b.errors.status_5xx as f64)),
            ),
            (
                "timeout".to_owned(),
                series(&|b| Some(b.errors.timeout as f64)),
            ),
            (
                "connect".to_owned(),
                series(&|b| Some(b.errors.connect as f64)),
            ),
        ],
        range,
        &[],
    ));
    out.push_str("</div></section></main></body></html>\n");
    out
}

fn workload(result: &LoadResult) -> String {
    let r = &result.report;
    match (r.target_rps, r.users) {
        (Some(rate), None) => format!("open workload, {rate:.1}/s asked"),
        (None, Some(users)) => format!("closed workload, {users} users"),
        (Some(rate), Some(users)) => {
            format!("merged: open runs {rate:.1}/s asked, closed runs {users} users")
        }
        (None, None) => "no workload".to_owned(),
    }
}

const EXTRA: &str = "table.summary th{width:10em}tr.pass td{background:#eef7ee}\
tr.fail td{background:#fde8e8}p.note{font-size:12px;color:#666;margin:0 0 8px}";
