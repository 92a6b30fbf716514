//! Replicas and the choices among them: least outstanding requests across
//! a variant's replicas in rotation, passive ejection with exponential
//! back-off, and the gateway's cheap random numbers.
//!
//! It owns a replica's live state (which survives reconfiguration when the
//! replica stays); it does not know about HTTP. Active health checks
//! (`health`) decide their verdicts elsewhere and record them here.
//!
//! One rule for leaving rotation, whatever the reason: a replica that
//! cannot be reached at all (its connection refused, by a request or a
//! probe) may leave even as the last one; any other failure — 5xx answers,
//! timeouts, failed health probes — never takes out the last replica in
//! rotation, since clients can provoke the first two and ejecting every
//! replica would answer 503 to everyone.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Uri;
use hyper::header::HeaderValue;

use super::health::ProbeState;
use super::metrics::Meter;
use super::upstream::{Pool, host_header};

/// One upstream of a variant, with its health and counters.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) url: String,
    pub(crate) uri: Uri,
    /// `Host` for requests that come without one: the URL's authority.
    pub(crate) host: Option<HeaderValue>,
    /// Its idle keep-alive connections.
    pub(crate) pool: Arc<Pool>,
    pub(crate) meter: Arc<Meter>,
    pub(crate) upstream_failures: AtomicU64,
    pub(crate) ejections: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Ejections in a row without a success since: the back-off exponent.
    streak: AtomicU32,
    /// Microseconds since `epoch` until which the replica is ejected.
    ejected_until: AtomicU64,
    epoch: Instant,
    /// Out of rotation because its health probes fail.
    probed_out: AtomicBool,
    /// The health checks' counters and verdict (the probe task writes it).
    pub(crate) probe: Mutex<ProbeState>,
}

/// How ejection behaves; from the current config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EjectPolicy {
    pub(crate) after: u32,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
}

impl EjectPolicy {
    /// How long the `streak`-th ejection in a row (from 0) lasts: the base,
    /// doubled each time, at most the maximum.
    pub(crate) fn backoff(&self, streak: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << streak.min(20))
            .min(self.max)
    }
}

impl Replica {
    pub(crate) fn new(url: String, uri: Uri, epoch: Instant) -> Self {
        Self {
            url,
            host: host_header(&uri),
            uri,
            pool: Arc::default(),
            meter: Arc::new(Meter::new()),
            upstream_failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            streak: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            epoch,
            probed_out: AtomicBool::new(false),
            probe: Mutex::default(),
        }
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub(crate) fn is_ejected(&self) -> bool {
        self.now_micros() < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Whether requests may go to it: neither ejected nor out for failing
    /// health probes.
    pub(crate) fn in_rotation(&self) -> bool {
        !self.probed_out.load(Ordering::Relaxed) && !self.is_ejected()
    }

    pub(crate) fn is_probed_out(&self) -> bool {
        self.probed_out.load(Ordering::Relaxed)
    }

    /// Out of rotation (or back in) by the health checks' verdict.
    pub(crate) fn set_probed_out(&self, out: bool) {
        self.probed_out.store(out, Ordering::Relaxed);
    }

    /// A response below 500 came back.
    pub(crate) fn success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.streak.store(0, Ordering::Relaxed);
    }

    /// A refused connection, a transport error, a timeout or a 5xx. Once
    /// the failures in a row reach the threshold (or at once when
    /// `unreachable`: the connection could not be made) the replica is
    /// ejected; after its back-off, one more failure ejects it again, for
    /// longer. Unless `unreachable`, the last replica in rotation
    /// (`others_healthy` false) is never ejected: 5xx answers and timeouts
    /// can be provoked by clients, and ejecting every replica would answer
    /// 503 to everyone.
    pub(crate) fn failure(&self, policy: EjectPolicy, unreachable: bool, others_healthy: bool) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if (failures < policy.after && !unreachable)
            || self.is_ejected()
            || (!unreachable && !others_healthy)
        {
            return;
        }
        let backoff = policy.backoff(self.streak.fetch_add(1, Ordering::Relaxed));
        let until = self
            .now_micros()
            .saturating_add(u64::try_from(backoff.as_micros()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }
}

/// The replica in rotation with the fewest requests outstanding, ties
/// broken at random, skipping `tried`. `None` when none is in rotation and
/// untried.
pub(crate) fn least_outstanding<'a>(
    replicas: &'a [Arc<Replica>],
    tried: &[usize],
    rng: &Rng,
) -> Option<(usize, &'a Arc<Replica>)> {
    let mut best: Option<(i64, usize)> = None;
    let mut ties = 0u64;
    for (i, r) in replicas.iter().enumerate() {
        if tried.contains(&i) || !r.in_rotation() {
            continue;
        }
        let load = r.meter.in_flight();
        match best {
            Some((b, _)) if load > b => {}
            Some((b, _)) if load == b => {
                // Reservoir sampling over the ties: each kept with 1/ties.
                ties += 1;
                if rng.below(ties) == 0 {
                    best = Some((load, i));
                }
            }
            _ => {
                best = Some((load, i));
                ties = 1;
            }
        }
    }
    best.map(|(_, i)| (i, &replicas[i]))
}

/// Whether a replica of the variant other than `index` is in rotation: a
/// failure that may not be the replica's alone (a 5xx, a timeout, a failed
/// health probe) never takes out the last one.
pub(crate) fn others_in_rotation(replicas: &[Arc<Replica>], index: usize) -> bool {
    replicas
        .iter()
        .enumerate()
        .any(|(i, r)| i != index && r.in_rotation())
}

/// SplitMix64: good enough for weights, tie-breaks and request ids (never
/// for secrets). Each thread draws from a sequence of its own, seeded once
/// from the shared counter: the request path touches no cache line another
/// core writes.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

thread_local! {
    /// This thread's SplitMix64 state; 0 until seeded.
    static THREAD_STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    pub(crate) fn next_u64(&self) -> u64 {
        THREAD_STATE.with(|state| {
            let mut s = state.get();
            if s == 0 {
                // A seed of its own, far from every other thread's.
                s = mix(self.0.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)) | 1;
            }
            s = s.wrapping_add(GOLDEN_GAMMA);
            state.set(s);
            mix(s)
        })
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift.
    pub(crate) fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The SplitMix64 finalizer: a bijection that scatters nearby inputs.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable hash of a sticky key: the same user lands on the same arm in
/// every process and release (FNV-1a, then mixed).
pub(crate) fn stable_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// A seed from the OS, falling back to the clock.
pub(crate) fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    if read_urandom(&mut buf).is_ok() {
        return u64::from_le_bytes(buf);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    mix(t.as_nanos() as u64 ^ u64::from(std::process::id()))
}

/// Fill `buf` from the kernel's random source.
pub(crate) fn read_urandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{EjectPolicy, stable_hash};

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = EjectPolicy {
            after: 3,
            base: Duration::from_millis(1_000),
            max: Duration::from_millis(30_000),
        };
        let seconds: Vec<u64> = (0..8).map(|s| policy.backoff(s).as_secs()).collect();
        assert_eq!(seconds, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_millis(30_000));
    }

    #[test]
    fn sticky_hash_is_stable_across_processes() {
        // Pinned (FNV-1a, then the SplitMix64 finalizer; computed
        // independently): a user must land on the same arm after a restart
        // or an upgrade.
        assert_eq!(stable_hash(b"user-1"), 0xf16d_8d44_0fbb_25d5);
        assert_ne!(stable_hash(b"user-1"), stable_hash(b"user-2"));
    }
}
