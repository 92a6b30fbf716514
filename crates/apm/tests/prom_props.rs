//! Property tests of the exposition parser: any families the writer
//! renders read back equal (help texts and label values with quotes,
//! backslashes, line feeds and any Unicode; NaN and infinities; optional
//! timestamps; histograms grouped by their suffixes), and any text at all
//! parses or fails with a line number inside the text, never panicking.

use mlops_apm::prom::{Family, Limits, MetricType, Sample, parse, write};
use proptest::prelude::*;

/// Text without carriage returns (a line's trailing `\r` is its ending,
/// as in every Prometheus reader).
fn text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\r', ""))
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => any::<f64>().prop_filter("finite", |v| v.is_finite()),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        2 => (-1000i64..1000).prop_map(|v| v as f64),
    ]
}

fn labels() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[a-z_][a-z0-9_]{0,6}", text(), 0..4)
        .prop_map(|m| m.into_iter().filter(|(k, _)| k != "le").collect())
}

fn simple_family(index: usize) -> impl Strategy<Value = Family> {
    (
        "[a-z][a-z0-9]{0,6}",
        prop::option::of(text()),
        prop_oneof![
            Just(MetricType::Gauge),
            Just(MetricType::Counter),
            Just(MetricType::Untyped)
        ],
        prop::collection::vec((labels(), value(), prop::option::of(any::<i64>())), 1..4),
    )
        .prop_map(move |(stem, help, kind, samples)| {
            let name = format!("{stem}_{index}");
            Family {
                help,
                kind,
                unit: None,
                samples: samples
                    .into_iter()
                    .map(|(labels, value, timestamp_ms)| Sample {
                        name: name.clone(),
                        labels,
                        value,
                        timestamp_ms,
                        exemplar: None,
                    })
                    .collect(),
                name,
            }
        })
}

fn histogram_family(index: usize) -> impl Strategy<Value = Family> {
    (
        prop::option::of(text()),
        labels(),
        prop::collection::vec(0u32..1000, 1..5),
    )
        .prop_map(move |(help, labels, counts)| {
            let name = format!("latency_{index}_seconds");
            let mut samples = Vec::new();
            let mut cumulative = 0.0;
            for (i, c) in counts.iter().enumerate() {
                cumulative += f64::from(*c);
                let mut l = labels.clone();
                l.push(("le".to_owned(), format!("{}", 0.1 * (i + 1) as f64)));
                samples.push(Sample {
                    name: format!("{name}_bucket"),
                    labels: l,
                    value: cumulative,
                    timestamp_ms: None,
                    exemplar: None,
                });
            }
            let mut l = labels.clone();
            l.push(("le".to_owned(), "+Inf".to_owned()));
            samples.push(Sample {
                name: format!("{name}_bucket"),
                labels: l,
                value: cumulative,
                timestamp_ms: None,
                exemplar: None,
            });
            for (suffix, v) in [("_sum", cumulative * 0.05), ("_count", cumulative)] {
                samples.push(Sample {
                    name: format!("{name}{suffix}"),
                    labels: labels.clone(),
                    value: v,
                    timestamp_ms: None,
                    exemplar: None,
                });
            }
            Family {
                name,
                help,
                kind: MetricType::Histogram,
                unit: None,
                samples,
            }
        })
}

fn families() -> impl Strategy<Value = Vec<Family>> {
    (0usize..6).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                if i % 3 == 2 {
                    histogram_family(i).boxed()
                } else {
                    simple_family(i).boxed()
                }
            })
            .collect::<Vec<_>>()
    })
}

/// Equal, NaN included (compared by bits of the written value).
fn same(a: &[Family], b: &[Family]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.help == y.help
                && x.kind == y.kind
                && x.samples.len() == y.samples.len()
                && x.samples.iter().zip(&y.samples).all(|(s, t)| {
                    s.name == t.name
                        && s.labels == t.labels
                        && s.timestamp_ms == t.timestamp_ms
                        && (s.value == t.value || (s.value.is_nan() && t.value.is_nan()))
                })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn written_families_read_back(f in families()) {
        let text = write(&f);
        let back = parse(&text, &Limits::default());
        prop_assert!(back.is_ok(), "{:?} in\n{}", back, text);
        let back = back.unwrap();
        prop_assert!(same(&f, &back), "{:#?}\n!=\n{:#?}\n{}", f, back, text);
        for h in back.iter().filter(|f| f.kind == MetricType::Histogram) {
            for series in h.histograms() {
                prop_assert_eq!(series.buckets.last().map(|b| b.0), Some(f64::INFINITY));
                prop_assert_eq!(series.count, series.buckets.last().map(|b| b.1));
            }
        }
    }

    #[test]
    fn any_text_parses_or_names_a_line_in_it(s in text()) {
        let lines = s.split('\n').count();
        if let Err(e) = parse(&s, &Limits::default()) {
            prop_assert!(e.line >= 1 && e.line <= lines, "{} of {} lines: {:?}", e.line, lines, s);
        }
    }

    #[test]
    fn corrupted_exposition_never_panics(f in families(), at in any::<prop::sample::Index>(), junk in "[{}\"\\\\=,# \n]{1,4}") {
        let mut text = write(&f);
        if !text.is_empty() {
            let mut i = at.index(text.len());
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            text.insert_str(i, &junk);
        }
        let lines = text.split('\n').count();
        if let Err(e) = parse(&text, &Limits::default()) {
            prop_assert!(e.line >= 1 && e.line <= lines);
            prop_assert!(!e.message.is_empty());
        }
    }
}
