//! Every malformed manifest gets every error, with file, line and column.
//! One data-driven `check` per case; the rendered diagnostics are snapshots.

use std::path::PathBuf;
use std::sync::Arc;

use mlops_core::manifest::{Diagnostic, Manifest};
use mlops_core::{KindParams, KindRegistry, Stage, StepAction, StepFailure, StepKind};

/// A kind for tests: `with = { threshold = <float>, metric = <string> }`.
struct ThresholdKind;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ThresholdParams {
    metric: String,
    threshold: f64,
}

impl StepKind for ThresholdKind {
    fn name(&self) -> &'static str {
        "threshold"
    }
    fn stage(&self) -> Option<Stage> {
        Some(Stage::Ci)
    }
    fn summary(&self) -> &'static str {
        "test kind"
    }
    fn compile(&self, params: &KindParams<'_>) -> Result<Arc<dyn StepAction>, Vec<Diagnostic>> {
        let p: ThresholdParams = params.deserialize().map_err(|d| vec![d])?;
        if !(0.0..=1.0).contains(&p.threshold) {
            return Err(vec![Diagnostic::new(
                "`threshold` must be within 0..=1",
                Some(params.span()),
            )]);
        }
        Ok(Arc::new(|_ctx: mlops_core::StepContext| async {
            Ok::<(), StepFailure>(())
        }))
    }
}

pub(crate) fn registry() -> KindRegistry {
    let mut r = KindRegistry::new();
    r.register(Arc::new(ThresholdKind)).expect("one kind");
    r
}

fn render(source: &str) -> String {
    match Manifest::parse(PathBuf::from("mlops.toml"), source.to_owned(), &registry()) {
        Ok(m) => format!("valid: {} steps", m.pipeline.steps().len()),
        Err(d) => d.to_string(),
    }
}

const HEAD: &str = "[project]\nname = \"p\"\n\n[iac.steps.build]\nrun = \"true\"\n";

macro_rules! check {
    ($name:ident, $source:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(stringify!($name), render(&$source));
        }
    };
}

fn with_ci(ci: &str) -> String {
    format!("{HEAD}\n{ci}")
}

check!(syntax_error, "[project\nname = \"p\"\n");
check!(empty_file, "");
check!(missing_project, "[iac.steps.build]\nrun = \"true\"\n");
check!(
    project_name_empty,
    "[project]\nname = \" \"\n\n[iac.steps.build]\nrun = \"true\"\n"
);
check!(
    project_unknown_key,
    "[project]\nname = \"p\"\nversion = \"1\"\n\n[iac.steps.build]\nrun = \"true\"\n"
);
check!(
    project_name_wrong_type,
    "[project]\nname = 3\n\n[iac.steps.build]\nrun = \"true\"\n"
);
check!(
    unknown_table_with_suggestion,
    with_ci("[cii.steps.test]\nrun = \"pytest\"\n")
);
check!(unknown_table, with_ci("[deploy]\nenv = \"prod\"\n"));
check!(stage_not_a_table, format!("ci = \"pytest\"\n\n{HEAD}"));
check!(step_outside_steps, with_ci("[ci.test]\nrun = \"pytest\"\n"));
check!(steps_not_a_table, with_ci("[ci]\nsteps = [\"pytest\"]\n"));
check!(step_not_a_table, with_ci("[ci.steps]\ntest = \"pytest\"\n"));
check!(
    step_unknown_key,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\ntiemout = \"10m\"\n")
);
check!(run_wrong_type, with_ci("[ci.steps.test]\nrun = 5\n"));
check!(
    neither_run_nor_kind,
    with_ci("[ci.steps.test]\ntimeout = \"1m\"\n")
);
check!(
    both_run_and_kind,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\nkind = \"threshold\"\n")
);
check!(empty_run, with_ci("[ci.steps.test]\nrun = \"  \"\n"));
check!(
    bad_duration,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\ntimeout = \"ten minutes\"\n")
);
check!(
    zero_duration,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\ntimeout = \"0s\"\n")
);
check!(
    duration_wrong_type,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\ntimeout = 10\n")
);
check!(
    negative_retries,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\nretries = -1\n")
);
check!(
    too_many_retries,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\nretries = 1000\n")
);
check!(
    bad_retry_backoff,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\nretries = 2\nretry-backoff = \"soon\"\n")
);
check!(
    depends_on_not_a_list,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\ndepends-on = \"build\"\n")
);
check!(
    unknown_dependency_with_suggestion,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\ndepends-on = [\"biuld\"]\n")
);
check!(
    later_stage_dependency,
    with_ci(
        "[ci.steps.test]\nrun = \"pytest\"\ndepends-on = [\"deploy\"]\n\n[cd.steps.deploy]\nrun = \"true\"\n"
    )
);
check!(
    self_dependency,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\ndepends-on = [\"test\"]\n")
);
check!(
    dependency_cycle,
    with_ci(
        "[ci.steps.a]\nrun = \"true\"\ndepends-on = [\"c\"]\n\n[ci.steps.b]\nrun = \"true\"\ndepends-on = [\"a\"]\n\n[ci.steps.c]\nrun = \"true\"\ndepends-on = [\"b\"]\n"
    )
);
check!(
    duplicate_step_across_stages,
    with_ci("[ci.steps.build]\nrun = \"true\"\n")
);
check!(
    duplicate_key,
    with_ci("[ci.steps.test]\nrun = \"a\"\nrun = \"b\"\n")
);
check!(
    invalid_step_name,
    with_ci("[ci.steps.\"unit tests\"]\nrun = \"pytest\"\n")
);
check!(
    missing_earlier_stage,
    "[project]\nname = \"p\"\n\n[ci.steps.test]\nrun = \"pytest\"\n"
);
check!(
    missing_two_earlier_stages,
    "[project]\nname = \"p\"\n\n[iac.steps.build]\nrun = \"true\"\n\n[release.steps.tag]\nrun = \"true\"\n"
);
check!(
    empty_stage,
    "[project]\nname = \"p\"\n\n[iac]\ndescription = \"later\"\n\n[ci.steps.test]\nrun = \"pytest\"\n"
);
check!(
    absolute_cwd,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\ncwd = \"/home/me/project\"\n")
);
check!(
    bad_glob,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\ninputs = [\"src/[a-\"]\n")
);
check!(
    absolute_output,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\noutputs = [\"/tmp/model.json\"]\n")
);
check!(
    with_without_kind,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\nwith = { metric = \"accuracy\" }\n")
);
check!(
    unknown_kind_with_suggestion,
    with_ci("[ci.steps.gate]\nkind = \"treshold\"\n")
);
check!(
    kind_in_wrong_stage,
    "[project]\nname = \"p\"\n\n[iac.steps.gate]\nkind = \"threshold\"\nwith = { metric = \"a\", threshold = 0.5 }\n"
);
check!(
    kind_params_unknown_field,
    with_ci(
        "[ci.steps.gate]\nkind = \"threshold\"\n\n[ci.steps.gate.with]\nmetric = \"accuracy\"\nthreshold = 0.9\nbound = 3\n"
    )
);
check!(
    kind_params_missing,
    with_ci("[ci.steps.gate]\nkind = \"threshold\"\n")
);
check!(
    kind_params_invalid_value,
    with_ci(
        "[ci.steps.gate]\nkind = \"threshold\"\nwith = { metric = \"accuracy\", threshold = 9.0 }\n"
    )
);
check!(
    env_wrong_type,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\nenv = { SEED = 1 }\n")
);
check!(
    env_reserved_name,
    with_ci("[ci.steps.test]\nrun = \"pytest\"\nenv = { MLOPS_RUN_ID = \"1\", SEED = \"1\" }\n")
);
check!(
    stage_description_wrong_type,
    with_ci("[ci]\ndescription = 1\n\n[ci.steps.test]\nrun = \"pytest\"\n")
);
check!(
    many_errors_at_once,
    with_ci(
        "[ci.steps.test]\nrun = \"pytest\"\ntiemout = \"1m\"\n\n[ci.steps.train]\nrun = \"python train.py\"\ntimeout = \"forever\"\ndepends-on = [\"tests\"]\n\n[cd.steps.deploy]\nrun = \"true\"\ndepends-on = [\"smoke\"]\n"
    )
);
check!(
    every_bad_key_of_one_step,
    with_ci(
        "[ci.steps.test]\nrun = 3\ntiemout = \"1m\"\nretries = \"two\"\ndepend-on = [\"build\"]\n"
    )
);
check!(
    valid_with_kind,
    with_ci(
        "[ci.steps.gate]\nkind = \"threshold\"\nwith = { metric = \"accuracy\", threshold = 0.9 }\n"
    )
);
check!(
    multibyte_columns,
    "[project]\nname = \"p\"\n\n[iac.steps.build]\nrun = \"true\" ; é = 1\n"
);

#[test]
fn no_input_panics() {
    // A byte-level sweep: every prefix of a valid manifest must parse to a
    // manifest or diagnostics, never panic.
    let source = with_ci(
        "[ci.steps.gate]\nkind = \"threshold\"\nwith = { metric = \"é\", threshold = 0.9 }\ndepends-on = [\"build\"]\ninputs = [\"src/**/*.py\"]\nenv = { A = \"1\" }\n",
    );
    for end in 0..=source.len() {
        if source.is_char_boundary(end) {
            let _ = render(&source[..end]);
        }
    }
}
