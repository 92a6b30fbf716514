//! A measurement, not a test: how big the collector's database grows.
//!
//! ```sh
//! cargo run --release -p mlops-apm --example tsdb_size -- --series 300 --hours 6
//! ```
//!
//! Appends one-second scrapes of `--series` series (half counters, half
//! gauges) for `--hours`, compacting every minute as the collector does,
//! with the default retention (raw 1 h, 1-minute buckets 2 days, 10-minute
//! buckets 35 days). Prints, every simulated hour, the rows per level and
//! the file's size; at the end, the bytes per row of each level measured
//! from the file and the size a week of one-second samples reaches with
//! them (raw and minute rows have reached their steady state by then, the
//! ten-minute rows hold the week).

use std::time::Instant;

use mlops_apm::tsdb::{Retention, Sample, SeriesKey, SeriesKind, Store};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn main() {
    let series: usize = arg("--series", "300").parse().expect("--series N");
    let hours: i64 = arg("--hours", "6").parse().expect("--hours N");
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Retention::default()).unwrap();
    let keys: Vec<(SeriesKey, SeriesKind)> = (0..series)
        .map(|i| {
            let kind = if i % 2 == 0 {
                SeriesKind::Counter
            } else {
                SeriesKind::Gauge
            };
            (
                SeriesKey::new(
                    "mlops_bench_series",
                    [("variant", "stable".to_owned()), ("i", i.to_string())],
                ),
                kind,
            )
        })
        .collect();
    let start_ms = 1_800_000_000_000i64;
    let started = Instant::now();
    let seconds = hours * 3600;
    println!("| simulated | raw rows | 1-minute rows | 10-minute rows | file size |");
    println!("|---|---|---|---|---|");
    for s in 0..=seconds {
        let ts = start_ms + s * 1000;
        let samples: Vec<Sample> = keys
            .iter()
            .enumerate()
            .map(|(i, (key, kind))| Sample {
                key: key.clone(),
                kind: *kind,
                value: match kind {
                    SeriesKind::Counter => (s * (i as i64 % 7 + 1)) as f64,
                    SeriesKind::Gauge => ((s + i as i64) % 100) as f64 * 0.5,
                },
            })
            .collect();
        store.append(ts, &samples, false).unwrap();
        if s % 60 == 0 {
            store.compact(ts).unwrap();
        }
        if s > 0 && s % 3600 == 0 {
            let (raw, tiers) = store.row_counts().unwrap();
            println!(
                "| {} h | {raw} | {} | {} | {:.1} MiB |",
                s / 3600,
                tiers[0],
                tiers[1],
                store.size_bytes().unwrap() as f64 / 1_048_576.0
            );
        }
    }
    let (raw, tiers) = store.row_counts().unwrap();
    let size = store.size_bytes().unwrap() as f64;
    // Bytes per row of each kind, each measured from a file that holds
    // (almost) only that kind: raw rows from 10 minutes of scrapes before
    // any rollup; rollup rows from the same hours with raw points kept
    // only a minute.
    let sample = |s: i64| -> Vec<Sample> {
        keys.iter()
            .map(|(key, kind)| Sample {
                key: key.clone(),
                kind: *kind,
                value: s as f64,
            })
            .collect()
    };
    let raw_only = {
        let d = tempfile::tempdir().unwrap();
        let mut s2 = Store::open(d.path(), Retention::default()).unwrap();
        for s in 0..600 {
            s2.append(start_ms + s * 1000, &sample(s), false).unwrap();
        }
        let (rows, _) = s2.row_counts().unwrap();
        s2.size_bytes().unwrap() as f64 / rows as f64
    };
    let rollup_bytes = {
        let d = tempfile::tempdir().unwrap();
        let retention = Retention {
            raw: std::time::Duration::from_secs(60),
            ..Retention::default()
        };
        let mut s2 = Store::open(d.path(), retention).unwrap();
        for s in 0..=seconds {
            s2.append(start_ms + s * 1000, &sample(s), false).unwrap();
            if s % 60 == 0 {
                s2.compact(start_ms + s * 1000).unwrap();
            }
        }
        let (rows, tiers) = s2.row_counts().unwrap();
        let rollups = (tiers[0] + tiers[1]) as f64;
        (s2.size_bytes().unwrap() as f64 - rows as f64 * raw_only) / rollups
    };
    let week_raw = 3600.0 * series as f64;
    let week_minute = 2.0 * 1440.0 * series as f64;
    let week_ten = 7.0 * 144.0 * series as f64;
    let week = week_raw * raw_only + (week_minute + week_ten) * rollup_bytes;
    println!();
    println!(
        "{series} series, {hours} h of 1 s samples in {:.1} s: {raw} raw rows, {} + {} rollup rows, {:.1} MiB; {:.0} bytes per raw row, {:.0} per rollup row",
        started.elapsed().as_secs_f64(),
        tiers[0],
        tiers[1],
        size / 1_048_576.0,
        raw_only,
        rollup_bytes
    );
    println!(
        "a week of 1 s samples of {series} series: {:.0} raw + {:.0} minute + {:.0} ten-minute rows ≈ {:.0} MiB",
        week_raw,
        week_minute,
        week_ten,
        week / 1_048_576.0
    );
}
