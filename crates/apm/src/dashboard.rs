//! The monitoring dashboard: one self-contained HTML page (no scripts,
//! fonts or external resources; charts as server-rendered SVG) of the
//! release environment over a time range, from the collector's store:
//! request rate, error ratio and latency quantiles per variant, replicas
//! per variant, replicas' CPU and memory, scrape targets, the SLO alerts,
//! and the release events (production changes) marked on every time axis.
//!
//! `mlops monitor` serves it live on loopback (the page refreshes itself
//! with a `<meta http-equiv="refresh">`); `mlops monitor --snapshot FILE`
//! writes it once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::collector::{alerts, targets};
use crate::slo::{DURATION, REQUESTS};
use crate::tsdb::{Millis, Point, Selector, Store, TsdbError, histogram_quantile};

/// Something that happened, marked on the time axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When.
    pub ts: Millis,
    /// What (`iris:2 promoted`).
    pub label: String,
}

/// A feature's drift, for the drift table.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftRow {
    /// The feature.
    pub feature: String,
    /// The tests and their values, as text.
    pub tests: String,
    /// The verdict.
    pub verdict: String,
}

/// What the page shows.
#[derive(Debug, Clone)]
pub struct Page {
    /// Its title (`iris in production`).
    pub title: String,
    /// The range shown.
    pub from: Millis,
    /// Its end.
    pub to: Millis,
    /// The width of a point.
    pub step: Duration,
    /// Release events.
    pub events: Vec<Event>,
    /// The last drift report's rows, if there is one.
    pub drift: Option<(String, Vec<DriftRow>)>,
    /// Seconds between reloads of a live page; none for a snapshot.
    pub refresh: Option<u32>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

/// Text escaped for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `HH:MM:SS` (UTC) of a time.
fn clock(ts: Millis) -> String {
    let s = ts.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A short number: 3 significant digits, k/M suffixes.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A line chart as inline SVG: one polyline per series (broken where
/// points are more than two steps apart: no data is not a straight line),
/// the events as dashed vertical lines, a legend.
pub fn line_chart(
    title: &str,
    unit: &str,
    series: &[(String, Vec<Point>)],
    (from, to, step): (Millis, Millis, Millis),
    events: &[Event],
) -> String {
    const W: f64 = 640.0;
    const H: f64 = 220.0;
    const L: f64 = 56.0;
    const R: f64 = 12.0;
    const T: f64 = 12.0;
    const B: f64 = 28.0;
    let span = (to - from).max(1) as f64;
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.value))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let x = |ts: Millis| L + (ts - from) as f64 / span * (W - L - R);
    let y = |v: f64| T + (1.0 - v / top) * (H - T - B);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure class=\"chart\"><figcaption>{} <span class=\"unit\">({})</span></figcaption>\
         <svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(unit),
        esc(title)
    );
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        let yy = y(v);
        let _ = write!(
            svg,
            "<line x1=\"{L}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" class=\"grid\"/>\
             <text x=\"{}\" y=\"{:.1}\" class=\"ylabel\">{}</text>",
            W - R,
            L - 4.0,
            yy + 4.0,
            short(v)
        );
    }
    for i in 0..=4 {
        let ts = from + (span * i as f64 / 4.0) as Millis;
        // The last label ends at the axis' end rather than past the edge.
        let anchor = if i == 4 {
            " style=\"text-anchor:end\""
        } else {
            ""
        };
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" class=\"xlabel\"{anchor}>{}</text>",
            x(ts),
            H - 8.0,
            clock(ts)
        );
    }
    for e in events.iter().filter(|e| e.ts >= from && e.ts <= to) {
        let xx = x(e.ts);
        let _ = write!(
            svg,
            "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{T}\" y2=\"{}\" class=\"event\"><title>{}</title></line>\
             <text x=\"{:.1}\" y=\"{}\" class=\"elabel\">{}</text>",
            H - B,
            esc(&e.label),
            xx + 3.0,
            T + 10.0,
            esc(&e.label)
        );
    }
    let mut empty = true;
    for (i, (name, points)) in series.iter().enumerate() {
        let mut segments: Vec<Vec<String>> = Vec::new();
        let mut last: Option<Millis> = None;
        for p in points.iter().filter(|p| p.value.is_finite()) {
            if last.is_none_or(|l| p.ts - l > 2 * step.max(1)) {
                segments.push(Vec::new());
            }
            last = Some(p.ts);
            if let Some(seg) = segments.last_mut() {
                seg.push(format!("{:.1},{:.1}", x(p.ts), y(p.value)));
            }
        }
        if segments.is_empty() {
            continue;
        }
        empty = false;
        let color = COLORS[i % COLORS.len()];
        for seg in segments {
            // A lone point is a dot.
            let pts = if seg.len() == 1 {
                format!("{0} {0}", seg[0])
            } else {
                seg.join(" ")
            };
            let _ = write!(
                svg,
                "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\" stroke-linecap=\"round\" class=\"series\"><title>{}</title></polyline>",
                esc(name)
            );
        }
    }
    if empty {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" class=\"nodata\">no data in this range</text>",
            W / 2.0,
            H / 2.0
        );
    }
    svg.push_str("</svg><ul class=\"legend\">");
    for (i, (name, _)) in series.iter().enumerate() {
        let _ = write!(
            svg,
            "<li><span style=\"background:{}\"></span>{}</li>",
            COLORS[i % COLORS.len()],
            esc(name)
        );
    }
    svg.push_str("</ul></figure>");
    svg
}

/// Sum the points of series grouped by `label`'s value.
fn sum_by(
    series: Vec<crate::tsdb::SeriesPoints>,
    label: &str,
) -> BTreeMap<String, BTreeMap<Millis, f64>> {
    let mut out: BTreeMap<String, BTreeMap<Millis, f64>> = BTreeMap::new();
    for s in series {
        let key = s.key.label(label).unwrap_or("").to_owned();
        let e = out.entry(key).or_default();
        for p in s.points {
            *e.entry(p.ts).or_default() += p.value;
        }
    }
    out
}

fn points(m: &BTreeMap<Millis, f64>) -> Vec<Point> {
    m.iter().map(|(&ts, &value)| Point { ts, value }).collect()
}

/// The page.
pub fn render(store: &Store, page: &Page) -> Result<String, TsdbError> {
    let step_ms = (page.step.as_millis() as Millis).max(1);
    // Whole steps only: a partial first or last step would read as a dip.
    let (from, to, step) = (
        page.from.div_euclid(step_ms) * step_ms,
        (page.to.div_euclid(step_ms) * step_ms).max(page.from + step_ms),
        page.step,
    );
    let ev = &page.events;
    let mut charts = String::new();

    // Request rate and error ratio per variant.
    let requests = sum_by(
        store.range(&Selector::name(REQUESTS), from, to, step)?,
        "variant",
    );
    let errors = sum_by(
        store.range(
            &Selector::name(REQUESTS).with("code", "5xx"),
            from,
            to,
            step,
        )?,
        "variant",
    );
    let rate: Vec<(String, Vec<Point>)> = requests
        .iter()
        .map(|(v, m)| (v.clone(), points(m)))
        .collect();
    charts.push_str(&line_chart(
        "Requests by variant",
        "per second",
        &rate,
        (from, to, step_ms),
        ev,
    ));
    let ratio: Vec<(String, Vec<Point>)> = requests
        .iter()
        .map(|(v, total)| {
            let bad = errors.get(v);
            let pts = total
                .iter()
                .filter(|(_, t)| **t > 0.0)
                .map(|(&ts, &t)| Point {
                    ts,
                    value: bad.and_then(|b| b.get(&ts)).copied().unwrap_or(0.0) / t,
                })
                .collect();
            (v.clone(), pts)
        })
        .collect();
    charts.push_str(&line_chart(
        "Error ratio (5xx) by variant",
        "share of requests",
        &ratio,
        (from, to, step_ms),
        ev,
    ));

    // Latency quantiles per variant, from the bucket increases per step.
    let buckets = store.range(
        &Selector::name(format!("{DURATION}_bucket")),
        from,
        to,
        step,
    )?;
    // variant -> ts -> le -> rate
    let mut by: BTreeMap<String, BTreeMap<Millis, Vec<(f64, f64)>>> = BTreeMap::new();
    for s in buckets {
        let Some(le) = s.key.label("le").and_then(|l| {
            if l == "+Inf" {
                Some(f64::INFINITY)
            } else {
                l.parse::<f64>().ok()
            }
        }) else {
            continue;
        };
        let v = s.key.label("variant").unwrap_or("").to_owned();
        for p in s.points {
            by.entry(v.clone())
                .or_default()
                .entry(p.ts)
                .or_default()
                .push((le, p.value));
        }
    }
    let mut latency = Vec::new();
    for (variant, steps) in &by {
        for q in [0.5, 0.95, 0.99] {
            let pts: Vec<Point> = steps
                .iter()
                .filter_map(|(&ts, b)| {
                    let mut b = b.clone();
                    b.sort_by(|x, y| x.0.total_cmp(&y.0));
                    histogram_quantile(q, &b).map(|v| Point {
                        ts,
                        value: v * 1000.0,
                    })
                })
                .collect();
            latency.push((format!("p{} {variant}", q * 100.0), pts));
        }
    }
    charts.push_str(&line_chart(
        "Latency by variant",
        "ms",
        &latency,
        (from, to, step_ms),
        ev,
    ));

    // Replicas per variant, CPU and memory per replica.
    let replicas: Vec<(String, Vec<Point>)> = store
        .range(
            &Selector::name("mlops_gateway_variant_replicas"),
            from,
            to,
            step,
        )?
        .into_iter()
        .map(|s| (s.key.label("variant").unwrap_or("").to_owned(), s.points))
        .collect();
    charts.push_str(&line_chart(
        "Replicas by variant",
        "replicas",
        &replicas,
        (from, to, step_ms),
        ev,
    ));
    let per_replica = |name: &str, scale: f64| -> Result<Vec<(String, Vec<Point>)>, TsdbError> {
        Ok(store
            .range(&Selector::name(name), from, to, step)?
            .into_iter()
            .map(|s| {
                (
                    format!(
                        "{} {}",
                        s.key.label("variant").unwrap_or(""),
                        s.key.label("replica").unwrap_or("")
                    ),
                    s.points
                        .into_iter()
                        .map(|p| Point {
                            ts: p.ts,
                            value: p.value * scale,
                        })
                        .collect(),
                )
            })
            .collect())
    };
    charts.push_str(&line_chart(
        "CPU by replica",
        "cores",
        &per_replica("mlops_replica_cpu_seconds_total", 1.0)?,
        (from, to, step_ms),
        ev,
    ));
    charts.push_str(&line_chart(
        "Memory by replica",
        "MiB",
        &per_replica("mlops_replica_memory_bytes", 1.0 / 1_048_576.0)?,
        (from, to, step_ms),
        ev,
    ));

    // Alerts and targets.
    let mut tables = String::new();
    tables.push_str("<section><h2>SLO alerts</h2>");
    let states = alerts::alerts(store)?;
    if states.is_empty() {
        tables.push_str(
            "<p class=\"none\">No SLO is evaluated: declare one in <code>[apm.slo]</code>.</p>",
        );
    } else {
        tables.push_str("<table><tr><th>SLO</th><th>rule</th><th>severity</th><th>state</th><th>since</th><th>burn rate (long / short)</th><th>threshold</th></tr>");
        for a in &states {
            let _ = write!(
                tables,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2} / {:.2}</td><td>{}</td></tr>",
                a.state.as_str(),
                esc(&a.slo),
                esc(&a.rule),
                esc(&a.severity),
                a.state.as_str(),
                mlops_core::ledger::format_ms(a.since),
                a.evaluation["burn_long"].as_f64().unwrap_or(0.0),
                a.evaluation["burn_short"].as_f64().unwrap_or(0.0),
                a.evaluation["threshold"].as_f64().unwrap_or(0.0),
            );
        }
        tables.push_str("</table>");
    }
    let transitions = alerts::events(store, from)?;
    if !transitions.is_empty() {
        tables.push_str("<h3>Transitions</h3><ul class=\"events\">");
        for e in transitions.iter().rev().take(50) {
            let _ = write!(
                tables,
                "<li>{} — {}/{} {}</li>",
                mlops_core::ledger::format_ms(e.ts),
                esc(&e.slo),
                esc(&e.rule),
                e.state.as_str()
            );
        }
        tables.push_str("</ul>");
    }
    tables.push_str("</section><section><h2>Scrape targets</h2><table><tr><th>target</th><th>URL</th><th>state</th><th>last scrape</th><th>last error</th></tr>");
    for t in targets(store)? {
        let _ = write!(
            tables,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if t.up { "up" } else { "down" },
            esc(&t.name),
            esc(&t.url),
            if t.up { "up" } else { "down" },
            mlops_core::ledger::format_ms(t.last_ts),
            // An error a target recovered from is history, not its state.
            if t.up {
                String::new()
            } else {
                esc(t.last_error.as_deref().unwrap_or(""))
            }
        );
    }
    tables.push_str("</table></section>");
    tables.push_str("<section><h2>Drift</h2>");
    match &page.drift {
        None => tables.push_str("<p class=\"none\">No drift report yet.</p>"),
        Some((when, rows)) => {
            let _ = write!(
                tables,
                "<p>The last drift check, {}.</p><table><tr><th>feature</th><th>tests</th><th>verdict</th></tr>",
                esc(when)
            );
            for r in rows {
                let _ = write!(
                    tables,
                    "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&r.verdict.replace(' ', "-")),
                    esc(&r.feature),
                    esc(&r.tests),
                    esc(&r.verdict)
                );
            }
            tables.push_str("</table>");
        }
    }
    tables.push_str("</section><section><h2>Release events</h2>");
    if ev.is_empty() {
        tables.push_str("<p class=\"none\">No production change in this range.</p>");
    } else {
        tables.push_str("<ul class=\"events\">");
        for e in ev {
            let _ = write!(
                tables,
                "<li>{} — {}</li>",
                mlops_core::ledger::format_ms(e.ts),
                esc(&e.label)
            );
        }
        tables.push_str("</ul>");
    }
    tables.push_str("</section>");

    let refresh = page
        .refresh
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    Ok(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{refresh}\
<title>{title}</title><style>{STYLE}</style></head><body>\
<header><h1>{title}</h1><p>{} to {} UTC, one point per {}{}</p></header>\
<main><section class=\"charts\">{charts}</section>{tables}</main></body></html>\n",
        mlops_core::ledger::format_ms(from),
        mlops_core::ledger::format_ms(to),
        humanize(step),
        if page.refresh.is_some() {
            " · live"
        } else {
            " · snapshot"
        },
        title = esc(&page.title),
    ))
}

/// Serve `page` (the whole dashboard, rendered afresh for every request)
/// at `/` on `listener` until the future is dropped; anything else is a
/// 404. A page that cannot be rendered is a 500 saying why.
pub async fn serve<F>(listener: tokio::net::TcpListener, page: F)
where
    F: Fn() -> Result<String, String> + Send + Sync + 'static,
{
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Response, StatusCode, header};
    let page = std::sync::Arc::new(page);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let page = page.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let page = page.clone();
                    async move {
                        let (status, body) =
                            match (req.method() == hyper::Method::GET, req.uri().path()) {
                                (true, "/") => {
                                    // Rendering reads SQLite: off the async thread.
                                    match tokio::task::spawn_blocking(move || page()).await {
                                        Ok(Ok(html)) => (StatusCode::OK, html),
                                        Ok(Err(e)) => (
                                            StatusCode::INTERNAL_SERVER_ERROR,
                                            format!(
                                                "<!DOCTYPE html><title>error</title><p>{}</p>",
                                                esc(&e)
                                            ),
                                        ),
                                        Err(e) => (
                                            StatusCode::INTERNAL_SERVER_ERROR,
                                            format!(
                                                "<!DOCTYPE html><title>error</title><p>{}</p>",
                                                esc(&e.to_string())
                                            ),
                                        ),
                                    }
                                }
                                (false, "/") => (
                                    StatusCode::METHOD_NOT_ALLOWED,
                                    "<!DOCTYPE html><title>only GET</title><p>only GET</p>"
                                        .to_owned(),
                                ),
                                _ => (
                                    StatusCode::NOT_FOUND,
                                    "<!DOCTYPE html><title>not found</title><p>not found</p>"
                                        .to_owned(),
                                ),
                            };
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = status;
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("text/html; charset=utf-8"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else if s > 0 {
        format!("{s} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The pages' stylesheet (charts, legends, tables), for other
/// self-contained pages drawn with [`line_chart`] (the load-test report).
pub const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1b1b1b;background:#fafafa}\
header{padding:12px 20px;background:#233;color:#fff}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;font-size:13px;opacity:.8}\
main{padding:12px 20px}.charts{display:flex;flex-wrap:wrap;gap:12px}\
figure.chart{margin:0;background:#fff;border:1px solid #ddd;border-radius:4px;padding:8px;max-width:100%}\
figure.chart svg{max-width:100%;height:auto}figcaption{font-weight:600;font-size:14px}.unit{font-weight:400;color:#666}\
.grid{stroke:#eee}.ylabel{font-size:10px;text-anchor:end;fill:#666}.xlabel{font-size:10px;text-anchor:middle;fill:#666}\
.event{stroke:#888;stroke-dasharray:4 3}.elabel{font-size:9px;fill:#555}.nodata{font-size:12px;fill:#999;text-anchor:middle}\
ul.legend{list-style:none;padding:0;margin:4px 0 0;font-size:12px;display:flex;flex-wrap:wrap;gap:10px}\
ul.legend span{display:inline-block;width:10px;height:10px;margin-right:4px}\
table{border-collapse:collapse;font-size:13px;background:#fff}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}\
tr.firing td,tr.down td,tr.drift td{background:#fde8e8}tr.insufficient-data td{background:#fff6db}tr.pending td{background:#fff6db}tr.resolved td{background:#eef7ee}\
section h2{font-size:16px;margin:18px 0 6px}.none{color:#666}ul.events{font-size:13px}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_names_and_mark_events() {
        let svg = line_chart(
            "a <b>",
            "ms",
            &[(
                "x\"y".into(),
                vec![Point { ts: 0, value: 1.0 }, Point { ts: 10, value: 2.0 }],
            )],
            (0, 10, 5),
            &[Event {
                ts: 5,
                label: "iris:2 <promoted>".into(),
            }],
        );
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(svg.contains("x&quot;y"));
        assert!(svg.contains("iris:2 &lt;promoted&gt;"));
        assert!(svg.contains("<polyline"));
        let empty = line_chart("e", "u", &[], (0, 10, 5), &[]);
        assert!(empty.contains("no data in this range"));
    }

    #[test]
    fn numbers_and_clocks_are_short() {
        assert_eq!(short(12_345.0), "12.3k");
        assert_eq!(short(0.01234), "0.012");
        assert_eq!(clock(3_723_000), "01:02:03");
    }
}
