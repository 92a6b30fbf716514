//! The sample traffic an apm step sends through the gateway for its
//! window when no users do (the release kinds' `traffic` table).

use std::time::Duration;

use mlops_core::{StepContext, StepFailure};
use mlops_release::driver::DriverSettings;
use mlops_release::traffic::{Traffic, load_samples};
use tokio_util::sync::CancellationToken;

fn failure(e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(e.to_string())
}

/// Drive `traffic` at the gateway's `proxy` for `window`, bounded by its
/// rate times the window; the requests that got an outcome.
pub(crate) async fn drive(
    ctx: &StepContext,
    traffic: &Traffic,
    proxy: &str,
    window: Duration,
) -> Result<u64, StepFailure> {
    let samples = load_samples(ctx, &traffic.source).await?;
    let max = (traffic.rate * window.as_secs_f64()).ceil().max(1.0) as u64;
    let mut settings = DriverSettings::new(
        format!("{}{}", proxy.trim_end_matches('/'), traffic.path),
        traffic.rate,
        window,
        max,
    );
    settings.timeout = Duration::from_secs(10);
    let driver = settings.compile(samples).map_err(failure)?;
    let stop = CancellationToken::new();
    let watch = {
        let (cancel, stop) = (ctx.cancel.clone(), stop.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            stop.cancel();
        })
    };
    let run = driver.run(&stop).await;
    watch.abort();
    if ctx.cancel.is_cancelled() {
        return Err(failure("cancelled"));
    }
    ctx.log(format!(
        "sent {} requests to {} at {}/s over {:?}",
        run.report.requests, traffic.path, traffic.rate, window
    ));
    Ok(run.report.requests)
}
