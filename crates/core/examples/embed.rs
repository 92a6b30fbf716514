//! Another Rust tool embedding the mlops engine: it builds a pipeline in code
//! (a shell step and in-process steps), runs it in a scratch directory and
//! consumes the typed event stream.
//!
//! ```text
//! cargo run -p mlops-core --example embed
//! ```

use std::time::Duration;

use mlops_core::{Event, Executor, Pipeline, RunOptions, Stage, Step, StepFailure};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workdir = std::env::temp_dir().join(format!("mlops-embed-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;

    let pipeline = Pipeline::new(
        "embedded",
        vec![
            // Stage 1: the environment, as a shell command.
            Step::shell("environment", Stage::Iac, "python3 --version || true")
                .timeout(Duration::from_secs(30)),
            // Stage 2: work done in-process, with the step's context.
            Step::task("make-data", Stage::Ci, "make-data-v1", |ctx| async move {
                let rows: String = (0..100).map(|i| format!("{i},{}\n", i * i)).collect();
                std::fs::write(ctx.cwd.join("data.csv"), rows)
                    .map_err(|e| StepFailure::new(format!("data.csv: {e}")))?;
                ctx.log("wrote 100 rows");
                Ok(())
            }),
            Step::task("check-data", Stage::Ci, "check-data-v1", |ctx| async move {
                let text = std::fs::read_to_string(ctx.cwd.join("data.csv"))
                    .map_err(|e| StepFailure::new(format!("data.csv: {e}")))?;
                match text.lines().count() {
                    100 => Ok(()),
                    n => Err(StepFailure::new(format!(
                        "data.csv has {n} rows, expected 100"
                    ))),
                }
            })
            .depends_on(["make-data"])
            .inputs(["data.csv"]),
        ],
        None,
    )
    .map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;

    let mut executor = Executor::new(&workdir)?;
    let mut events = executor.subscribe();
    let printer = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::StepFinished {
                    step,
                    status,
                    duration_ms,
                    ..
                } => {
                    println!("{step:<12} {status:<8} {duration_ms} ms");
                }
                Event::RunFinished { run_id, status, .. } => println!("run {run_id}: {status}"),
                _ => {}
            }
        }
    });
    let report = executor.run(&pipeline, RunOptions::default()).await?;
    drop(executor);
    printer.await?;
    println!("ledger: {}", workdir.join(".mlops/ledger.db").display());
    std::fs::remove_dir_all(&workdir)?;
    if report.status != mlops_core::RunStatus::Passed {
        return Err(format!("run {} {:?}", report.run_id, report.status).into());
    }
    Ok(())
}
