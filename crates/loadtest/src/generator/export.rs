//! Exports of a result for people: the per-second series as CSV (one row a
//! second, for a spreadsheet or pandas) and the summary as a text table.

use std::fmt::Write as _;

use mlops_release::driver::LatencySummary;

use super::result::LoadResult;

/// The per-second series as CSV: `second`, `requests`, `errors`, the errors
/// by kind, and the latency of that second's responses (`p50_ms`,
/// `p90_ms`, `p99_ms`, `max_ms`, `mean_ms`; empty when none).
pub fn per_second_csv(result: &LoadResult) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = [
        "second",
        "requests",
        "errors",
        "status_4xx",
        "status_5xx",
        "connect",
        "timeout",
        "transport",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "mean_ms",
    ];
    writer
        .write_record(header)
        .expect("writing csv to memory cannot fail");
    for b in &result.report.per_second {
        let e = &b.errors;
        let latency = |f: fn(&LatencySummary) -> f64| {
            b.latency_ms
                .as_ref()
                .map(f)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        let row = [
            b.second.to_string(),
            b.requests.to_string(),
            e.total().to_string(),
            e.status_4xx.to_string(),
            e.status_5xx.to_string(),
            e.connect.to_string(),
            e.timeout.to_string(),
            e.transport.to_string(),
            latency(|l| l.p50),
            latency(|l| l.p90),
            latency(|l| l.p99),
            latency(|l| l.max),
            latency(|l| l.mean),
        ];
        writer
            .write_record(row)
            .expect("writing csv to memory cannot fail");
    }
    let bytes = writer
        .into_inner()
        .expect("flushing csv to memory cannot fail");
    String::from_utf8(bytes).expect("the fields are ascii")
}

/// The end-of-run summary, as a few aligned lines of text.
pub fn summary_table(result: &LoadResult) -> String {
    let r = &result.report;
    let mut out = String::new();
    let runs = if result.runs > 1 {
        format!(" ({} runs merged)", result.runs)
    } else {
        String::new()
    };
    let workload = match (r.target_rps, r.users) {
        (Some(rate), _) => format!("open, {rate:.1}/s asked"),
        (None, Some(users)) => format!("closed, {users} users"),
        (None, None) => "merged".to_owned(),
    };
    let _ = writeln!(out, "target     {} {}{runs}", r.method, r.target);
    let _ = writeln!(out, "workload   {workload}, {:.2} s", r.elapsed_s);
    let _ = writeln!(
        out,
        "requests   {} ({:.1}/s), {} errors ({:.2}%)",
        r.requests,
        r.rps,
        r.errors,
        if r.requests > 0 {
            r.errors as f64 / r.requests as f64 * 100.0
        } else {
            0.0
        }
    );
    let e = &r.errors_by_kind;
    if e.total() > 0 {
        let _ = writeln!(
            out,
            "errors     4xx {}, 5xx {}, connect {}, timeout {}, transport {}",
            e.status_4xx, e.status_5xx, e.connect, e.timeout, e.transport
        );
    }
    match &r.latency_ms {
        Some(l) => {
            let _ = writeln!(
                out,
                "latency    {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "min", "mean", "p50", "p90", "p99", "max"
            );
            let _ = writeln!(
                out,
                "  (ms)     {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                l.min, l.mean, l.p50, l.p90, l.p99, l.max
            );
        }
        None => {
            let _ = writeln!(out, "latency    no response");
        }
    }
    let _ = writeln!(
        out,
        "bytes      {} sent, {} received",
        r.bytes_sent, r.bytes_received
    );
    if r.abandoned > 0 {
        let _ = writeln!(out, "abandoned  {} (the run was stopped)", r.abandoned);
    }
    for v in &result.thresholds {
        let _ = writeln!(out, "threshold  {}", v.detail);
    }
    out
}
