//! One attempt of an in-process step: its action polled in place, bounded
//! by a timeout and a cancellation token, with a panic caught as a failure.
//! Shell attempts are `crate::process`'s.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::kind::{StepAction, StepContext};
use crate::process::{AttemptEnd, deadline};

/// Runs one attempt of an in-process action.
pub(crate) async fn run_task(
    action: Arc<dyn StepAction>,
    ctx: StepContext,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    kill_grace: Duration,
) -> AttemptEnd {
    let attempt_token = ctx.cancel.clone();
    // Polled in place (no extra task: one less thread hand-off per step),
    // with panics caught as failures.
    let mut work = CatchUnwind(action.run(ctx));
    let end = tokio::select! {
        outcome = &mut work => match outcome {
            Ok(Ok(())) => AttemptEnd::Passed,
            Ok(Err(failure)) => AttemptEnd::Failed { exit_code: None, reason: failure.message },
            Err(payload) => AttemptEnd::Failed {
                exit_code: None,
                reason: format!("step panicked: {}", panic_message(payload.as_ref())),
            },
        },
        () = deadline(timeout) => AttemptEnd::TimedOut,
        () = cancel.cancelled() => AttemptEnd::Cancelled,
    };
    if matches!(end, AttemptEnd::TimedOut | AttemptEnd::Cancelled) {
        // Tell the step, then give it the grace period (and a little more)
        // to stop what it started — a command it runs gets SIGTERM, then
        // SIGKILL — before its future is dropped.
        attempt_token.cancel();
        let _ = tokio::time::timeout(kill_grace + Duration::from_millis(500), &mut work).await;
    }
    end
}

/// Turns a panic while polling the inner future into an `Err`.
struct CatchUnwind<F: ?Sized>(Pin<Box<F>>);

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}
