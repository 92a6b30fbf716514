//! Active health checks: one task per gateway probes every replica of
//! every variant each `interval`, and takes replicas whose probes fail out
//! of rotation until they pass again.
//!
//! It owns the probes, the verdict of a run of results ([`ProbeState`])
//! and which replicas the verdicts keep out ([`rotation`]); both are pure,
//! so the reference cases test them without a clock or a network. Passive
//! ejection (requests' own failures) is `balance`'s; the two meet in
//! [`Replica::in_rotation`] and follow one rule: only a replica that
//! cannot be reached at all may leave as the last one in rotation.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Version};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::balance::Replica;
use super::config::CompiledHealth;
use super::metrics::ReplicaHealth;
use super::upstream;
use super::{Active, Shared};

/// What one probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx within the timeout.
    Pass,
    /// Anything else; `unreachable` when no connection could be made.
    Fail { unreachable: bool },
}

/// A replica's probe results so far and the verdict they add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProbeState {
    pub(crate) health: ReplicaHealth,
    /// Passes in a row, failures in a row.
    passes: u32,
    failures: u32,
    /// The last probe could not connect.
    unreachable: bool,
    /// Every probe, by result.
    pub(crate) passed: u64,
    pub(crate) failed: u64,
}

impl ProbeState {
    /// One more probe result. A replica is unhealthy after
    /// `unhealthy_after` failures in a row, healthy again after
    /// `healthy_after` passes in a row; until its first verdict it is
    /// unchecked (and in rotation), and its first pass makes it healthy.
    pub(crate) fn record(&mut self, outcome: Outcome, unhealthy_after: u32, healthy_after: u32) {
        match outcome {
            Outcome::Pass => {
                self.passed += 1;
                self.passes = self.passes.saturating_add(1);
                self.failures = 0;
                self.unreachable = false;
                if self.health != ReplicaHealth::Unhealthy || self.passes >= healthy_after {
                    self.health = ReplicaHealth::Healthy;
                }
            }
            Outcome::Fail { unreachable } => {
                self.failed += 1;
                self.failures = self.failures.saturating_add(1);
                self.passes = 0;
                self.unreachable = unreachable;
                if self.failures >= unhealthy_after {
                    self.health = ReplicaHealth::Unhealthy;
                }
            }
        }
    }
}

/// One replica of a variant, as [`rotation`] sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Standing {
    pub(crate) state: ProbeState,
    /// Passively ejected now.
    pub(crate) ejected: bool,
    /// Out of rotation by its probes now.
    pub(crate) out: bool,
}

/// Which of a variant's replicas the health checks keep out of rotation:
/// every unhealthy one, except that the last replica in rotation stays
/// unless it cannot be reached (the rule passive ejection follows too).
/// Healthy replicas come back first, so that an unhealthy one kept as the
/// last leaves as soon as another can take its place.
pub(crate) fn rotation(replicas: &[Standing]) -> Vec<bool> {
    let mut out: Vec<bool> = replicas
        .iter()
        .map(|r| r.out && r.state.health == ReplicaHealth::Unhealthy)
        .collect();
    for i in 0..replicas.len() {
        let r = &replicas[i];
        if out[i] || r.state.health != ReplicaHealth::Unhealthy {
            continue;
        }
        let others = (0..replicas.len()).any(|j| j != i && !out[j] && !replicas[j].ejected);
        out[i] = r.state.unreachable || others;
    }
    out
}

/// Start the probe task of `shared`'s gateway unless it runs already. It
/// holds the gateway weakly and ends when the gateway is dropped.
pub(crate) fn ensure_running(shared: &Arc<Shared>) {
    let mut task = shared.prober.lock().unwrap_or_else(|e| e.into_inner());
    if task.as_ref().is_some_and(|t| !t.is_finished()) {
        return;
    }
    let weak = Arc::downgrade(shared);
    let changed = shared.health_changed.clone();
    *task = Some(tokio::spawn(run(weak, changed)));
}

/// Rounds of probes under the current config, one after another; a new
/// config (`changed`) starts a round at once.
async fn run(shared: Weak<Shared>, changed: Arc<Notify>) {
    loop {
        let active = match shared.upgrade() {
            Some(shared) => shared.active(),
            None => return,
        };
        let Some(check) = active.compiled.health.clone() else {
            drop(active);
            changed.notified().await;
            continue;
        };
        let started = Instant::now();
        let outcomes = probe_all(&active, &check).await;
        match shared.upgrade() {
            Some(shared) => apply(&shared, &active, &check, &outcomes),
            None => return,
        }
        drop(active);
        tokio::select! {
            () = tokio::time::sleep_until(started + check.interval) => {}
            () = changed.notified() => {}
        }
    }
}

/// Probe every replica of every variant at once: outcomes by variant, then
/// replica, in the config's order.
async fn probe_all(active: &Active, check: &CompiledHealth) -> Vec<Vec<Outcome>> {
    let mut outcomes: Vec<Vec<Outcome>> = active
        .variants
        .iter()
        .map(|v| vec![Outcome::Fail { unreachable: false }; v.replicas.len()])
        .collect();
    let mut probes = JoinSet::new();
    for (v, variant) in active.variants.iter().enumerate() {
        for (i, replica) in variant.replicas.iter().enumerate() {
            let (replica, check) = (replica.clone(), check.clone());
            probes.spawn(async move { (v, i, probe(&replica, &check).await) });
        }
    }
    while let Some(done) = probes.join_next().await {
        if let Ok((v, i, outcome)) = done {
            outcomes[v][i] = outcome;
        }
    }
    outcomes
}

/// `GET path` on a fresh connection to `replica`: passes on a 2xx head
/// within the timeout, connecting included.
async fn probe(replica: &Replica, check: &CompiledHealth) -> Outcome {
    let attempt = async {
        let mut conn = upstream::connect(&replica.uri).await?;
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = check.path.clone();
        *req.version_mut() = Version::HTTP_11;
        if let Some(host) = &replica.host {
            req.headers_mut().insert(header::HOST, host.clone());
        }
        req.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static("mlops-gateway-health"),
        );
        let response = conn.send(req).await?;
        Ok::<_, upstream::UpstreamError>(response.status())
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(Ok(status)) if status.is_success() => Outcome::Pass,
        Ok(Err(e)) if e.is_connect() => Outcome::Fail { unreachable: true },
        _ => Outcome::Fail { unreachable: false },
    }
}

/// Record a round's outcomes and move replicas in or out of rotation —
/// unless the config changed while probing (its replicas may be others;
/// the next round starts at once). Serialized with reconfiguration by the
/// state lock.
fn apply(shared: &Shared, active: &Arc<Active>, check: &CompiledHealth, outcomes: &[Vec<Outcome>]) {
    let _state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    if !Arc::ptr_eq(&shared.active(), active) {
        return;
    }
    for (variant, outcomes) in active.variants.iter().zip(outcomes) {
        let standings: Vec<Standing> = variant
            .replicas
            .iter()
            .zip(outcomes)
            .map(|(replica, &outcome)| {
                let mut state = replica.probe.lock().unwrap_or_else(|e| e.into_inner());
                state.record(outcome, check.unhealthy_after, check.healthy_after);
                Standing {
                    state: *state,
                    ejected: replica.is_ejected(),
                    out: replica.is_probed_out(),
                }
            })
            .collect();
        for (replica, out) in variant.replicas.iter().zip(rotation(&standings)) {
            replica.set_probed_out(out);
        }
    }
}

/// Forget every probe result: health checks were turned off.
pub(crate) fn reset(replica: &Replica) {
    *replica.probe.lock().unwrap_or_else(|e| e.into_inner()) = ProbeState::default();
    replica.set_probed_out(false);
}

#[cfg(test)]
mod tests {
    use super::{Outcome, ProbeState, Standing, rotation};
    use crate::gateway::metrics::ReplicaHealth::{self, Healthy, Unchecked, Unhealthy};

    const PASS: Outcome = Outcome::Pass;
    const FAIL: Outcome = Outcome::Fail { unreachable: false };
    const REFUSED: Outcome = Outcome::Fail { unreachable: true };

    /// The verdict after each of `outcomes`, with unhealthy-after 2 and
    /// healthy-after 3.
    fn verdicts(outcomes: &[Outcome]) -> Vec<ReplicaHealth> {
        let mut state = ProbeState::default();
        outcomes
            .iter()
            .map(|&o| {
                state.record(o, 2, 3);
                state.health
            })
            .collect()
    }

    #[test]
    fn verdicts_need_results_in_a_row() {
        assert_eq!(verdicts(&[PASS]), [Healthy]);
        assert_eq!(verdicts(&[FAIL, FAIL]), [Unchecked, Unhealthy]);
        assert_eq!(
            verdicts(&[PASS, FAIL, PASS, FAIL, FAIL]),
            [Healthy, Healthy, Healthy, Healthy, Unhealthy]
        );
        assert_eq!(
            verdicts(&[FAIL, REFUSED, PASS, PASS, FAIL, PASS, PASS, PASS]),
            [
                Unchecked, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy,
                Healthy
            ]
        );
        let mut state = ProbeState::default();
        for o in [PASS, FAIL, FAIL, PASS] {
            state.record(o, 2, 3);
        }
        assert_eq!((state.passed, state.failed), (2, 2));
    }

    /// Replicas as `(verdict, unreachable, ejected, out)`; what `rotation`
    /// keeps out.
    fn check(replicas: &[(ReplicaHealth, bool, bool, bool)], expected: &[bool]) {
        let standings: Vec<Standing> = replicas
            .iter()
            .map(|&(health, unreachable, ejected, out)| Standing {
                state: ProbeState {
                    health,
                    unreachable,
                    ..ProbeState::default()
                },
                ejected,
                out,
            })
            .collect();
        assert_eq!(rotation(&standings), expected, "for {replicas:?}");
    }

    #[test]
    fn unhealthy_replicas_leave_rotation_but_never_the_last_unless_unreachable() {
        // One unhealthy of two leaves; a healthy one comes back.
        check(
            &[
                (Unhealthy, false, false, false),
                (Healthy, false, false, false),
            ],
            &[true, false],
        );
        check(
            &[
                (Healthy, false, false, true),
                (Healthy, false, false, false),
            ],
            &[false, false],
        );
        // Both unhealthy: the first leaves, the second stays as the last.
        check(
            &[
                (Unhealthy, false, false, false),
                (Unhealthy, false, false, false),
            ],
            &[true, false],
        );
        // The last one in rotation stays, ejection of the other counted…
        check(
            &[
                (Unhealthy, false, false, false),
                (Healthy, false, true, false),
            ],
            &[false, false],
        );
        // …unless nothing answers there at all.
        check(&[(Unhealthy, true, false, false)], &[true]);
        check(&[(Unhealthy, false, false, false)], &[false]);
        // A replica kept as the last leaves once another is back.
        check(
            &[
                (Unhealthy, false, false, false),
                (Healthy, false, false, true),
            ],
            &[true, false],
        );
        // Out already and still unhealthy: stays out; unchecked: in.
        check(
            &[
                (Unhealthy, false, false, true),
                (Unchecked, false, false, false),
            ],
            &[true, false],
        );
    }
}
