//! Evidence from source code: Python, notebooks, R, Rust and load-test
//! scripts.
//!
//! Each language has a table of [`Rule`]s, each compiled once and searched
//! on its own: every pattern has a literal the regex engine finds with its
//! prefilter, which beats one `RegexSet` pass (measured on 114 MB of Rust
//! sources: 105 ms for the four Rust rules one by one, 314 ms as a set).
//! Tests, training code and seeds need more than a pattern and have their
//! own functions.
//!
//! Evidence in a test file is run by the test runner (`pytest`, `cargo
//! test`, `testthat`); evidence in other code by its path or module (a CI
//! step `python -m pkg.tune` runs `pkg/tune.py`); in a notebook by its path
//! or `--nbmake`.

use std::sync::LazyLock;

use regex::bytes::Regex;

use super::config::notebook_evidence;
use super::text::{line_at, mentions_training, pattern, python_module, snippet_at};
use super::{Collector, FileCtx};
use crate::evidence::{Evidence, Signal};

/// What runs Python tests.
const PYTEST: &[&str] = &["pytest", "py.test", "tox", "nox", "hatch test"];
/// What runs Rust tests.
const CARGO_TEST: &[&str] = &[
    "cargo test",
    "cargo nextest",
    "cargo t",
    "cargo llvm-cov",
    "cargo tarpaulin",
    "cargo hack",
];
/// What runs R tests.
const R_TEST: &[&str] = &[
    "testthat",
    "devtools::test",
    "devtools::check",
    "testthat::test_dir",
    "test_dir",
    "R CMD check",
    "rcmdcheck",
    "rcmdcheck::rcmdcheck",
];

/// Which files a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every file of the language, notebooks included.
    Any,
    /// Test files only.
    Tests,
    /// Code that is neither a test nor a notebook.
    Code,
}

/// How the evidence of a rule becomes automated.
#[derive(Debug, Clone, Copy)]
enum Run {
    /// When automation runs the file (its test runner, path or module).
    ByFile,
    /// Always: it runs whenever the code does (instrumentation).
    Always,
    /// When automation runs this tool, or the file.
    Tool(&'static str),
}

/// A pattern that shows a signal.
struct Rule {
    signal: Signal,
    scope: Scope,
    run: Run,
    /// For people: "hyperparameter search".
    what: &'static str,
    pattern: &'static str,
}

const fn rule(
    signal: Signal,
    scope: Scope,
    run: Run,
    what: &'static str,
    pattern: &'static str,
) -> Rule {
    Rule {
        signal,
        scope,
        run,
        what,
        pattern,
    }
}

/// A rule table, compiled.
struct Rules {
    rules: &'static [Rule],
    each: Vec<Regex>,
}

impl Rules {
    fn new(rules: &'static [Rule]) -> Rules {
        Rules {
            rules,
            each: rules.iter().map(|r| pattern(r.pattern)).collect(),
        }
    }

    /// The first match of each signal, for the rules whose scope admits the
    /// file.
    fn find(&self, text: &str, admits: impl Fn(Scope) -> bool) -> Vec<(&'static Rule, usize)> {
        let mut found: Vec<(&'static Rule, usize)> = Vec::new();
        for (rule, regex) in self.rules.iter().zip(&self.each) {
            if !admits(rule.scope) {
                continue;
            }
            let Some(m) = regex.find(text.as_bytes()) else {
                continue;
            };
            match found.iter_mut().find(|(r, _)| r.signal == rule.signal) {
                Some(slot) if slot.1 > m.start() => *slot = (rule, m.start()),
                Some(_) => {}
                None => found.push((rule, m.start())),
            }
        }
        found
    }

    /// Evidence of every rule that matches; `words` run the file.
    fn apply(
        &self,
        rel: &str,
        text: &str,
        admits: impl Fn(Scope) -> bool,
        words: &[String],
        out: &mut Collector,
    ) {
        for (rule, offset) in self.find(text, admits) {
            let evidence = Evidence::file(
                rule.signal,
                rel,
                Some(line_at(text, offset)),
                format!("{rel}: {} (`{}`)", rule.what, snippet_at(text, offset)),
            );
            out.push(match rule.run {
                Run::ByFile => evidence.run_by(words.iter().cloned()),
                Run::Always => evidence.automated(),
                Run::Tool(tool) => evidence.run_by([tool.to_owned(), rel.to_owned()]),
            });
        }
    }
}

/// An assertion comparing a quality metric with a plain number (not a
/// tolerance such as `1e-12`).
const ASSERT_METRIC: &str = r"(?im)\bassert\b.*\b(?:accuracy|acc|f1\w*|auc|roc_auc|rmse|r2|r2_score|precision|recall|mae|mse|log_loss|logloss)\b.*[<>]=?\s*\d*\.?\d+(?:\s|,|\)|\]|;|$)";

static PYTHON_RULES: LazyLock<Rules> = LazyLock::new(|| {
    use Scope::{Any, Code, Tests};
    use Signal as S;
    static RULES: &[Rule] = &[
        rule(
            S::HyperparameterTuning,
            Any,
            Run::ByFile,
            "hyperparameter search",
            r"\b(?:optuna|GridSearchCV|RandomizedSearchCV|HalvingGridSearchCV|HalvingRandomSearchCV|BayesSearchCV|hyperopt|keras_tuner|kerastuner|skopt)\b|\bray\.tune\b|\bfrom ray import tune\b",
        ),
        rule(
            S::FeatureImportance,
            Any,
            Run::ByFile,
            "feature importance",
            r"\bpermutation_importance\b|\bimport shap\b|\bshap\.\w|\bfeature_importances_|\beli5\b|\bSelectKBest\b|\bRFECV?\(|\bget_feature_importance\(|\bplot_importance\(",
        ),
        rule(
            S::DataPolicy,
            Any,
            Run::ByFile,
            "PII detection",
            r"\bpresidio_\w+|\bscrubadub\b|\bdetect_pii\w*|\bpii_(?:detect|scan|check|filter)\w*",
        ),
        rule(
            S::BaselineComparison,
            Any,
            Run::ByFile,
            "a dummy baseline model",
            r"\bDummy(?:Classifier|Regressor)\b",
        ),
        rule(
            S::BaselineComparison,
            Tests,
            Run::ByFile,
            "an assertion against a baseline",
            r"(?i)\bassert\b.*\b(?:baseline|dummy)",
        ),
        rule(
            S::SliceEvaluation,
            Any,
            Run::ByFile,
            "metrics per slice (fairlearn MetricFrame)",
            r"\bMetricFrame\b",
        ),
        rule(
            S::SliceEvaluation,
            Tests,
            Run::ByFile,
            "a per-slice test",
            r"\bdef test_\w*slice|\.groupby\(.*\b(?:accuracy|f1|auc|rmse|precision|recall|score)",
        ),
        rule(
            S::FairnessTests,
            Any,
            Run::ByFile,
            "fairness metrics",
            r"\bfairlearn\b|\baif360\b|\bdemographic_parity\w*|\bequalized_odds\w*|\bequal_opportunity\w*|\bdisparate_impact\w*",
        ),
        rule(
            S::ExperimentTracking,
            Any,
            Run::ByFile,
            "experiment tracking",
            r"\bimport mlflow\b|\bfrom mlflow\b|\bmlflow\.(?:log_\w+|start_run|autolog|set_experiment)\b|\bimport wandb\b|\bwandb\.init\b|\bdvc\.api\b|\bdvclive\b|\bimport neptune\b|\bcomet_ml\b|\bfrom aim import\b|\bimport aim\b|\bclearml\b",
        ),
        rule(
            S::DriftMonitoring,
            Any,
            Run::ByFile,
            "drift detection",
            r"\bevidently\b|\bwhylogs\b|\balibi_detect\b|\bnannyml\b|\bfrouros\b|\bpopulation_stability_index\b|\bks_2samp\b|\bdef (?:\w+_)?(?:data|feature|concept|prediction|input|target|label|covariate)_drift\w*\(|\bdef (?:detect|check|compute|measure|monitor)_drift\w*\(|\bdef \w*_psi\(",
        ),
        rule(
            S::Metrics,
            Code,
            Run::Always,
            "service metrics",
            r#"\bprometheus_client\b|\bprometheus_fastapi_instrumentator\b|\bstarlette_exporter\b|\bstatsd\b|\bopentelemetry\b|\bstart_http_server\(|\.(?:get|route)\(\s*["']/metrics["']"#,
        ),
        rule(
            S::ModelRegistry,
            Any,
            Run::ByFile,
            "model registry",
            r"\bmlflow\.register_model\b|\bregistered_model_name\b|\.create_registered_model\(|\.create_model_version\(|\.transition_model_version_stage\(|\.set_registered_model_alias\(",
        ),
        rule(
            S::Packaging,
            Any,
            Run::ByFile,
            "a packaged model",
            r"\bmlflow\.\w+\.(?:log_model|save_model)\b|\bbentoml\.\w+\.save_model\b",
        ),
        rule(
            S::LoadTest,
            Any,
            Run::Tool("locust"),
            "Locust load test",
            r"\bfrom locust import\b|\bimport locust\b",
        ),
        rule(
            S::DataTests,
            Any,
            Run::ByFile,
            "data validation",
            r"\bimport pandera\b|\bfrom pandera\b|\bpa\.DataFrameSchema\b|\bgreat_expectations\b|\bgx\.\w|\bdeepchecks\b|\btensorflow_data_validation\b|\btfdv\.\w|\bpandas_schema\b",
        ),
        rule(
            S::DataTests,
            Tests,
            Run::ByFile,
            "a test of the data",
            r"\bdef test_\w*(?:schema|columns?|dtypes?|missing|nulls?|duplicates?|data_quality|validate_data|data_valid)",
        ),
        rule(
            S::ModelValidation,
            Tests,
            Run::ByFile,
            "a model-quality threshold",
            ASSERT_METRIC,
        ),
        rule(
            S::NumericalChecks,
            Tests,
            Run::ByFile,
            "a NaN or infinity check",
            r"\b(?:np|numpy|math|torch|jnp|cmath)\.(?:isnan|isfinite|isinf|isposinf|isneginf)\b|\btf\.math\.is_(?:nan|finite|inf)\b|\bassert_all_finite\b",
        ),
        rule(
            S::NumericalChecks,
            Any,
            Run::ByFile,
            "a NaN or infinity assertion",
            r"\bassert\b.*\b(?:isnan|isfinite|isinf)\b",
        ),
    ];
    Rules::new(RULES)
});

static RUST_RULES: LazyLock<Rules> = LazyLock::new(|| {
    use Scope::{Any, Tests};
    use Signal as S;
    static RULES: &[Rule] = &[
        rule(
            S::Metrics,
            Any,
            Run::Always,
            "service metrics",
            r#"\buse prometheus\b|\bprometheus(?:_client)?::|\bmetrics_exporter_prometheus\b|\bopentelemetry\w*::|\bautometrics\b|# TYPE |version=0\.0\.4|\.route\(\s*"/metrics"|=>\s*"/metrics"|"/metrics"\s*=>"#,
        ),
        rule(
            S::ModelValidation,
            Tests,
            Run::ByFile,
            "a model-quality threshold",
            r"(?m)\bassert\w*!\s*\(.*\b(?:accuracy|f1\w*|auc|rmse|r2|precision|recall|mae|mse|log_loss)\b.*[<>]=?\s*\d*\.?\d+(?:\s|,|\)|;|$)",
        ),
        rule(
            S::NumericalChecks,
            Tests,
            Run::ByFile,
            "a NaN or infinity assertion",
            r"\bassert\w*!\s*\(.*\.is_(?:nan|finite|infinite)\(\)",
        ),
        rule(
            S::DriftMonitoring,
            Any,
            Run::ByFile,
            "drift detection",
            r"\bpopulation_stability_index\b|\bks_2samp\b|\bfn (?:\w+_)?(?:data|feature|concept|prediction|input|target|label|covariate)_drift\w*\s*[<(]|\bfn (?:detect|check|compute|measure|monitor)_drift\w*\s*[<(]",
        ),
    ];
    Rules::new(RULES)
});

static R_RULES: LazyLock<Rules> = LazyLock::new(|| {
    use Scope::{Any, Tests};
    use Signal as S;
    static RULES: &[Rule] = &[
        rule(
            S::HyperparameterTuning,
            Any,
            Run::ByFile,
            "hyperparameter search",
            r"\btune_grid\(|\btune_bayes\(|\bmlr3tuning\b|\btuneRanger\b|\btrainControl\(.*search",
        ),
        rule(
            S::FeatureImportance,
            Any,
            Run::ByFile,
            "feature importance",
            r"\bvip::|\bvarImp\(|\bDALEX\b|\biml::",
        ),
        rule(
            S::FairnessTests,
            Any,
            Run::ByFile,
            "fairness metrics",
            r"\bfairmodels\b",
        ),
        rule(
            S::ExperimentTracking,
            Any,
            Run::ByFile,
            "experiment tracking",
            r"\bmlflow_log_\w+|\blibrary\(mlflow\)",
        ),
        rule(
            S::DataTests,
            Any,
            Run::ByFile,
            "data validation",
            r"\bpointblank\b|\blibrary\(validate\)|\bassertr\b",
        ),
        rule(
            S::ModelValidation,
            Tests,
            Run::ByFile,
            "a model-quality threshold",
            r"\bexpect_(?:gt|gte|lt|lte|true)\(.*\b(?:accuracy|rmse|auc|f1|r2|rsq|precision|recall)\b",
        ),
    ];
    Rules::new(RULES)
});

/// Seeds set in training code.
static SEED: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"\brandom_state\s*=\s*[\w.]+|\b(?:np|numpy)\.random\.seed\(|\brandom\.seed\(|\btorch\.manual_seed\(|\bseed_everything\(|\btf\.random\.set_seed\(|\bset_random_seed\(|\bset_seed\(|\bdefault_rng\(\s*\w",
    )
});

/// Whether a path is an integration or end-to-end test.
fn is_integration(rel: &str) -> bool {
    let lower = rel.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or("");
    name.contains("integration")
        || name.contains("e2e")
        || lower.split('/').any(|part| {
            matches!(
                part,
                "integration" | "integration_tests" | "e2e" | "end_to_end" | "end2end"
            )
        })
}

fn tests_evidence(rel: &str, line: usize, summary: String, words: &[&str]) -> Evidence {
    let signal = if is_integration(rel) {
        Signal::IntegrationTests
    } else {
        Signal::UnitTests
    };
    Evidence::file(signal, rel, Some(line), summary).run_by(words.iter().copied())
}

fn owned(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// A Python file.
pub(super) fn python(ctx: &FileCtx<'_>, text: &str, out: &mut Collector) {
    static TEST_DEF: LazyLock<Regex> =
        LazyLock::new(|| pattern(r"(?m)^[ \t]*(?:async[ \t]+)?def[ \t]+test\w*[ \t]*\("));
    let name = ctx.name;
    let unittest = text.contains("unittest.TestCase") || text.contains("(TestCase)");
    let pytest_name =
        (name.starts_with("test_") || name.ends_with("_test.py") || name == "conftest.py")
            && name.ends_with(".py");
    let is_test = pytest_name || unittest;
    let module = python_module(ctx.rel);
    let words: Vec<String> = if is_test {
        let mut words = owned(PYTEST);
        if unittest {
            words.push("unittest".to_owned());
        }
        words
    } else {
        std::iter::once(ctx.rel.to_owned()).chain(module).collect()
    };
    if is_test {
        let mut defs = TEST_DEF.find_iter(text.as_bytes());
        if let Some(first) = defs.next() {
            let count = 1 + defs.count();
            let what = if count == 1 {
                "test function"
            } else {
                "test functions"
            };
            let mut e = tests_evidence(
                ctx.rel,
                line_at(text, first.start()),
                format!("{}: {count} {what}", ctx.rel),
                PYTEST,
            );
            if unittest {
                e.run_by.push("unittest".to_owned());
            }
            out.push(e);
        }
    }
    PYTHON_RULES.apply(
        ctx.rel,
        text,
        |scope| match scope {
            Scope::Any => true,
            Scope::Tests => is_test,
            Scope::Code => !is_test,
        },
        &words,
        out,
    );
    if !is_test {
        python_training(ctx, text, &words, out);
    }
}

fn python_training(ctx: &FileCtx<'_>, text: &str, words: &[String], out: &mut Collector) {
    static ML_IMPORT: LazyLock<Regex> = LazyLock::new(|| {
        pattern(
            r"(?m)^\s*(?:import|from)\s+(sklearn|torch|tensorflow|keras|xgboost|lightgbm|catboost|jax|flax|statsmodels|transformers|pytorch_lightning|lightning|prophet|sktime|darts)\b",
        )
    });
    static FIT: LazyLock<Regex> = LazyLock::new(|| pattern(r"\.fit\(|\.train\(|\btrain_model\("));
    static DEF_TRAIN: LazyLock<Regex> =
        LazyLock::new(|| pattern(r"(?m)^[ \t]*(?:async[ \t]+)?def[ \t]+(?:train|fit)\w*[ \t]*\("));
    if !(text.contains("fit(") || text.contains("train")) {
        return;
    }
    let Some(import) = ML_IMPORT.captures(text.as_bytes()) else {
        return;
    };
    let Some(fit) = FIT.find(text.as_bytes()) else {
        return;
    };
    let def = DEF_TRAIN.find(text.as_bytes());
    let stem = ctx.name.trim_end_matches(".py");
    if def.is_none() && !mentions_training(stem) {
        return;
    }
    let library = import
        .get(1)
        .and_then(|m| text.get(m.range()))
        .unwrap_or("?");
    let at = def.map_or(fit.start(), |d| d.start());
    out.push(
        Evidence::file(
            Signal::TrainingCode,
            ctx.rel,
            Some(line_at(text, at)),
            format!(
                "{}: trains a model with {library} (`{}`)",
                ctx.rel,
                snippet_at(text, at)
            ),
        )
        .run_by(words.iter().cloned()),
    );
    let seed = SEED
        .find_iter(text.as_bytes())
        .find(|m| !text.get(m.range()).is_some_and(|s| s.ends_with("None")));
    if let Some(seed) = seed {
        out.push(
            Evidence::file(
                Signal::Reproducibility,
                ctx.rel,
                Some(line_at(text, seed.start())),
                format!(
                    "{}: training sets its random seed (`{}`)",
                    ctx.rel,
                    snippet_at(text, seed.start())
                ),
            )
            .run_by(words.iter().cloned()),
        );
    }
}

/// A Jupyter notebook: itself, and what its code shows.
pub(super) fn notebook(ctx: &FileCtx<'_>, text: &str, out: &mut Collector) {
    let cells = text.matches("\"cell_type\"").count();
    out.push(notebook_evidence(ctx.rel, Some(cells)));
    let words = vec![ctx.rel.to_owned(), "--nbmake".to_owned()];
    PYTHON_RULES.apply(ctx.rel, text, |scope| scope == Scope::Any, &words, out);
}

/// An R file: testthat tests, training code, rules.
pub(super) fn r(ctx: &FileCtx<'_>, text: &str, out: &mut Collector) {
    static ML_LIBRARY: LazyLock<Regex> = LazyLock::new(|| {
        pattern(
            r"\b(?:library|require)\((?:caret|tidymodels|parsnip|randomForest|ranger|xgboost|glmnet|mlr3|h2o|e1071|gbm|lightgbm)\)",
        )
    });
    static FIT: LazyLock<Regex> = LazyLock::new(|| {
        pattern(r"\btrain\(|\bfit\(|\brandomForest\(|\bxgboost\(|\bglmnet\(|\branger\(")
    });
    let lower = ctx.name.to_ascii_lowercase();
    let is_test = ctx.rel.contains("tests/testthat/") && lower.starts_with("test");
    if is_test && let Some(first) = text.find("test_that(") {
        let count = text.matches("test_that(").count();
        out.push(tests_evidence(
            ctx.rel,
            line_at(text, first),
            format!("{}: {count} testthat tests", ctx.rel),
            R_TEST,
        ));
    }
    let words: Vec<String> = if is_test {
        owned(R_TEST)
    } else {
        vec![ctx.rel.to_owned()]
    };
    R_RULES.apply(
        ctx.rel,
        text,
        |scope| match scope {
            Scope::Tests => is_test,
            _ => true,
        },
        &words,
        out,
    );
    if !is_test
        && mentions_training(&lower)
        && ML_LIBRARY.is_match(text.as_bytes())
        && let Some(fit) = FIT.find(text.as_bytes())
    {
        out.push(
            Evidence::file(
                Signal::TrainingCode,
                ctx.rel,
                Some(line_at(text, fit.start())),
                format!(
                    "{}: trains a model (`{}`)",
                    ctx.rel,
                    snippet_at(text, fit.start())
                ),
            )
            .run_by(words.iter().cloned()),
        );
        if let Some(seed) = text.find("set.seed(") {
            out.push(
                Evidence::file(
                    Signal::Reproducibility,
                    ctx.rel,
                    Some(line_at(text, seed)),
                    format!("{}: training sets its random seed", ctx.rel),
                )
                .run_by(words.iter().cloned()),
            );
        }
    }
}

/// A Rust file: tests, training code, rules.
pub(super) fn rust(ctx: &FileCtx<'_>, text: &str, out: &mut Collector) {
    static TEST_ATTR: LazyLock<Regex> =
        LazyLock::new(|| pattern(r"#\[(?:test|tokio::test|async_std::test|rstest|test_case)\b"));
    static TRAIN_FN: LazyLock<Regex> = LazyLock::new(|| {
        pattern(
            r"(?m)^[ \t]*(?:pub(?:\([\w:]+\))?[ \t]+)?(?:async[ \t]+)?fn[ \t]+(?:train|train_\w+|\w+_train)[ \t]*[<(]",
        )
    });
    static RUST_SEED: LazyLock<Regex> =
        LazyLock::new(|| pattern(r"\bseed_from_u64\b|\bSeedableRng\b|\bfrom_seed\(|\bseed\b"));
    let in_tests_dir = ctx.rel.split('/').any(|part| part == "tests");
    let mut attrs = TEST_ATTR.find_iter(text.as_bytes());
    let first = attrs.next();
    let is_test = first.is_some() || in_tests_dir;
    if let Some(first) = first {
        let count = 1 + attrs.count();
        let what = if count == 1 { "test" } else { "tests" };
        out.push(tests_evidence(
            ctx.rel,
            line_at(text, first.start()),
            format!("{}: {count} {what}", ctx.rel),
            CARGO_TEST,
        ));
    }
    let words = if is_test {
        owned(CARGO_TEST)
    } else {
        vec![ctx.rel.to_owned()]
    };
    RUST_RULES.apply(
        ctx.rel,
        text,
        |scope| match scope {
            Scope::Tests => is_test,
            _ => true,
        },
        &words,
        out,
    );
    if in_tests_dir || !text.contains("train") {
        return;
    }
    let Some(train) = TRAIN_FN.find(text.as_bytes()) else {
        return;
    };
    out.rust_training.push(out.evidence.len());
    out.push(
        Evidence::file(
            Signal::TrainingCode,
            ctx.rel,
            Some(line_at(text, train.start())),
            format!(
                "{}: training code (`{}`)",
                ctx.rel,
                snippet_at(text, train.start())
            ),
        )
        .run_by([ctx.rel.to_owned()]),
    );
    if let Some(seed) = RUST_SEED.find(text.as_bytes()) {
        out.rust_training.push(out.evidence.len());
        out.push(
            Evidence::file(
                Signal::Reproducibility,
                ctx.rel,
                Some(line_at(text, seed.start())),
                format!(
                    "{}: training takes a random seed (`{}`)",
                    ctx.rel,
                    snippet_at(text, seed.start())
                ),
            )
            .run_by([ctx.rel.to_owned()]),
        );
    }
}

/// JavaScript or TypeScript: k6 load tests.
pub(super) fn script(ctx: &FileCtx<'_>, text: &str, out: &mut Collector) {
    static K6: LazyLock<Regex> =
        LazyLock::new(|| pattern(r#"\bfrom\s+['"]k6(?:/http)?['"]|\brequire\(\s*['"]k6/http['"]"#));
    if !text.contains("k6") {
        return;
    }
    if let Some(m) = K6.find(text.as_bytes()) {
        out.push(
            Evidence::file(
                Signal::LoadTest,
                ctx.rel,
                Some(line_at(text, m.start())),
                format!("{}: k6 load test", ctx.rel),
            )
            .run_by(["k6".to_owned(), ctx.rel.to_owned()]),
        );
    }
}
