//! The executor against real processes, a real SQLite ledger and real git
//! repositories in temporary directories.

use std::path::Path;
use std::time::Duration;

use mlops_core::{
    CancellationToken, Event, ExecError, Executor, Pipeline, RunOptions, RunReport, RunStatus,
    Selection, Stage, Step, StepFailure, StepStatus,
};

fn pipeline(steps: Vec<Step>) -> Pipeline {
    Pipeline::new("test", steps, None).expect("valid test pipeline")
}

async fn run(dir: &Path, p: &Pipeline, opts: RunOptions) -> RunReport {
    Executor::new(dir).unwrap().run(p, opts).await.unwrap()
}

fn resume() -> RunOptions {
    RunOptions {
        resume: true,
        ..RunOptions::default()
    }
}

fn jobs(jobs: usize) -> RunOptions {
    RunOptions {
        jobs,
        ..RunOptions::default()
    }
}

fn only(stage: Stage) -> RunOptions {
    RunOptions {
        selection: Selection::Stage(stage),
        ..RunOptions::default()
    }
}

fn from(stage: Stage) -> RunOptions {
    RunOptions {
        selection: Selection::From(stage),
        ..RunOptions::default()
    }
}

fn status(report: &RunReport, step: &str) -> StepStatus {
    report
        .step(step)
        .unwrap_or_else(|| panic!("no step {step} in {report:?}"))
        .status
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits up to five seconds for a file to hold `want`.
fn eventually_reads(path: &Path, want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A shell step that prints nothing leaves no log (its file goes to the
/// next step); one that prints, runs for a while (its log can be followed
/// while it runs), is retried, or leaves something behind that may still
/// print gets `<step>.log` with everything written to it, late output
/// included, whether the writer stayed in the step's process group or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_exists_for_every_step_that_has_something_to_say() {
    let dir = tempfile::tempdir().unwrap();
    let mut steps: Vec<Step> = (0..20)
        .map(|i| {
            let step = Step::shell(format!("quiet{i}"), Stage::Iac, "true");
            if i == 0 {
                step
            } else {
                step.depends_on([format!("quiet{}", i - 1)])
            }
        })
        .collect();
    steps.extend([
        Step::shell("talks", Stage::Iac, "echo out; echo err >&2"),
        Step::shell("slow", Stage::Iac, "sleep 0.6"),
        // Runs beside `slow` and must find its log while it runs.
        Step::shell(
            "follows",
            Stage::Iac,
            "sleep 0.3; test -e .mlops/runs/$MLOPS_RUN_ID/slow.log",
        ),
        Step::shell(
            "group",
            Stage::Iac,
            "(sleep 0.3; echo late from the group) &",
        ),
        // Its writer has left the group (and said so) before it ends.
        Step::shell(
            "detached",
            Stage::Iac,
            "setsid sh -c 'touch left; sleep 0.3; echo late from another session' & \
             while [ ! -e left ]; do :; done",
        ),
        Step::shell(
            "flaky",
            Stage::Iac,
            "test -e flaked || { touch flaked; exit 1; }",
        )
        .retries(1)
        .retry_backoff(Duration::from_millis(1)),
    ]);
    let p = pipeline(steps);
    let report = run(dir.path(), &p, jobs(8)).await;
    assert_eq!(report.status, RunStatus::Passed, "{report:?}");

    let logs = dir.path().join(".mlops/runs/1");
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "detached.log",
            "flaky.log",
            "follows.log",
            "group.log",
            "slow.log",
            "talks.log"
        ]
    );
    let summary = Executor::new(dir.path())
        .unwrap()
        .ledger()
        .run(report.run_id)
        .unwrap()
        .unwrap();
    for step in &summary.steps {
        let expected = names.contains(&format!("{}.log", step.name)).then(|| {
            logs.join(format!("{}.log", step.name))
                .display()
                .to_string()
        });
        assert_eq!(
            step.log, expected,
            "the log the ledger names for {}",
            step.name
        );
    }
    assert_eq!(
        std::fs::read_to_string(logs.join("talks.log")).unwrap(),
        "out\nerr\n"
    );
    let flaky = std::fs::read_to_string(logs.join("flaky.log")).unwrap();
    assert!(
        flaky.starts_with("--- mlops: attempt 1 exit status 1; retrying in"),
        "{flaky}"
    );
    assert_eq!(
        eventually_reads(&logs.join("group.log"), "late from the group\n"),
        "late from the group\n"
    );
    assert_eq!(
        eventually_reads(&logs.join("detached.log"), "late from another session\n"),
        "late from another session\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_stages_are_gated_when_a_stage_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("build", Stage::Iac, "true"),
        Step::shell("test", Stage::Ci, "echo checking; exit 3"),
        Step::shell("lint", Stage::Ci, "true"),
        Step::shell("deploy", Stage::Cd, "touch deployed"),
        Step::shell("tag", Stage::Release, "true"),
    ]);
    let report = run(dir.path(), &p, RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(status(&report, "build"), StepStatus::Passed);
    assert_eq!(status(&report, "test"), StepStatus::Failed);
    // A sibling in the failing stage still runs: more evidence, same verdict.
    assert_eq!(status(&report, "lint"), StepStatus::Passed);
    for later in ["deploy", "tag"] {
        assert_eq!(status(&report, later), StepStatus::Gated);
        assert_eq!(
            report.step(later).unwrap().reason.as_deref(),
            Some("stage `ci` did not pass: step `test` failed (exit status 3)")
        );
    }
    assert!(
        !dir.path().join("deployed").exists(),
        "a gated step must never start"
    );

    let summary = Executor::new(dir.path())
        .unwrap()
        .ledger()
        .run(report.run_id)
        .unwrap()
        .unwrap();
    assert_eq!(summary.status, RunStatus::Failed);
    let test = summary.steps.iter().find(|s| s.name == "test").unwrap();
    assert_eq!(test.exit_code, Some(3));
    let log = std::fs::read_to_string(test.log.as_ref().unwrap()).unwrap();
    assert_eq!(log, "checking\n");
    let stages: Vec<(String, String)> = summary
        .stages
        .iter()
        .map(|s| (s.name.to_string(), s.status.to_string()))
        .collect();
    assert_eq!(
        stages,
        [
            ("iac", "passed"),
            ("ci", "failed"),
            ("cd", "gated"),
            ("release", "gated")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_in_a_stage_gate_their_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("train", Stage::Iac, "exit 1"),
        Step::shell("evaluate", Stage::Iac, "touch evaluated").depends_on(["train"]),
    ]);
    let report = run(dir.path(), &p, RunOptions::default()).await;
    assert_eq!(status(&report, "evaluate"), StepStatus::Gated);
    assert_eq!(
        report.step("evaluate").unwrap().reason.as_deref(),
        Some("dependency `train` failed (exit status 1)")
    );
    assert!(!dir.path().join("evaluated").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_steps_run_in_parallel_up_to_jobs() {
    // Each step waits (bounded) for the other's marker: they pass only if
    // both run at the same time.
    let wait_for = |me: &str, other: &str| {
        format!(
            "touch {me}; for i in $(seq 100); do [ -f {other} ] && exit 0; sleep 0.05; done; exit 1"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("a", Stage::Iac, wait_for("a", "b")),
        Step::shell("b", Stage::Iac, wait_for("b", "a")),
    ]);
    let report = run(dir.path(), &p, jobs(2)).await;
    assert_eq!(report.status, RunStatus::Passed, "{report:?}");

    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("a", Stage::Iac, wait_for("a", "b")).timeout(Duration::from_millis(800)),
        Step::shell("b", Stage::Iac, wait_for("b", "a")).timeout(Duration::from_millis(800)),
    ]);
    let report = run(dir.path(), &p, jobs(1)).await;
    assert_eq!(
        report.status,
        RunStatus::Failed,
        "with one job the steps cannot meet"
    );
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie reaped by init is gone.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

async fn wait_gone(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("hang", Stage::Iac, "sleep 60 & echo $! > child.pid; wait")
            .timeout(Duration::from_millis(500)),
    ]);
    let report = run(
        dir.path(),
        &p,
        RunOptions {
            kill_grace: Duration::from_millis(200),
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(status(&report, "hang"), StepStatus::TimedOut);
    assert_eq!(
        report.step("hang").unwrap().reason.as_deref(),
        Some("timed out after 500ms")
    );
    let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_gone(pid).await,
        "the grandchild {pid} survived the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_kills_running_steps_and_cancels_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("hang", Stage::Iac, "sleep 60 & echo $! > child.pid; wait"),
        Step::shell("after", Stage::Ci, "true"),
    ]);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let pid_file = dir.path().join("child.pid");
    tokio::spawn(async move {
        while !pid_file.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.cancel();
    });
    let report = run(
        dir.path(),
        &p,
        RunOptions {
            cancel,
            kill_grace: Duration::from_millis(200),
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(status(&report, "hang"), StepStatus::Cancelled);
    assert_eq!(status(&report, "after"), StepStatus::Cancelled);
    let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_gone(pid).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_and_count_attempts() {
    let dir = tempfile::tempdir().unwrap();
    // Fails on the first two attempts, passes on the third.
    let p = pipeline(vec![
        Step::shell(
            "flaky",
            Stage::Iac,
            "echo x >> tries; [ $(wc -l < tries) -ge 3 ]",
        )
        .retries(3)
        .retry_backoff(Duration::from_millis(10)),
        Step::shell("broken", Stage::Iac, "echo y >> broken; exit 1")
            .retries(1)
            .retry_backoff(Duration::from_millis(10)),
    ]);
    let mut executor = Executor::new(dir.path()).unwrap();
    let mut events = executor.subscribe();
    let report = executor.run(&p, RunOptions::default()).await.unwrap();
    assert_eq!(status(&report, "flaky"), StepStatus::Passed);
    assert_eq!(report.step("flaky").unwrap().attempts, 3);
    assert_eq!(count_lines(&dir.path().join("tries")), 3);
    assert_eq!(status(&report, "broken"), StepStatus::Failed);
    assert_eq!(report.step("broken").unwrap().attempts, 2);
    assert_eq!(count_lines(&dir.path().join("broken")), 2);
    drop(executor);
    let mut delays = Vec::new();
    while let Some(e) = events.recv().await {
        if let Event::StepRetrying { step, delay_ms, .. } = e
            && step == "flaky"
        {
            delays.push(delay_ms);
        }
    }
    assert_eq!(delays, [10, 20], "exponential backoff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_inputs_are_cached_until_something_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/train.csv"), "x\n1\n").unwrap();
    let train = || {
        Step::shell(
            "train",
            Stage::Iac,
            "echo run >> runs.log; cp data/train.csv model.bin",
        )
        .inputs(["data/*.csv"])
        .outputs(["model.bin"])
    };
    let p = pipeline(vec![train()]);
    let runs = dir.path().join("runs.log");

    let r1 = run(dir.path(), &p, RunOptions::default()).await;
    assert_eq!(status(&r1, "train"), StepStatus::Passed);
    let r2 = run(dir.path(), &p, RunOptions::default()).await;
    assert_eq!(status(&r2, "train"), StepStatus::Cached);
    assert_eq!(r2.status, RunStatus::Passed);
    assert_eq!(count_lines(&runs), 1);

    // --force reruns.
    let r3 = run(
        dir.path(),
        &p,
        RunOptions {
            force: true,
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(status(&r3, "train"), StepStatus::Passed);
    assert_eq!(count_lines(&runs), 2);

    // A changed input reruns.
    std::fs::write(dir.path().join("data/train.csv"), "x\n2\n").unwrap();
    let r4 = run(dir.path(), &p, RunOptions::default()).await;
    assert_eq!(status(&r4, "train"), StepStatus::Passed);
    assert_eq!(count_lines(&runs), 3);

    // A tampered or missing output reruns.
    std::fs::write(dir.path().join("model.bin"), "tampered").unwrap();
    let r5 = run(dir.path(), &p, RunOptions::default()).await;
    assert_eq!(status(&r5, "train"), StepStatus::Passed);
    std::fs::remove_file(dir.path().join("model.bin")).unwrap();
    let r6 = run(dir.path(), &p, RunOptions::default()).await;
    assert_eq!(status(&r6, "train"), StepStatus::Passed);
    assert_eq!(count_lines(&runs), 5);

    // A changed definition reruns.
    let p2 = pipeline(vec![train().env("SEED", "7")]);
    let r7 = run(dir.path(), &p2, RunOptions::default()).await;
    assert_eq!(status(&r7, "train"), StepStatus::Passed);
    assert_eq!(count_lines(&runs), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_inputs_outputs_or_directory_fail_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("needs", Stage::Iac, "true").inputs(["data/*.csv"]),
        Step::shell("makes", Stage::Iac, "true").outputs(["model.json"]),
        Step::shell("elsewhere", Stage::Iac, "true").cwd("missing"),
    ]);
    let report = run(dir.path(), &p, RunOptions::default()).await;
    let missing = dir.path().canonicalize().unwrap().join("missing");
    assert_eq!(
        report.step("elsewhere").unwrap().reason,
        Some(format!(
            "working directory {} does not exist",
            missing.display()
        ))
    );
    assert_eq!(status(&report, "elsewhere"), StepStatus::Failed);
    assert_eq!(
        report.step("needs").unwrap().reason.as_deref(),
        Some("inputs: input pattern `data/*.csv` matches no file")
    );
    assert_eq!(
        report.step("makes").unwrap().reason.as_deref(),
        Some("declared output `model.json` was not produced")
    );
    assert_eq!(status(&report, "makes"), StepStatus::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_stage_alone_needs_evidence_for_this_commit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("env.lock"), "numpy==2\n").unwrap();
    std::fs::write(root.join(".gitignore"), ".mlops/\n").unwrap();
    git(root, &["init", "-q"]);
    git(root, &["add", "."]);
    git(root, &["commit", "-qm", "one"]);
    let p = pipeline(vec![
        Step::shell("env", Stage::Iac, "true").inputs(["env.lock"]),
        Step::shell("test", Stage::Ci, "true"),
        Step::shell("deploy", Stage::Cd, "echo d >> deploys"),
    ]);
    let only_cd = || only(Stage::Cd);
    let executor = Executor::new(root).unwrap();

    let refused = executor.run(&p, only_cd()).await.unwrap_err();
    assert!(
        matches!(&refused, ExecError::Refused { missing: Stage::Iac, step, .. } if step == "env"),
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .contains("run `mlops pipeline run --from iac`"),
        "{refused}"
    );
    assert!(!root.join("deploys").exists());

    // Stage by stage: each needs the ones before it.
    assert_eq!(
        executor.run(&p, only(Stage::Iac)).await.unwrap().status,
        RunStatus::Passed
    );
    let refused = executor.run(&p, only_cd()).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            ExecError::Refused {
                missing: Stage::Ci,
                ..
            }
        ),
        "{refused}"
    );
    let report = executor.run(&p, from(Stage::Ci)).await.unwrap();
    assert_eq!(report.status, RunStatus::Passed);
    assert_eq!(report.steps.len(), 2, "--from ci runs ci and cd only");
    assert_eq!(
        executor.run(&p, only_cd()).await.unwrap().status,
        RunStatus::Passed
    );

    // Changed inputs of an earlier stage void its evidence.
    std::fs::write(root.join("env.lock"), "numpy==3\n").unwrap();
    let refused = executor.run(&p, only_cd()).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            ExecError::Refused {
                missing: Stage::Iac,
                ..
            }
        ),
        "{refused}"
    );
    std::fs::write(root.join("env.lock"), "numpy==2\n").unwrap();

    // So does a new commit.
    std::fs::write(root.join("README"), "x").unwrap();
    git(root, &["add", "."]);
    git(root, &["commit", "-qm", "two"]);
    let refused = executor.run(&p, only_cd()).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("passed only on another commit"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_steps_run_and_events_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::task("prepare", Stage::Iac, "prepare-v1", |ctx| async move {
            ctx.log(format!("attempt {} in {}", ctx.attempt, ctx.cwd.display()));
            std::fs::write(ctx.cwd.join("prepared"), "ok")
                .map_err(|e| StepFailure::new(e.to_string()))
        }),
        Step::task("check", Stage::Ci, "check-v1", |ctx| async move {
            if ctx.cwd.join("prepared").exists() {
                Ok(())
            } else {
                Err(StepFailure::new("nothing prepared"))
            }
        }),
        Step::task("explode", Stage::Ci, "explode-v1", |_ctx| async move {
            if true {
                panic!("boom");
            }
            Ok(())
        }),
    ]);
    let mut executor = Executor::new(dir.path()).unwrap();
    let mut rx = executor.subscribe();
    let report = executor.run(&p, RunOptions::default()).await.unwrap();
    drop(executor);
    assert_eq!(status(&report, "prepare"), StepStatus::Passed);
    assert_eq!(status(&report, "check"), StepStatus::Passed);
    assert_eq!(status(&report, "explode"), StepStatus::Failed);
    assert_eq!(
        report.step("explode").unwrap().reason.as_deref(),
        Some("step panicked: boom")
    );

    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    assert!(matches!(
        events.first(),
        Some(Event::RunStarted { steps: 3, .. })
    ));
    assert!(matches!(
        events.last(),
        Some(Event::RunFinished {
            status: RunStatus::Failed,
            ..
        })
    ));
    for name in ["prepare", "check", "explode"] {
        let started = events
            .iter()
            .position(|e| matches!(e, Event::StepStarted { step, .. } if step == name));
        let finished = events
            .iter()
            .position(|e| matches!(e, Event::StepFinished { step, .. } if step == name));
        assert!(started.unwrap() < finished.unwrap(), "{name}");
    }
    let iac_done = events
        .iter()
        .position(|e| {
            matches!(
                e,
                Event::StageFinished {
                    stage: Stage::Iac,
                    ..
                }
            )
        })
        .unwrap();
    let ci_start = events
        .iter()
        .position(|e| {
            matches!(
                e,
                Event::StageStarted {
                    stage: Stage::Ci,
                    ..
                }
            )
        })
        .unwrap();
    assert!(
        iac_done < ci_start,
        "the ci stage starts after the iac gate"
    );
    let log = std::fs::read_to_string(dir.path().join(".mlops/runs/1/prepare.log")).unwrap();
    assert!(log.starts_with("attempt 1 in "), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_finishes_a_failed_run_without_rerunning_passed_steps() {
    let dir = tempfile::tempdir().unwrap();
    let make = |fix: bool| {
        pipeline(vec![
            Step::shell("one", Stage::Iac, "echo x >> one.log"),
            Step::shell(
                "two",
                Stage::Ci,
                if fix {
                    "echo x >> two.log"
                } else {
                    "echo x >> two.log; exit 1"
                },
            ),
        ])
    };
    let executor = Executor::new(dir.path()).unwrap();
    let r1 = executor
        .run(&make(false), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(r1.status, RunStatus::Failed);
    // The fix changes `two`'s definition, so it reruns; `one` is kept.
    let r2 = executor.run(&make(true), resume()).await.unwrap();
    assert_eq!(r2.run_id, r1.run_id);
    assert_eq!(r2.status, RunStatus::Passed);
    assert_eq!(count_lines(&dir.path().join("one.log")), 1);
    assert_eq!(count_lines(&dir.path().join("two.log")), 2);
    let err = executor.run(&make(true), resume()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("nothing to resume: the last run ({}) passed", r1.run_id)
    );
    let summary = executor.ledger().run(r1.run_id).unwrap().unwrap();
    assert_eq!(summary.resumed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_at_once_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![Step::shell(
        "wait",
        Stage::Iac,
        "for i in $(seq 100); do [ -f go ] && exit 0; sleep 0.05; done",
    )]);
    let first = {
        let root = dir.path().to_path_buf();
        let p = p.clone();
        tokio::spawn(async move {
            Executor::new(&root)
                .unwrap()
                .run(&p, RunOptions::default())
                .await
        })
    };
    let ledger_dir = dir.path().join(".mlops/runs/1");
    while !ledger_dir.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = Executor::new(dir.path())
        .unwrap()
        .run(&p, RunOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("another mlops run is in progress"),
        "{err}"
    );
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(first.await.unwrap().unwrap().status, RunStatus::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_single_stage_run_runs_that_stage_and_rechecks_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let make = |fixed: bool, env_cmd: &str| {
        pipeline(vec![
            Step::shell("env", Stage::Iac, env_cmd.to_owned()),
            Step::shell(
                "test",
                Stage::Ci,
                if fixed {
                    "echo x >> test.log"
                } else {
                    "echo x >> test.log; exit 1"
                },
            ),
        ])
    };
    let executor = Executor::new(dir.path()).unwrap();
    executor
        .run(&make(false, "true"), RunOptions::default())
        .await
        .unwrap();
    let only_ci = only(Stage::Ci);
    let failed = executor.run(&make(false, "true"), only_ci).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);

    // Resume keeps the run's own selection and really runs the ci step.
    let resumed = executor.run(&make(true, "true"), resume()).await.unwrap();
    assert_eq!(resumed.run_id, failed.run_id);
    assert_eq!(resumed.status, RunStatus::Passed);
    assert_eq!(status(&resumed, "test"), StepStatus::Passed);
    assert_eq!(count_lines(&dir.path().join("test.log")), 3);

    // A resume is refused when an earlier stage's evidence no longer holds.
    let failed = executor
        .run(&make(false, "true"), only(Stage::Ci))
        .await
        .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    let err = executor
        .run(&make(true, "echo changed"), resume())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Refused {
                missing: Stage::Iac,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reruns_what_depends_on_a_rerun_step() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.csv"), "1\n").unwrap();
    let p = |last_ok: bool| {
        pipeline(vec![
            Step::shell(
                "features",
                Stage::Iac,
                "echo x >> features.log; cp data.csv features",
            )
            .inputs(["data.csv"])
            .outputs(["features"]),
            Step::shell(
                "model",
                Stage::Iac,
                "echo x >> model.log; cp features model",
            )
            .depends_on(["features"])
            .inputs(["features"])
            .outputs(["model"]),
            Step::shell("check", Stage::Ci, if last_ok { "true" } else { "exit 1" }),
        ])
    };
    let executor = Executor::new(dir.path()).unwrap();
    assert_eq!(
        executor
            .run(&p(false), RunOptions::default())
            .await
            .unwrap()
            .status,
        RunStatus::Failed
    );
    std::fs::write(dir.path().join("data.csv"), "2\n").unwrap();
    let r = executor.run(&p(true), resume()).await.unwrap();
    assert_eq!(r.status, RunStatus::Passed);
    assert_eq!(count_lines(&dir.path().join("features.log")), 2);
    assert_eq!(
        count_lines(&dir.path().join("model.log")),
        2,
        "model depends on the rerun features"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("model")).unwrap(),
        "2\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_stage_dependency_on_a_failed_step_is_gated_by_its_stage() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("build", Stage::Iac, "exit 2"),
        Step::shell("test", Stage::Ci, "true").depends_on(["build"]),
    ]);
    let report = run(dir.path(), &p, RunOptions::default()).await;
    assert_eq!(
        report.step("test").unwrap().reason.as_deref(),
        Some("stage `iac` did not pass: step `build` failed (exit status 2)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_since_runs_what_the_changes_reach_and_reuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::write(d.join("data/train.csv"), "a,b\n1,2\n").unwrap();
    std::fs::write(d.join("src/model.py"), "print(1)\n").unwrap();
    std::fs::write(d.join(".gitignore"), ".mlops/\nprepared.csv\n").unwrap();
    git(d, &["init", "-q"]);
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "init"]);
    let p = pipeline(vec![
        Step::shell("env", Stage::Iac, "true"),
        // Reads the data; writes what `train` reads.
        Step::shell("prepare", Stage::Ci, "cp data/train.csv prepared.csv")
            .inputs(["data/*.csv"])
            .outputs(["prepared.csv"]),
        Step::shell("train", Stage::Ci, "true").depends_on(["prepare"]),
        Step::shell("lint", Stage::Ci, "true").inputs(["src/**/*.py"]),
        // Reads what `prepare` writes, without naming it.
        Step::shell("deploy", Stage::Cd, "cat prepared.csv").inputs(["prepared.csv"]),
        Step::shell("announce", Stage::Cd, "true"),
    ]);
    let changed = |rev: &str| RunOptions {
        changed_since: Some(rev.to_owned()),
        ..RunOptions::default()
    };
    // Nothing recorded yet: every step runs, changes or not, so that each
    // stage has evidence.
    let first = run(d, &p, changed("HEAD")).await;
    assert_eq!(first.status, RunStatus::Passed);
    assert!(
        first.steps.iter().all(|s| s.status == StepStatus::Passed),
        "{first:?}"
    );

    // The data changes: prepare, what depends on it (train) and what reads
    // its output (deploy) run; the rest stand on run 1.
    std::fs::write(d.join("data/train.csv"), "a,b\n1,3\n").unwrap();
    let second = run(d, &p, changed("HEAD")).await;
    assert_eq!(second.status, RunStatus::Passed);
    // Steps without inputs always run: nothing says what they read.
    for (step, want) in [
        ("env", StepStatus::Passed),
        ("prepare", StepStatus::Passed),
        ("train", StepStatus::Passed),
        ("lint", StepStatus::Cached),
        ("deploy", StepStatus::Passed),
        ("announce", StepStatus::Passed),
    ] {
        assert_eq!(status(&second, step), want, "{step}: {second:?}");
    }
    assert_eq!(
        second.step("lint").unwrap().reason.as_deref(),
        Some("nothing it reads changed since HEAD; passed in run 1")
    );

    // A step whose definition has no passing record has nothing to stand
    // on: it runs, changed or not.
    let other = pipeline(vec![
        Step::shell("env", Stage::Iac, "true"),
        Step::shell("lint", Stage::Ci, "test -e src/model.py").inputs(["src/**/*.py"]),
    ]);
    let again = run(d, &other, changed("HEAD")).await;
    assert_eq!(status(&again, "lint"), StepStatus::Passed);

    // Bad revisions and places are errors, not runs.
    let err = Executor::new(d)
        .unwrap()
        .run(&p, changed("no-such-branch"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecError::ChangedSince(_))
            && err
                .to_string()
                .contains("`no-such-branch` is not a revision"),
        "{err}"
    );
    let outside = tempfile::tempdir().unwrap();
    let err = Executor::new(outside.path())
        .unwrap()
        .run(&p, changed("HEAD"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is not inside a git repository"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_is_recorded_with_the_final_status_and_found_again() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("env", Stage::Iac, "true"),
        Step::task("check", Stage::Ci, "check-v1", |ctx| async move {
            let earlier = ctx.recorded("score");
            ctx.record(
                "score",
                &serde_json::json!({ "attempt": ctx.attempt, "earlier": earlier }),
            );
            if ctx.attempt == 1 {
                return Err(StepFailure::new("first attempt fails"));
            }
            Ok(())
        })
        .retries(1)
        .retry_backoff(Duration::from_millis(1)),
    ]);
    let first = run(dir.path(), &p, RunOptions::default()).await;
    assert_eq!(first.status, RunStatus::Passed);
    let ledger = mlops_core::Ledger::open(dir.path()).unwrap();
    let summary = ledger.run(first.run_id).unwrap().unwrap();
    let check = summary.steps.iter().find(|s| s.name == "check").unwrap();
    assert_eq!(check.evidence.len(), 1);
    // The second attempt saw the first one's evidence and replaced it.
    assert_eq!(check.evidence[0].body["attempt"], 2);
    assert_eq!(check.evidence[0].body["earlier"]["attempt"], 1);
    let second = run(dir.path(), &p, RunOptions::default()).await;
    let found = ledger
        .latest_evidence("check", "score", second.run_id)
        .unwrap()
        .unwrap();
    assert_eq!(found.run_id, first.run_id);
    assert!(
        ledger
            .latest_evidence("check", "score", first.run_id)
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_an_in_process_step_runs_is_stopped_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(vec![
        Step::shell("env", Stage::Iac, "true"),
        Step::task("long", Stage::Ci, "long-v1", |ctx| async move {
            match ctx
                .run_command("echo $$ > pid; sleep 30 & echo $! > child; wait")
                .await
            {
                mlops_core::CommandEnd::Success => Ok(()),
                other => Err(StepFailure::new(format!("{other:?}"))),
            }
        })
        .timeout(Duration::from_millis(700)),
    ]);
    let report = run(
        dir.path(),
        &p,
        RunOptions {
            kill_grace: Duration::from_millis(200),
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(status(&report, "long"), StepStatus::TimedOut);
    let child: i32 = std::fs::read_to_string(dir.path().join("child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_gone(child).await,
        "the command's background child was killed"
    );
}

/// An in-process step's ledger calls run off the coordinator's thread. On a
/// runtime with one worker, as in the CLI, a step whose call blocks until
/// another step has run sees that step run and end meanwhile: were the
/// call made on the coordinator's thread, nothing else could be scheduled
/// and it would wait in vain.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_steps_ledger_call_leaves_the_coordinator_scheduling() {
    let dir = tempfile::tempdir().unwrap();
    let (ended, wait_for_it) = std::sync::mpsc::sync_channel::<()>(1);
    let wait_for_it = std::sync::Arc::new(std::sync::Mutex::new(Some(wait_for_it)));
    let p = pipeline(vec![
        Step::task("reads", Stage::Iac, "reads-v1", move |ctx| {
            let wait_for_it = wait_for_it.lock().unwrap().take();
            async move {
                let wait_for_it = wait_for_it.ok_or_else(|| StepFailure::new("ran twice"))?;
                let run_id = ctx.run_id;
                let seen = ctx
                    .ledger()
                    .call(move |ledger| {
                        let other_ended = wait_for_it.recv_timeout(Duration::from_secs(10)).is_ok();
                        Ok::<_, mlops_core::LedgerError>((other_ended, ledger.last_run_id()?))
                    })
                    .await
                    .map_err(|e| StepFailure::new(e.to_string()))?;
                if seen == (true, Some(run_id)) {
                    Ok(())
                } else {
                    Err(StepFailure::new(format!(
                        "(other step ended, last run) = {seen:?}"
                    )))
                }
            }
        }),
        Step::task("signals", Stage::Iac, "signals-v1", move |_ctx| {
            let ended = ended.clone();
            async move {
                let _ = ended.try_send(());
                Ok(())
            }
        }),
    ]);
    let report = run(dir.path(), &p, jobs(2)).await;
    assert_eq!(report.status, RunStatus::Passed, "{report:?}");
    assert_eq!(status(&report, "reads"), StepStatus::Passed);
}
