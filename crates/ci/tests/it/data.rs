//! `data-validation`: every check through one helper with snapshots, schema
//! errors (file and inline), inference round trips, bounded memory on a
//! large file, and the step end to end through the engine.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use mlops_ci::data::{
    ColumnType, DataError, Format, InferOptions, Schema, ValidateOptions, infer_schema,
    infer_schema_from_reader, to_toml, validate_file, validate_reader,
};
use mlops_core::manifest::Diagnostics;
use mlops_core::{CancellationToken, Manifest, StepStatus};

/// Test text without the indentation of the source: each line is trimmed
/// and a leading newline dropped. Blank lines inside are kept.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let mut out: String = text.lines().map(str::trim).collect::<Vec<_>>().join("\n");
    out.push('\n');
    out
}

/// A schema's diagnostics as the CLI would show them for `schema.toml`.
fn render_diagnostics(source: &str, items: Vec<mlops_core::manifest::Diagnostic>) -> String {
    Diagnostics {
        path: PathBuf::from("schema.toml"),
        source: source.to_owned(),
        items,
    }
    .to_string()
}

/// Validates `data` (in `format`) against `schema` and renders the report,
/// or the schema's diagnostics, or the error.
fn validate(format: Format, schema: &str, data: &[u8], max_examples: usize) -> String {
    let schema_text = dedent(schema);
    let schema = match Schema::parse(&schema_text) {
        Ok(s) => s,
        Err(items) => return render_diagnostics(&schema_text, items),
    };
    let options = ValidateOptions {
        max_examples,
        ..ValidateOptions::default()
    };
    let name = format!("data.{format}");
    match validate_reader(&name, data, format, &schema, &options) {
        Ok(report) => report.to_string(),
        Err(e) => format!("error: {e}"),
    }
}

fn check(schema: &str, data: &str) -> String {
    validate(Format::Csv, schema, dedent(data).as_bytes(), 5)
}

fn check_jsonl(schema: &str, data: &str) -> String {
    validate(Format::Jsonl, schema, dedent(data).as_bytes(), 5)
}

/// Only the schema: its diagnostics, or `valid`.
fn compile(schema: &str) -> String {
    let text = dedent(schema);
    match Schema::parse(&text) {
        Ok(s) => format!("valid: {} columns", s.columns.len()),
        Err(items) => render_diagnostics(&text, items),
    }
}

macro_rules! snapshot {
    ($name:ident, $value:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(stringify!($name), $value);
        }
    };
}

const IRIS_LIKE: &str = r#"
    format = "csv"
    rows = { min = 1, max = 10 }
    [columns.id]
    type = "integer"
    unique = true
    min = 1
    [columns.sepal_length]
    type = "float"
    min = 0.0
    max = 10.0
    [columns.species]
    type = "string"
    allowed = ["setosa", "versicolor", "virginica"]
    [columns.measured]
    type = "boolean"
    max-null-share = 0.5
"#;

snapshot!(
    a_clean_file_passes,
    check(
        IRIS_LIKE,
        "
        id,sepal_length,species,measured
        1,5.1,setosa,true
        2,4.9,versicolor,False
        3,7,virginica,
        "
    )
);

snapshot!(
    type_violations_name_the_expected_type_and_an_example,
    check(
        r#"
        [columns.n]
        type = "integer"
        [columns.x]
        type = "float"
        [columns.ok]
        type = "boolean"
        "#,
        "
        n,x,ok
        1,1.5,true
        4.0,abc,yes
        ten,2,1
        -7,1e3,TRUE
        "
    )
);

snapshot!(
    min_and_max_on_integers_and_floats_nan_fails_both,
    check(
        r#"
        [columns.age]
        type = "integer"
        min = 0
        max = 120
        [columns.score]
        type = "float"
        min = -1
        max = 1.5
        "#,
        "
        age,score
        -1,0.5
        130,1.5
        30,1.6
        121,NaN
        0,-1
        "
    )
);

snapshot!(
    allowed_values_for_strings_and_integers,
    check(
        r#"
        [columns.species]
        type = "string"
        allowed = ["setosa", "virginica"]
        [columns.label]
        type = "integer"
        allowed = [0, 1]
        "#,
        "
        species,label
        setosa,0
        Setosa,1
        virginica,2
        versicolor,1
        "
    )
);

snapshot!(
    null_share_counts_against_every_checked_row,
    check(
        r#"
        null-values = ["", "NA"]
        [columns.strict]
        type = "string"
        [columns.half]
        type = "float"
        max-null-share = 0.5
        [columns.tenth]
        type = "integer"
        max-null-share = 0.1
        "#,
        "
        strict,half,tenth
        a,,1
        ,1.0,NA
        c,,2
        d,NA,
        "
    )
);

snapshot!(
    unique_reports_repeats_and_ignores_nulls,
    check(
        r#"
        [columns.id]
        type = "integer"
        unique = true
        max-null-share = 1
        [columns.email]
        type = "string"
        unique = true
        [columns.weight]
        type = "float"
        unique = true
        "#,
        "
        id,email,weight
        1,a@x,0.0
        2,b@x,1.5
        ,c@x,-0.0
        ,a@x,2
        02,d@x,2.0
        "
    )
);

snapshot!(
    row_count_below_the_minimum,
    check(
        r#"
        rows = { min = 3 }
        [columns.a]
        type = "integer"
        "#,
        "
        a
        1
        2
        "
    )
);

snapshot!(
    row_count_above_the_maximum,
    check(
        r#"
        rows = { max = 1 }
        [columns.a]
        type = "integer"
        "#,
        "
        a
        1
        2
        "
    )
);

snapshot!(
    a_different_column_set_names_missing_extra_and_repeated_columns,
    check(
        r#"
        [columns.sepal_length]
        type = "float"
        [columns.species]
        type = "string"
        [columns.petal_width]
        type = "float"
        "#,
        "
        sepal_length,sepal_width,species,species,color
        1.0,2.0,a,b,red
        "
    )
);

snapshot!(
    extra_columns_pass_when_allowed,
    check(
        r#"
        allow-extra-columns = true
        [columns.a]
        type = "integer"
        "#,
        "
        a,b,c
        1,x,y
        "
    )
);

snapshot!(
    pattern_and_lengths_on_strings,
    check(
        r#"
        [columns.code]
        type = "string"
        pattern = "^[A-Z]{2}-[0-9]+$"
        [columns.name]
        type = "string"
        min-length = 2
        max-length = 5
        "#,
        "
        code,name
        AB-12,Zoë
        ab-12,Z
        XY-,Charlotte
        CD-7,Émile
        "
    )
);

snapshot!(
    an_empty_file_misses_every_column,
    check(
        r#"
        rows = { min = 1 }
        [columns.a]
        type = "integer"
        "#,
        ""
    )
);

snapshot!(
    a_header_only_file_has_no_rows,
    check(
        r#"
        [columns.a]
        type = "integer"
        "#,
        "a"
    )
);

/// 12 bad values, five line numbers listed by default, two when asked.
fn twelve_bad_rows() -> String {
    let mut data = String::from("n\n");
    for i in 0..20 {
        data.push_str(if i % 5 == 0 { "1\n" } else { "x\n" });
    }
    data.push_str("x\nx\nx\nx\n");
    data
}

const ONE_INTEGER: &str = r#"
    [columns.n]
    type = "integer"
"#;

snapshot!(
    line_numbers_stop_after_the_first_five,
    validate(Format::Csv, ONE_INTEGER, twelve_bad_rows().as_bytes(), 5)
);

snapshot!(
    max_examples_sets_how_many_lines_are_listed,
    format!(
        "{}\n{}",
        validate(Format::Csv, ONE_INTEGER, twelve_bad_rows().as_bytes(), 2),
        validate(Format::Csv, ONE_INTEGER, twelve_bad_rows().as_bytes(), 0)
    )
);

snapshot!(
    malformed_csv_rows_are_a_parse_violation_and_the_rest_is_checked,
    check(
        r#"
        [columns.a]
        type = "integer"
        [columns.b]
        type = "string"
        "#,
        r#"
        a,b
        1,x
        2
        3,y,extra
        "4","multi
        line"
        x,z
        "#
    )
);

#[test]
fn invalid_utf8_is_an_encoding_violation_of_its_column() {
    let data = b"a,b\n1,caf\xe9\n2,ok\n";
    insta::assert_snapshot!(validate(
        Format::Csv,
        "[columns.a]\ntype = \"integer\"\n[columns.b]\ntype = \"string\"\n",
        data,
        5
    ));
}

#[test]
fn reading_stops_after_too_many_malformed_records() {
    let mut data = String::from("a,b\n");
    for i in 0..300 {
        data.push_str(&format!("{i}\n"));
    }
    insta::assert_snapshot!(validate(
        Format::Csv,
        "rows = { min = 1000 }\n[columns.a]\ntype = \"integer\"\n[columns.b]\ntype = \"integer\"\n",
        data.as_bytes(),
        3
    ));
}

snapshot!(
    tab_separated_values,
    validate(
        Format::Tsv,
        "[columns.a]\ntype = \"integer\"\n[columns.b]\ntype = \"string\"\npattern = \"^[a-z ]+$\"\n",
        b"a\tb\n1\thello world\n2\tHi, there\n",
        5
    )
);

const EVENTS: &str = r#"
    [columns.id]
    type = "integer"
    unique = true
    [columns.kind]
    type = "string"
    allowed = ["click", "view", "1"]
    [columns.value]
    type = "float"
    max-null-share = 0.25
    [columns.ok]
    type = "boolean"
    max-null-share = 1
"#;

snapshot!(
    json_lines_pass_with_nulls_missing_keys_and_blank_lines,
    check_jsonl(
        EVENTS,
        r#"
        {"id": 1, "kind": "click", "value": 0.5, "ok": true}
        {"id": 2, "kind": "view", "value": 3}

        {"id": 3, "kind": 1, "value": null, "ok": null}
        {"id": 4, "kind": "view", "value": -2.5e3, "ok": false}
        "#
    )
);

snapshot!(
    json_lines_types_are_strict_except_for_strings,
    check_jsonl(
        EVENTS,
        r#"
        {"id": 1.0, "kind": "click", "value": "0.5", "ok": "true"}
        {"id": "2", "kind": ["view"], "value": 1, "ok": 1}
        {"id": 3, "kind": true, "value": {"v": 1}, "ok": true}
        {"id": 3, "kind": "view", "value": 2, "ok": false}
        "#
    )
);

snapshot!(
    json_lines_name_undeclared_and_absent_keys,
    check_jsonl(
        r#"
        [columns.id]
        type = "integer"
        [columns.never]
        type = "string"
        max-null-share = 1
        "#,
        r#"
        {"id": 1, "extra": 1}
        {"id": 2, "extra": 2, "other": null}
        {"id": 3}
        "#
    )
);

snapshot!(
    malformed_json_lines_are_parse_violations,
    check_jsonl(
        r#"
        [columns.id]
        type = "integer"
        "#,
        r#"
        {"id": 1}
        {"id": 2,
        [1, 2]
        {"id": 4}
        not json
        "#
    )
);

#[test]
fn an_overlong_json_line_is_malformed_and_reading_goes_on() {
    let mut data = Vec::new();
    data.extend_from_slice(b"{\"id\": 1}\n{\"id\": \"");
    data.resize(data.len() + (17 << 20), b'x');
    data.extend_from_slice(b"\"}\n{\"id\": 3}\n");
    insta::assert_snapshot!(validate(
        Format::Jsonl,
        "[columns.id]\ntype = \"integer\"\n",
        &data,
        5
    ));
}

// Schemas that do not parse or do not compile.

snapshot!(
    schema_syntax_error,
    compile(
        r#"
        [columns.a
        type = "integer"
        "#
    )
);

snapshot!(
    schema_unknown_key,
    compile(
        r#"
        [columns.a]
        tpye = "integer"
        "#
    )
);

snapshot!(
    schema_wrong_value_type,
    compile(
        r#"
        [columns.a]
        type = "integer"
        unique = "yes"
        "#
    )
);

snapshot!(
    schema_compile_errors_are_all_reported_with_spans,
    compile(
        r#"
        format = "parquet"
        rows = { min = 10, max = 5 }
        [columns.age]
        type = "int"
        [columns.score]
        type = "float"
        min = 2.0
        max = 1
        allowed = [1.0, 2.0]
        max-null-share = 1.5
        [columns.n]
        type = "integer"
        min = 0.5
        max = "ten"
        pattern = "^[0-9]+$"
        [columns.name]
        type = "string"
        min = 1
        pattern = "([a-z]"
        min-length = 4
        max-length = 2
        allowed = ["a", 1]
        [columns.flag]
        type = "boolean"
        allowed = []
        min-length = -1
        "#
    )
);

snapshot!(
    schema_without_columns,
    format!(
        "{}\n\n{}",
        compile("rows = { min = 1 }"),
        compile("allow-extra-columns = true")
    )
);

#[test]
fn an_invalid_schema_file_is_named_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.schema.toml");
    std::fs::write(
        &path,
        "[columns.a]\ntype = \"integer\"\nmin = 5\nmax = 1\n[columns.b]\ntype = \"text\"\n",
    )
    .unwrap();
    let err = Schema::load(&path).unwrap_err();
    let text = err
        .to_string()
        .replace(&*dir.path().to_string_lossy(), "DIR");
    assert_eq!(
        text,
        "invalid schema file DIR/bad.schema.toml: 4:7: `max` (1) of column `a` is less than its `min` (5); 6:8: unknown type `text` for column `b`"
    );
    let DataError::InvalidSchema(diagnostics) = err else {
        panic!("not InvalidSchema")
    };
    assert!(
        diagnostics
            .to_string()
            .contains("help: did you mean `string`?")
    );

    std::fs::write(&path, "columns = 3\n").unwrap();
    let text = Schema::load(&path).unwrap_err().to_string();
    assert!(
        text.ends_with("bad.schema.toml: 1:11: invalid type: integer `3`, expected a table of columns, like `[columns.age]`"),
        "{text}"
    );
    let missing = Schema::load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, DataError::Read { .. }), "{missing}");
}

#[test]
fn validate_file_takes_the_format_from_option_schema_then_extension() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::parse("[columns.a]\ntype = \"integer\"\n").unwrap();
    let txt = dir.path().join("data.txt");
    std::fs::write(&txt, "{\"a\": 1}\n").unwrap();
    let err = validate_file(&txt, &schema, &ValidateOptions::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("cannot tell the format of"),
        "{err}"
    );
    let options = ValidateOptions {
        format: Some(Format::Jsonl),
        ..ValidateOptions::default()
    };
    assert!(validate_file(&txt, &schema, &options).unwrap().passed);
    let jsonl_schema =
        Schema::parse("format = \"jsonl\"\n[columns.a]\ntype = \"integer\"\n").unwrap();
    let report = validate_file(&txt, &jsonl_schema, &ValidateOptions::default()).unwrap();
    assert_eq!((report.format, report.passed), (Format::Jsonl, true));
    let missing = validate_file(
        &dir.path().join("no.csv"),
        &schema,
        &ValidateOptions::default(),
    )
    .unwrap_err();
    assert!(missing.to_string().starts_with("cannot read "), "{missing}");
}

#[test]
fn a_cancelled_validation_stops_with_an_error() {
    let mut data = String::from("a\n");
    for i in 0..70_000 {
        data.push_str(&format!("{i}\n"));
    }
    let schema = Schema::parse("[columns.a]\ntype = \"integer\"\n").unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let options = ValidateOptions {
        cancel: Some(cancel),
        ..ValidateOptions::default()
    };
    let err =
        validate_reader("big.csv", data.as_bytes(), Format::Csv, &schema, &options).unwrap_err();
    assert_eq!(err.to_string(), "reading big.csv was cancelled");
}

#[test]
fn the_report_serializes_as_evidence() {
    let schema = Schema::parse(&dedent(IRIS_LIKE)).unwrap();
    let report = validate_reader(
        "iris.csv",
        &b"id,sepal_length,species,measured\n1,11.5,setosa,true\n"[..],
        Format::Csv,
        &schema,
        &ValidateOptions::default(),
    )
    .unwrap();
    insta::assert_json_snapshot!(report);
}

// Inference.

/// A deterministic stream of pseudo-random numbers (a 64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Writes a generated dataset of `rows` rows to `out`.
fn generate_csv(out: &mut impl std::io::Write, rows: u64) {
    let groups = ["alpha", "beta", "gamma", "delta"];
    let mut rng = Lcg(42);
    writeln!(out, "id,group,score,flag,label,count,note").unwrap();
    for id in 1..=rows {
        let r = rng.next();
        let group = groups[(r % 4) as usize];
        let score = if r.is_multiple_of(10) {
            String::new()
        } else {
            format!("{:.3}", (r % 100_000) as f64 / 1000.0 - 20.0)
        };
        let flag = if r.is_multiple_of(3) { "true" } else { "false" };
        let count = r % 50;
        let note = if r.is_multiple_of(7) {
            "\"said \"\"hi\"\", left\""
        } else {
            ""
        };
        writeln!(
            out,
            "{id},{group},{score},{flag},u-{:06},{count},{note}",
            id * 7
        )
        .unwrap();
    }
}

/// Infers a schema for `path`, checks that `to_toml` reads back to the
/// same text and that the file passes its own schema; returns the TOML.
fn round_trip(path: &Path) -> String {
    let schema = infer_schema(path, &InferOptions::default()).unwrap();
    let text = to_toml(&schema);
    let reread =
        Schema::parse(&text).unwrap_or_else(|d| panic!("{}", render_diagnostics(&text, d)));
    assert_eq!(to_toml(&reread), text, "to_toml round-trips");
    let report = validate_file(path, &reread, &ValidateOptions::default()).unwrap();
    assert!(
        report.passed,
        "the reference file fails its own schema:\n{report}"
    );
    text
}

#[test]
fn inference_on_a_generated_dataset_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generated.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    generate_csv(&mut file, 2000);
    file.flush().unwrap();
    drop(file);
    insta::assert_snapshot!(round_trip(&path));
}

#[test]
fn inference_on_iris_round_trips() {
    let iris = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/iris/data/iris.csv");
    insta::assert_snapshot!(round_trip(&iris));
}

#[test]
fn inference_on_json_lines_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(
        &path,
        dedent(
            r#"
            {"id": 1, "kind": "click", "value": 0.5, "tags": ["a"], "user": "u1"}
            {"id": 2, "kind": "view", "value": 3, "ok": true, "user": 7}
            {"id": 3, "kind": "click", "value": null, "ok": false, "user": "u3"}
            {"id": 4, "kind": "view", "value": 1e3, "late": null, "user": "7"}
            "#,
        ),
    )
    .unwrap();
    insta::assert_snapshot!(round_trip(&path));
}

#[test]
fn inference_quotes_odd_names_and_keeps_values_exact() {
    let data = "\"sepal length\",\"naïve\",big,tiny,all_null\n1e300,x,9223372036854775807,0.1,\n-0.0,y,-9223372036854775808,0.30000000000000004,\n";
    let schema = infer_schema_from_reader(
        Path::new("odd.csv"),
        data.as_bytes(),
        Format::Csv,
        &InferOptions::default(),
    )
    .unwrap();
    let text = to_toml(&schema);
    insta::assert_snapshot!(text);
    let reread = Schema::parse(&text).unwrap();
    let report = validate_reader(
        "odd.csv",
        data.as_bytes(),
        Format::Csv,
        &reread,
        &ValidateOptions::default(),
    )
    .unwrap();
    assert!(report.passed, "{report}");
    assert_eq!(reread.columns[4].column_type, ColumnType::String);
}

#[test]
fn inference_of_ids_that_repeat_as_integers_does_not_propose_unique() {
    // `1` and `01` are distinct text but the same integer.
    let data = "id\n1\n01\n2\n";
    let schema = infer_schema_from_reader(
        Path::new("ids.csv"),
        data.as_bytes(),
        Format::Csv,
        &InferOptions::default(),
    )
    .unwrap();
    assert_eq!(schema.columns[0].column_type, ColumnType::Integer);
    assert!(!schema.columns[0].unique);
}

#[test]
fn inference_refuses_what_it_cannot_read() {
    let infer = |data: &str, format| {
        infer_schema_from_reader(
            Path::new("ref.csv"),
            data.as_bytes(),
            format,
            &InferOptions::default(),
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        infer("", Format::Csv),
        "ref.csv:1: the file has no header row"
    );
    assert_eq!(
        infer("a,a\n1,2\n", Format::Csv),
        "ref.csv:1: column `a` appears twice in the header"
    );
    assert_eq!(
        infer("a,b\n1,2\n3\n", Format::Csv),
        "ref.csv:3: 1 field where the header has 2"
    );
    assert_eq!(
        infer("{\"a\": 1}\n{oops}\n", Format::Jsonl),
        "ref.csv:2: invalid JSON at column 2: key must be a string"
    );
    assert_eq!(
        infer("\n\n", Format::Jsonl),
        "ref.csv has no records to infer a schema from"
    );
    let err = infer_schema(Path::new("data.parquet"), &InferOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot tell the format of data.parquet")
    );
}

// Bounded memory.

/// Names the file a child process of [`a_large_csv_validates_in_bounded_memory`]
/// validates and measures.
const LARGE_CSV: &str = "MLOPS_TEST_LARGE_CSV";
/// Comes before `<rows> <peak RSS growth in KiB>` in what that child prints
/// (libtest may print the test's name first on the same line).
const MEASURED: &str = "large-csv-measured: ";

/// A 100 MB file validates with the peak RSS of the validating process
/// growing by less than 32 MiB. The peak (VmHWM) belongs to the whole
/// process, so the validation runs in a fresh process of its own: this test
/// binary again, filtered to this test, with [`LARGE_CSV`] naming the file.
/// Whatever runs the tests (cargo test's threads, nextest's processes), the
/// measurement sees nothing but the validation.
#[test]
fn a_large_csv_validates_in_bounded_memory() {
    const TARGET_BYTES: u64 = 100 << 20;
    const BOUND_KIB: u64 = 32 << 10;
    if let Some(path) = std::env::var_os(LARGE_CSV) {
        validate_large_csv_and_report_peak(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(out, "id,group,score,flag,label").unwrap();
    let mut rng = Lcg(7);
    let groups = ["alpha", "beta", "gamma", "delta"];
    let mut written = 0u64;
    let mut rows = 0u64;
    while written < TARGET_BYTES {
        rows += 1;
        let r = rng.next();
        let line = format!(
            "{rows},{},{:.4},{},label-{:08}-{}\n",
            groups[(r % 4) as usize],
            (r % 1_000_000) as f64 / 1e4,
            r.is_multiple_of(2),
            r % 100_000_000,
            "x".repeat((r % 20) as usize),
        );
        written += line.len() as u64;
        out.write_all(line.as_bytes()).unwrap();
    }
    out.flush().unwrap();
    drop(out);

    let (_, module) = module_path!().split_once("::").unwrap();
    let test = format!("{module}::a_large_csv_validates_in_bounded_memory");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([&test, "--exact", "--nocapture", "--test-threads=1"])
        .env(LARGE_CSV, &path)
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(
        child.status.success(),
        "the validating process failed:\n{output}"
    );
    let measured: Vec<u64> = output
        .lines()
        .find_map(|line| Some(line.split_once(MEASURED)?.1))
        .unwrap_or_else(|| panic!("the validating process ran no {test}:\n{output}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let [validated, grown] = measured[..] else {
        panic!("not `<rows> <KiB>` after {MEASURED:?}:\n{output}")
    };
    assert_eq!(validated, rows);
    eprintln!("peak RSS grew by {grown} KiB validating {written} bytes");
    assert!(
        grown < BOUND_KIB,
        "peak RSS grew by {grown} KiB validating {written} bytes"
    );
}

/// The child's side of [`a_large_csv_validates_in_bounded_memory`]:
/// validates `path`, checks the report and prints the rows and how much
/// the process's peak RSS grew.
fn validate_large_csv_and_report_peak(path: &Path) {
    let schema = Schema::parse(
        r#"
        rows = { min = 1 }
        [columns.id]
        type = "integer"
        min = 1
        [columns.group]
        type = "string"
        allowed = ["alpha", "beta", "gamma"]
        [columns.score]
        type = "float"
        min = 0.0
        max = 50.0
        [columns.flag]
        type = "boolean"
        [columns.label]
        type = "string"
        pattern = "^label-[0-9]{8}-x*$"
        max-length = 20
        "#,
    )
    .unwrap();
    let before = peak_rss_kib();
    let report = validate_file(path, &schema, &ValidateOptions::default()).unwrap();
    let after = peak_rss_kib();
    assert!(!report.passed, "the file has values outside the schema");
    let kinds: Vec<String> = report
        .violations
        .iter()
        .map(|v| format!("{} {}", v.column.as_deref().unwrap_or("-"), v.check))
        .collect();
    assert_eq!(kinds, ["group allowed", "score max", "label max-length"]);
    println!("{MEASURED}{} {}", report.rows, after.saturating_sub(before));
}

/// The process's peak resident set size (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// The step kind: `with` parameters in mlops.toml, and runs through the engine.

fn manifest_with(step: &str) -> String {
    format!("[project]\nname = \"p\"\n\n[iac.steps.build]\nrun = \"true\"\n\n{step}")
}

fn manifest_errors(step: &str) -> String {
    match Manifest::parse(
        PathBuf::from("mlops.toml"),
        manifest_with(step),
        &super::registry(),
    ) {
        Ok(m) => format!("valid: {} steps", m.pipeline.steps().len()),
        Err(d) => d.to_string(),
    }
}

snapshot!(
    step_params_are_checked_with_spans,
    [
        "[ci.steps.v]\nkind = \"data-validation\"\n",
        "[ci.steps.v]\nkind = \"data-validation\"\nwith = { file = \"d.csv\" }\n",
        "[ci.steps.v]\nkind = \"data-validation\"\nwith = { file = \"/abs/d.csv\", schema-file = \"\", max-examples = 5000, format = \"xlsx\" }\n",
        "[ci.steps.v]\nkind = \"data-validation\"\nwith = { file = \"d.csv\", schema-file = \"s.toml\", schema = { allow-extra-columns = true } }\n",
        "[ci.steps.v]\nkind = \"data-validation\"\nwith = { file = \"d.csv\", schema-fle = \"s.toml\" }\n",
        "[ci.steps.v]\nkind = \"data-validation\"\nwith = { file = \"d.dat\", schema = { allow-extra-columns = true } }\n",
        "[ci.steps.v]\nkind = \"data-validation\"\nwith = { file = \"d.dat\", format = \"tsv\", schema = { allow-extra-columns = true } }\n",
    ]
    .map(manifest_errors)
    .join("\n\n")
);

snapshot!(
    an_inline_schema_reports_errors_at_their_place_in_mlops_toml,
    manifest_errors(
        "[ci.steps.v]\nkind = \"data-validation\"\n\n[ci.steps.v.with]\nfile = \"d.csv\"\n\n[ci.steps.v.with.schema]\nrows = { min = -1 }\n\n[ci.steps.v.with.schema.columns.id]\ntype = \"integer\"\nmin = 10\nmax = 1\n\n[ci.steps.v.with.schema.columns.name]\ntype = \"strng\"\n"
    )
);

snapshot!(
    an_inline_schema_stops_at_its_first_unknown_key,
    manifest_errors(
        "[ci.steps.v]\nkind = \"data-validation\"\nwith = { file = \"d.csv\", schema = { columns = { id = { type = \"integer\", uniq = true } } } }\n"
    )
);

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const STEP_WITH_SCHEMA_FILE: &str = "[ci.steps.validate-data]\nkind = \"data-validation\"\nwith = { file = \"data/iris.csv\", schema-file = \"data/iris.schema.toml\" }\n";

#[test]
fn the_step_fails_on_violations_and_records_the_report() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "data/iris.schema.toml", &dedent(IRIS_LIKE));
    write(
        dir.path(),
        "data/iris.csv",
        "id,sepal_length,species,measured\n1,5.1,setosa,true\n2,12.5,setosa,\n2,4.0,rose,\n3,10.5,virginica,\n",
    );
    let run = super::run_pipeline(dir.path(), &manifest_with(STEP_WITH_SCHEMA_FILE));
    let step = super::ci_step(&run);
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(
        step.reason.as_deref(),
        Some(
            "data/iris.csv: 4 violations: column `id` unique: 1 repeated value, e.g. `2` (line 4); column `sepal_length` max: 2 values above the maximum 10.0, e.g. `12.5` (lines 3, 5); column `species` allowed: 1 value not in `allowed`, e.g. `rose` (line 4); and 1 more in the step log"
        )
    );
    let evidence = step
        .evidence
        .iter()
        .find(|e| e.kind == "data-validation")
        .expect("data-validation evidence");
    assert_eq!(evidence.body["file"], "data/iris.csv");
    assert_eq!(evidence.body["rows"], 4);
    assert_eq!(evidence.body["passed"], false);
    let checks: Vec<&str> = evidence.body["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["unique", "max", "allowed", "null-share"]);
    let log = std::fs::read_to_string(step.log.as_deref().expect("a log")).unwrap();
    assert!(
        log.contains("column `measured` null-share: 3 of 4 values are null (75%), more than the allowed 50% (lines 3, 4, 5)"),
        "{log}"
    );
}

#[test]
fn the_step_passes_with_an_inline_schema() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "data/events.jsonl",
        "{\"id\": 1}\n{\"id\": 2}\n",
    );
    let step = "[ci.steps.check]\nkind = \"data-validation\"\n\n[ci.steps.check.with]\nfile = \"data/events.jsonl\"\n\n[ci.steps.check.with.schema]\nrows = { min = 2 }\n\n[ci.steps.check.with.schema.columns.id]\ntype = \"integer\"\nunique = true\n";
    let run = super::run_pipeline(dir.path(), &manifest_with(step));
    let step = super::ci_step(&run);
    assert_eq!(step.status, StepStatus::Passed, "{:?}", step.reason);
    let evidence = &step
        .evidence
        .iter()
        .find(|e| e.kind == "data-validation")
        .unwrap()
        .body;
    assert_eq!(evidence["passed"], true);
    assert_eq!(evidence["format"], "jsonl");
}

#[test]
fn bad_files_fail_the_step_with_a_clear_message() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[(
                "data/iris.schema.toml",
                "[columns.id]\ntype = \"integer\"\n",
            )],
            "cannot read data/iris.csv: No such file or directory (os error 2)",
        ),
        (
            &[("data/iris.csv", "id\n1\n")],
            "cannot read schema file data/iris.schema.toml: No such file or directory (os error 2)",
        ),
        (
            &[
                ("data/iris.csv", "id\n1\n"),
                (
                    "data/iris.schema.toml",
                    "[columns.id]\ntype = \"integer\"\nmax = \"a\"\n",
                ),
            ],
            "invalid schema file data/iris.schema.toml: 3:7: `max` of integer column `id` must be an integer, found string",
        ),
        (
            &[
                ("data/iris.csv", "id\n1\n"),
                ("data/iris.schema.toml", "[columns.id\n"),
            ],
            "invalid schema file data/iris.schema.toml: 1:12: unclosed table, expected `]`",
        ),
    ];
    for (files, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            write(dir.path(), name, text);
        }
        let run = super::run_pipeline(dir.path(), &manifest_with(STEP_WITH_SCHEMA_FILE));
        let step = super::ci_step(&run);
        assert_eq!(step.status, StepStatus::Failed);
        assert_eq!(step.reason.as_deref(), Some(want));
        assert!(
            step.evidence.iter().all(|e| e.kind != "data-validation"),
            "no report without a validation"
        );
    }
}

#[test]
fn a_different_column_set_fails_the_step_naming_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "data/iris.schema.toml", &dedent(IRIS_LIKE));
    write(
        dir.path(),
        "data/iris.csv",
        "id,sepal_length,species,colour\n1,5.1,setosa,red\n",
    );
    let run = super::run_pipeline(dir.path(), &manifest_with(STEP_WITH_SCHEMA_FILE));
    let step = super::ci_step(&run);
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(
        step.reason.as_deref(),
        Some(
            "data/iris.csv: 2 violations: column `measured`: missing from the file (line 1); column `colour`: not declared in the schema (line 1)"
        )
    );
}
