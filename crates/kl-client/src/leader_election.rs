//! Leader election on a Lease, with client-go's semantics (`tools/leaderelection`), plus the
//! fencing token kube-lite adds.
//!
//! ## How it decides
//!
//! * The Lease (`coordination.k8s.io/v1`, namespace/name from the config) records
//!   holderIdentity, leaseDurationSeconds, acquireTime, renewTime and leaseTransitions. Every
//!   change is an optimistic-concurrency Update on the resourceVersion read (Create when the
//!   Lease does not exist), so two candidates can never both win the same version.
//! * **Only the local monotonic clock is trusted.** A candidate remembers the Lease record it
//!   last saw and *when it saw it change* (`observed_time`, a [`tokio::time::Instant`]). It may
//!   take over only once it has seen no change for the record's leaseDurationSeconds; the
//!   timestamps inside the Lease are written for humans and never read. Clock skew between
//!   masters is harmless; only a difference in clock *rate* would matter.
//! * An empty holderIdentity (a released Lease) may be taken at once.
//! * Taking over increments leaseTransitions; renewing keeps it and acquireTime.
//! * Candidates retry at jittered intervals so that standbys do not move in lockstep, but
//!   (deviation from client-go, whose `wait.JitterUntil` waits 1 to 1 + [`JITTER_FACTOR`] retry
//!   periods) a standby waits a random time between half a retry period and one retry period
//!   ([`STANDBY_JITTER`]), and never past the moment the record it observed expires on its own
//!   clock. So after a leader's `kill -9` a standby takes over within lease duration + retry
//!   period, and after a release within one retry period: the bounds kube-lite promises
//!   (client-go's jitter can add up to 2.4 retry periods to both). `JITTER_FACTOR` still sets
//!   client-go's validation rule for the renew deadline.
//! * The leader renews every retry period. Deviations from client-go, both stricter: the renew
//!   deadline counts from the last *successful* renewal (client-go counts from the start of a
//!   renew round, up to one retry period later), and a leader that observes another holder
//!   stops at once rather than at its deadline. Either way it stops before any standby may
//!   take over (renew deadline < lease duration).
//! * On shutdown ([`LeaderElectionConfig::release_on_cancel`], client-go's `ReleaseOnCancel`)
//!   the leader first waits for its leading work to finish, then writes an empty holder with
//!   leaseDurationSeconds 1, so a standby takes over within one (jittered) retry period.
//!
//! ## Fencing
//!
//! Each term hands the leading work a [`Leadership`] with a [`FencingToken`] (the Lease's
//! namespace, name, leaseTransitions and holder). Writes carry it (`Api::with_fencing`) and the
//! apiserver refuses them (`Fenced`) once the Lease has moved on: a leader that was paused past
//! its lease and wakes up cannot change anything, whatever its timers say.
//!
//! ## Observability
//!
//! `leader_election_master_status{name=<lease name>}` is 1 while leading ([`LeaderElector::register_metrics`]);
//! an Event (reason `LeaderElection`, message `<identity> became leader` / `stopped leading`,
//! involvedObject the Lease) is recorded on each transition, as upstream's resource lock does;
//! [`LeaderElector::check`] is client-go's `HealthzAdaptor` check.
//!
//! ```no_run
//! # async fn demo(client: kl_client::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kl_client::leader_election::{LeaderElectionConfig, LeaderElector, default_identity};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = LeaderElectionConfig::new("kube-system", "kube-scheduler", &default_identity())
//!     .lease_duration(Duration::from_secs(15))
//!     .renew_deadline(Duration::from_secs(10))
//!     .retry_period(Duration::from_secs(2))
//!     .component("kube-scheduler");
//! let elector = LeaderElector::new(client.clone(), config)?; // validates
//! let shutdown = CancellationToken::new();
//! let outcome = elector
//!     .run(shutdown.clone(), |lead| async move {
//!         // Work until lead.cancelled() fires; every write carries lead.token().
//!         lead.cancelled().await;
//!     })
//!     .await;
//! println!("{outcome:?}");
//! # Ok(()) }
//! ```
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kl_api::{FencingToken, Lease, LeaseSpec, ObjectMeta, ObjectReference, Resource};
use prometheus::{IntGaugeVec, Opts};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::Api;
use crate::client::Client;

/// client-go's `JitterFactor`: candidates wait retry period × (1 + up to this) between tries,
/// and the renew deadline must exceed retry period × this.
pub const JITTER_FACTOR: f64 = 1.2;

/// A standby waits between (1 − this) and 1 retry periods between tries.
pub const STANDBY_JITTER: f64 = 0.5;

/// How long after the observed record's expiry a standby tries, so that its try lands after
/// the expiry on its own clock.
const EXPIRY_MARGIN: Duration = Duration::from_millis(20);

/// How long past its lease a leader may go unrenewed before [`LeaderElector::check`] fails
/// (kube-controller-manager's and kube-scheduler's `NewLeaderHealthzAdaptor(20 * time.Second)`).
pub const HEALTHZ_TOLERANCE: Duration = Duration::from_secs(20);

/// A configuration client-go would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("leaseDuration must be greater than renewDeadline (lease duration {lease:?}, renew deadline {renew:?})")]
    LeaseNotAboveRenew { lease: Duration, renew: Duration },
    #[error("renewDeadline must be greater than retryPeriod*JitterFactor (renew deadline {renew:?}, retry period {retry:?} × {JITTER_FACTOR})")]
    RenewNotAboveRetry { renew: Duration, retry: Duration },
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("leaseDuration must be at least 1s: the Lease stores it in whole seconds (got {0:?})")]
    SubSecondLease(Duration),
    #[error("{0} must not be empty")]
    Empty(&'static str),
}

/// What to elect on and with which timings. Builder-style, defaults as upstream's components
/// (15 s / 10 s / 2 s, release on cancel):
///
/// ```
/// use std::time::Duration;
/// use kl_client::leader_election::LeaderElectionConfig;
/// let c = LeaderElectionConfig::new("kube-system", "kube-controller-manager", "host_1234");
/// assert_eq!(c.lease_duration, Duration::from_secs(15));
/// assert!(c.validate().is_ok());
/// let bad = c.clone().renew_deadline(Duration::from_secs(15));
/// assert_eq!(
///     bad.validate().unwrap_err().to_string(),
///     "leaseDuration must be greater than renewDeadline (lease duration 15s, renew deadline 15s)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    pub lease_namespace: String,
    pub lease_name: String,
    /// This candidate's holderIdentity (upstream: `hostname_uuid`, see [`default_identity`]).
    pub identity: String,
    /// How long a standby waits, after it last saw the Lease change, before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops leading.
    pub renew_deadline: Duration,
    /// How long candidates wait between tries (jittered for standbys).
    pub retry_period: Duration,
    /// Release the Lease (empty holder) when stopped while leading.
    pub release_on_cancel: bool,
    /// `source.component` of the leader-election Events (e.g. `kube-controller-manager`).
    pub component: String,
}

impl LeaderElectionConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElectionConfig {
            lease_namespace: namespace.to_string(),
            lease_name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            release_on_cancel: true,
            component: name.to_string(),
        }
    }

    pub fn lease_duration(mut self, d: Duration) -> Self {
        self.lease_duration = d;
        self
    }

    pub fn renew_deadline(mut self, d: Duration) -> Self {
        self.renew_deadline = d;
        self
    }

    pub fn retry_period(mut self, d: Duration) -> Self {
        self.retry_period = d;
        self
    }

    pub fn release_on_cancel(mut self, on: bool) -> Self {
        self.release_on_cancel = on;
        self
    }

    pub fn component(mut self, c: &str) -> Self {
        self.component = c.to_string();
        self
    }

    /// client-go's `NewLeaderElector` checks, in its order, with its wording.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError::LeaseNotAboveRenew {
                lease: self.lease_duration,
                renew: self.renew_deadline,
            });
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return Err(ConfigError::RenewNotAboveRetry {
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        if self.lease_duration.is_zero() {
            return Err(ConfigError::Zero("leaseDuration"));
        }
        if self.renew_deadline.is_zero() {
            return Err(ConfigError::Zero("renewDeadline"));
        }
        if self.retry_period.is_zero() {
            return Err(ConfigError::Zero("retryPeriod"));
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(ConfigError::SubSecondLease(self.lease_duration));
        }
        if self.lease_name.is_empty() {
            return Err(ConfigError::Empty("the lease name"));
        }
        if self.lease_namespace.is_empty() {
            return Err(ConfigError::Empty("the lease namespace"));
        }
        if self.identity.is_empty() {
            return Err(ConfigError::Empty("Lock identity"));
        }
        Ok(())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Upstream's identity: `<hostname>_<random uuid>`, unique per process even on one host.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}_{}", uuid_v4())
}

/// A random (version 4) UUID in its usual text form.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Kubernetes' MicroTime text (`2006-01-02T15:04:05.000000Z`), UTC.
pub fn micro_time(t: SystemTime) -> String {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let dt = time::OffsetDateTime::UNIX_EPOCH + d;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.microsecond()
    )
}

/// One term of leadership, handed to the leading work.
#[derive(Debug, Clone)]
pub struct Leadership {
    token: FencingToken,
    cancel: CancellationToken,
}

impl Leadership {
    /// The token every write of this term must carry.
    pub fn token(&self) -> &FencingToken {
        &self.token
    }

    /// Cancelled the moment this term ends (lost, or shutting down): stop all work.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Resolves when this term ends.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Why [`LeaderElector::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// `shutdown` fired (while standing by, or while leading: then the work was stopped and,
    /// with release_on_cancel, the Lease released).
    Shutdown,
    /// Leadership was lost (not renewed within the renew deadline, or another holder seen).
    /// The work was stopped. Upstream components exit here; callers may run again.
    Lost,
    /// The leading work returned by itself; the Lease was released if so configured.
    WorkFinished,
}

/// What this candidate last saw of the Lease, and when (on its own clock).
#[derive(Debug, Default)]
struct Observed {
    /// The Lease as last read or written (its resourceVersion is what the next update names).
    lease: Option<Lease>,
    /// When `lease.spec` last changed, as seen here.
    time: Option<Instant>,
}

struct Inner {
    config: LeaderElectionConfig,
    leases: Api<Lease>,
    events: crate::events::Recorder,
    observed: Mutex<Observed>,
    /// True from a successful acquire until the term ends.
    leading: AtomicBool,
    master_status: IntGaugeVec,
}

/// A candidate in one election. Cheap to clone (clones share state).
#[derive(Clone)]
pub struct LeaderElector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.inner.config)
            .field("leading", &self.is_leader())
            .finish()
    }
}

impl LeaderElector {
    /// Validates `config` (client-go's rules) and makes a candidate. Does no I/O.
    pub fn new(client: Client, config: LeaderElectionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let master_status = IntGaugeVec::new(
            Opts::new(
                "leader_election_master_status",
                "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease.",
            ),
            &["name"],
        )
        .expect("static metric");
        master_status
            .with_label_values(&[config.lease_name.as_str()])
            .set(0);
        Ok(LeaderElector {
            inner: Arc::new(Inner {
                leases: Api::namespaced(client.clone(), &config.lease_namespace),
                events: crate::events::Recorder::new(client, &config.component, ""),
                config,
                observed: Mutex::new(Observed::default()),
                leading: AtomicBool::new(false),
                master_status,
            }),
        })
    }

    pub fn config(&self) -> &LeaderElectionConfig {
        &self.inner.config
    }

    /// Registers `leader_election_master_status` in `registry`.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.inner.master_status.clone()))
    }

    /// Whether this candidate is leading now (a term is running).
    pub fn is_leader(&self) -> bool {
        self.inner.leading.load(Ordering::Acquire)
    }

    /// The holder this candidate last observed ("" when none or not yet seen).
    pub fn leader(&self) -> String {
        self.observed()
            .lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .map(|s| s.holder_identity.clone())
            .unwrap_or_default()
    }

    /// client-go's `HealthzAdaptor` check: an error when this candidate leads but has not
    /// renewed for lease duration + `max_tolerable_expired` (it is wedged and should have
    /// stopped). Standbys are always healthy.
    pub fn check(&self, max_tolerable_expired: Duration) -> Result<(), String> {
        if !self.is_leader() {
            return Ok(());
        }
        let since = self.observed().time.map(|t| t.elapsed());
        match since {
            Some(s) if s > self.inner.config.lease_duration + max_tolerable_expired => {
                Err(format!(
                    "failed election to renew leadership on lease {}",
                    self.inner.config.lease_name
                ))
            }
            _ => Ok(()),
        }
    }

    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.inner
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn observed_spec(&self) -> Option<LeaseSpec> {
        self.observed()
            .lease
            .as_ref()
            .map(|l| l.spec.clone().unwrap_or_default())
    }

    /// Records `lease` as seen now; the observation time moves only when its record changed
    /// (as client-go compares the raw record).
    fn set_observed(&self, lease: Lease, changed: bool) {
        let mut o = self.observed();
        if changed || o.time.is_none() {
            o.time = Some(Instant::now());
        }
        o.lease = Some(lease);
    }

    /// Whether the observed record holds: seen changed less than its leaseDurationSeconds ago.
    fn lease_valid(&self, now: Instant) -> bool {
        self.observed_expiry().is_some_and(|expiry| expiry > now)
    }

    fn is_holder(spec: Option<&LeaseSpec>, me: &str) -> bool {
        spec.is_some_and(|s| s.holder_identity == me)
    }

    /// One try at acquiring or renewing (client-go's `tryAcquireOrRenew`); true on success.
    pub async fn try_acquire_or_renew(&self) -> bool {
        let cfg = &self.inner.config;
        let me = cfg.identity.as_str();
        let now_text = micro_time(SystemTime::now());
        let record = |acquire_time: String, transitions: i32| LeaseSpec {
            holder_identity: me.to_string(),
            lease_duration_seconds: Some(cfg.lease_seconds()),
            acquire_time,
            renew_time: now_text.clone(),
            lease_transitions: Some(transitions),
        };

        // 1. Fast path: the leader updates the Lease it last wrote, assuming it is current.
        let observed = self.observed().lease.clone();
        if let Some(mut lease) = observed {
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity == me && self.lease_valid(Instant::now()) {
                lease.spec = Some(record(
                    spec.acquire_time.clone(),
                    spec.lease_transitions.unwrap_or(0),
                ));
                match self.inner.leases.update(lease).await {
                    Ok(written) => {
                        self.set_observed(written, true);
                        return true;
                    }
                    Err(e) => {
                        debug!(error = %e, "failed to update lock optimistically, falling back to slow path")
                    }
                }
            }
        }

        // 2. Read the Lease, or create it.
        let current = match self.inner.leases.get_opt(&cfg.lease_name).await {
            Err(e) => {
                warn!(lease = %self.describe(), error = %e, "error retrieving resource lock");
                return false;
            }
            Ok(None) => {
                let lease = Lease {
                    metadata: Some(ObjectMeta {
                        name: cfg.lease_name.clone(),
                        namespace: cfg.lease_namespace.clone(),
                        ..Default::default()
                    }),
                    spec: Some(record(now_text.clone(), 0)),
                    ..Default::default()
                };
                return match self.inner.leases.create(lease).await {
                    Ok(created) => {
                        self.set_observed(created, true);
                        true
                    }
                    Err(e) => {
                        warn!(lease = %self.describe(), error = %e, "error initially creating leader election record");
                        false
                    }
                };
            }
            Ok(Some(l)) => l,
        };

        // 3. What changed since we last looked, and whether someone else holds it.
        let spec = current.spec.clone().unwrap_or_default();
        let changed = self.observed_spec().as_ref() != Some(&spec);
        self.set_observed(current.clone(), changed);
        if !spec.holder_identity.is_empty()
            && self.lease_valid(Instant::now())
            && spec.holder_identity != me
        {
            debug!(holder = %spec.holder_identity, "lock is held and has not yet expired");
            return false;
        }

        // 4. Take it over, or renew it (slow path).
        let mut next = current;
        next.spec = Some(if Self::is_holder(Some(&spec), me) {
            record(
                spec.acquire_time.clone(),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            record(now_text.clone(), spec.lease_transitions.unwrap_or(0) + 1)
        });
        match self.inner.leases.update(next).await {
            Ok(written) => {
                self.set_observed(written, true);
                true
            }
            Err(e) => {
                debug!(lease = %self.describe(), error = %e, "failed to update lock");
                false
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}/{}",
            self.inner.config.lease_namespace, self.inner.config.lease_name
        )
    }

    /// The fencing token of the term that the last observed record describes.
    fn fencing_token(&self) -> FencingToken {
        let spec = self.observed_spec().unwrap_or_default();
        FencingToken {
            lease_namespace: self.inner.config.lease_namespace.clone(),
            lease_name: self.inner.config.lease_name.clone(),
            lease_transitions: spec.lease_transitions.unwrap_or(0),
            holder_identity: spec.holder_identity,
        }
    }

    /// A standby's wait before its next try: retry period × (1 − [`STANDBY_JITTER`], 1], cut
    /// short to just after the observed record expires (on this process's clock) when that
    /// comes sooner. See the module docs for why this differs from client-go.
    fn jittered(&self) -> Duration {
        let rp = self.inner.config.retry_period;
        let base = rp.mul_f64(1.0 - rand::thread_rng().gen_range(0.0..STANDBY_JITTER));
        match self.observed_expiry() {
            Some(expiry) => {
                let now = Instant::now();
                if expiry > now {
                    base.min(expiry - now + EXPIRY_MARGIN)
                } else {
                    base
                }
            }
            None => base,
        }
    }

    /// When the observed record expires: seen changed + its leaseDurationSeconds.
    fn observed_expiry(&self) -> Option<Instant> {
        let o = self.observed();
        let (Some(lease), Some(t)) = (&o.lease, o.time) else {
            return None;
        };
        let secs = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(0)
            .max(0) as u64;
        Some(t + Duration::from_secs(secs))
    }

    /// Stands for election until leading, then runs `lead` while renewing. Returns when
    /// `shutdown` fires, leadership is lost, or `lead` returns; in every case `lead` has
    /// finished by then (it is told to stop through [`Leadership::cancelled`], and awaited).
    /// Safe to call again after it returns (a fresh term, a fresh token).
    pub async fn run<F, Fut>(&self, shutdown: CancellationToken, lead: F) -> RunOutcome
    where
        F: FnOnce(Leadership) -> Fut,
        Fut: Future<Output = ()>,
    {
        let desc = self.describe();
        info!(lease = %desc, identity = %self.inner.config.identity, "attempting to acquire leader lease");
        // Acquire: try, then wait a jittered retry period, until it works.
        loop {
            if shutdown.is_cancelled() {
                return RunOutcome::Shutdown;
            }
            let ok = tokio::select! {
                _ = shutdown.cancelled() => return RunOutcome::Shutdown,
                ok = self.try_acquire_or_renew() => ok,
            };
            if ok {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return RunOutcome::Shutdown,
                _ = tokio::time::sleep(self.jittered()) => {}
            }
        }
        let acquired_at = Instant::now();
        let token = self.fencing_token();
        self.inner.leading.store(true, Ordering::Release);
        self.inner
            .master_status
            .with_label_values(&[self.inner.config.lease_name.as_str()])
            .set(1);
        info!(lease = %desc, transitions = token.lease_transitions, "successfully acquired lease");
        self.record_event("became leader").await;

        let cancel = CancellationToken::new();
        let work = lead(Leadership {
            token,
            cancel: cancel.clone(),
        });
        tokio::pin!(work);
        let outcome = tokio::select! {
            o = self.renew(acquired_at, &shutdown) => o,
            _ = &mut work => RunOutcome::WorkFinished,
        };
        // Stop the work before anything else: no write of this term after this point, except
        // what is already in flight (and fencing refuses those once another term starts).
        cancel.cancel();
        self.inner.leading.store(false, Ordering::Release);
        self.inner
            .master_status
            .with_label_values(&[self.inner.config.lease_name.as_str()])
            .set(0);
        match outcome {
            RunOutcome::Lost => warn!(lease = %desc, "leader election lost"),
            _ => info!(lease = %desc, ?outcome, "stopping leading"),
        }
        if outcome != RunOutcome::WorkFinished {
            work.await;
        }
        if outcome != RunOutcome::Lost && self.inner.config.release_on_cancel {
            self.release().await;
        }
        self.record_event("stopped leading").await;
        outcome
    }

    /// Renews every retry period; returns Lost when no renewal succeeded within the renew
    /// deadline of the last one (or another holder was seen), Shutdown when asked to stop.
    async fn renew(&self, acquired_at: Instant, shutdown: &CancellationToken) -> RunOutcome {
        let cfg = &self.inner.config;
        let mut last_ok = acquired_at;
        loop {
            let deadline = last_ok + cfg.renew_deadline;
            tokio::select! {
                _ = shutdown.cancelled() => return RunOutcome::Shutdown,
                _ = tokio::time::sleep_until(deadline) => return RunOutcome::Lost,
                _ = tokio::time::sleep(cfg.retry_period) => {}
            }
            // A renew round: try now, then every retry period, until the deadline.
            loop {
                let attempt = tokio::select! {
                    _ = shutdown.cancelled() => return RunOutcome::Shutdown,
                    r = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()) => r,
                };
                match attempt {
                    Err(_) => return RunOutcome::Lost,
                    Ok(true) if Instant::now() < deadline => {
                        last_ok = Instant::now();
                        break;
                    }
                    Ok(true) => return RunOutcome::Lost,
                    Ok(false) => {
                        if !Self::is_holder(self.observed_spec().as_ref(), &cfg.identity) {
                            return RunOutcome::Lost;
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return RunOutcome::Shutdown,
                    _ = tokio::time::sleep_until(deadline) => return RunOutcome::Lost,
                    _ = tokio::time::sleep(cfg.retry_period) => {}
                }
            }
        }
    }

    /// Gives the Lease up (client-go's `release`): empty holder, leaseDurationSeconds 1,
    /// transitions kept. Only if we still hold it; bounded by the renew deadline.
    pub async fn release(&self) -> bool {
        let cfg = &self.inner.config;
        let attempt = async {
            for _ in 0..3 {
                let lease = match self.observed().lease.clone() {
                    Some(l) => l,
                    None => return false,
                };
                let spec = lease.spec.clone().unwrap_or_default();
                if spec.holder_identity != cfg.identity {
                    return true;
                }
                let now = micro_time(SystemTime::now());
                let mut next = lease;
                next.spec = Some(LeaseSpec {
                    holder_identity: String::new(),
                    lease_duration_seconds: Some(1),
                    acquire_time: now.clone(),
                    renew_time: now,
                    lease_transitions: spec.lease_transitions,
                });
                match self.inner.leases.update(next).await {
                    Ok(written) => {
                        self.set_observed(written, true);
                        info!(lease = %self.describe(), "released leader lease");
                        return true;
                    }
                    Err(e) if e.is_conflict() => match self.inner.leases.get(&cfg.lease_name).await
                    {
                        Ok(l) => self.set_observed(l, true),
                        Err(_) => return false,
                    },
                    Err(e) => {
                        warn!(lease = %self.describe(), error = %e, "failed to release lock");
                        return false;
                    }
                }
            }
            false
        };
        tokio::time::timeout(cfg.renew_deadline, attempt)
            .await
            .unwrap_or(false)
    }

    /// Records a `LeaderElection` Event on the Lease, as upstream's resource lock does. Best
    /// effort and bounded: an Event that cannot be written is only logged.
    async fn record_event(&self, what: &str) {
        let cfg = &self.inner.config;
        let lease = self.observed().lease.clone().unwrap_or_default();
        let meta = lease.metadata.clone().unwrap_or_default();
        let about = ObjectReference {
            kind: "Lease".into(),
            namespace: cfg.lease_namespace.clone(),
            name: cfg.lease_name.clone(),
            uid: meta.uid.clone(),
            api_version: Lease::KIND.api_version().into(),
            resource_version: meta.resource_version.clone(),
            field_path: String::new(),
        };
        self.inner
            .events
            .record(
                &about,
                "Normal",
                "LeaderElection",
                &format!("{} {what}", cfg.identity),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(lease: u64, renew: u64, retry_ms: u64) -> LeaderElectionConfig {
        LeaderElectionConfig::new("kube-system", "x", "me")
            .lease_duration(Duration::from_secs(lease))
            .renew_deadline(Duration::from_secs(renew))
            .retry_period(Duration::from_millis(retry_ms))
    }

    #[test]
    fn client_go_validation_rules() {
        assert!(cfg(15, 10, 2000).validate().is_ok());
        assert!(cfg(4, 3, 500).validate().is_ok());
        assert!(matches!(
            cfg(10, 10, 2000).validate(),
            Err(ConfigError::LeaseNotAboveRenew { .. })
        ));
        assert!(matches!(
            cfg(10, 12, 2000).validate(),
            Err(ConfigError::LeaseNotAboveRenew { .. })
        ));
        // 1.2 × 2.5 s = 3 s: the renew deadline must exceed it.
        let e = cfg(15, 3, 2500).validate().unwrap_err();
        assert!(matches!(e, ConfigError::RenewNotAboveRetry { .. }));
        assert!(e
            .to_string()
            .contains("renewDeadline must be greater than retryPeriod*JitterFactor"));
        assert_eq!(
            cfg(15, 10, 0).validate(),
            Err(ConfigError::Zero("retryPeriod"))
        );
        let mut c = cfg(15, 10, 2000);
        c.identity.clear();
        assert!(c.validate().is_err());
    }

    /// Components spawn the election on the runtime: its future must be Send.
    #[allow(dead_code, unreachable_code, clippy::diverging_sub_expression)]
    fn run_is_send(e: LeaderElector) {
        fn is_send<T: Send>(_: T) {}
        is_send(e.run(CancellationToken::new(), |lead| async move {
            lead.cancelled().await
        }));
    }

    #[test]
    fn identities_and_times() {
        let id = default_identity();
        let (host, uuid) = id.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert_ne!(default_identity(), id);
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(micro_time(t), "2023-11-14T22:13:20.123456Z");
        assert_eq!(crate::events::seconds_time(t), "2023-11-14T22:13:20Z");
    }
}
