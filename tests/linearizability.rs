//! Linearizability of the store under faults, in the manner of Jepsen's etcd test.
//!
//! A 3-member cluster of the real binary takes put, get and compare-and-swap from concurrent
//! clients on a few keys while a nemesis kills (SIGKILL), pauses (SIGSTOP) or partitions one
//! member at a time, the leader included. A partition cuts the member's peer links both ways
//! (every member's peer traffic goes through a proxy the test controls, `testkit::proxy`) while
//! its clients still reach it: the minority member must not commit, and the majority must
//! elect a leader among itself (the nemesis waits for that) and go on. Every operation is recorded with its invocation and response
//! times and its outcome; a request that timed out or failed in transit is *indeterminate* (it
//! may have taken effect, at any later time, or never). Afterwards the cluster is healed and:
//!
//! * each key's history is checked with `kl-lincheck` (a register with put, get and CAS);
//! * revisions respect real time across keys: a write that finished before another began has
//!   the lower revision, and a read sees at least every revision finished before it began;
//! * a watch on every key, opened from revision 1 before the run and re-opened from the last
//!   revision it saw + 1 whenever it broke, delivered every revision once, in order, each the
//!   write that revision acknowledged, ending in the state the final read saw;
//! * after all three members are killed with SIGKILL at once and restarted, every key reads
//!   what it read before (or a later indeterminate write), and those reads join the histories;
//! * keys attached to short leases (granted during the run, never kept alive) are there when
//!   read before their TTL has passed, and gone, each with its delete event, once the healed
//!   cluster has had the time to expire them.
//!
//! The nemesis runs for `KL_FAULTS_DURATION` seconds (default 20); `scripts/faults` runs long
//! ones. `KL_FAULTS_SEED` replays a run's choices (the schedule of faults and operations, not
//! the timing). `KL_FAULTS_ONLY=partition` (or `kill`, `SIGSTOP`, comma-separated) limits the
//! nemesis to the fault kinds whose names contain one of the words. `KL_FAULTS_SERIALIZABLE_READS=1` checks the check: the clients' gets become
//! serializable (served from the member's own state, stale when it lags), and the run must then
//! fail. The test prints one summary block, which `scripts/faults` shows.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{kv_key, kv_value, SETTLE};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use kl_lincheck::{Limits, Operation, Register, RegisterOp, RegisterRet, Report};
use testkit::{grpc::status_of, proxy::ProxyStats, EtcdCluster, EtcdOpts};

type Op = Operation<RegisterOp<String>, RegisterRet<String>>;

const MEMBERS: usize = 3;
/// Clients 0..3 talk to member 0, 1, 2 only; the others to all members.
const CLIENTS: usize = 5;
/// Keys in use at a time: few, so that clients contend.
const KEYS: u64 = 3;
/// Every key is replaced by a fresh one after this long, so that no key's history grows
/// beyond what the checker searches quickly (Jepsen's etcd test does the same).
const KEY_LIFETIME: Duration = Duration::from_secs(10);
/// The deadline a client gives each request (etcd's gRPC timeout); the test gives it 1 s more.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const HARD_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed request a client waits this long, so a dead member does not turn into
/// hundreds of failed requests.
const BACKOFF: Duration = Duration::from_millis(200);
/// Nemesis phase when `KL_FAULTS_DURATION` is not set.
const DEFAULT_DURATION: Duration = Duration::from_secs(20);
/// Fewer completed operations than this and the run proves nothing.
const MIN_OK: usize = 300;
/// A watch that delivers nothing for this long is re-opened on the next member.
const WATCH_IDLE: Duration = Duration::from_secs(3);
const PREFIX: &str = "/lin/";
/// Keys attached to leases.
const LEASE_PREFIX: &str = "/lease/";
/// Their leases' TTL, in seconds.
const LEASE_TTL: i64 = 3;
/// How long the healed cluster may take to expire every lease: the TTL, extended by up to
/// an election timeout on each leader change (etcd's Promote), plus a few elections.
const LEASE_GRACE: Duration = Duration::from_secs(15);
/// The client id of the final reads in the histories (before and after the full restart).
const FINAL_BEFORE: u64 = 100;
const FINAL_AFTER: u64 = 101;
/// How many faults the summary lists one by one.
const TIMELINE_SHOWN: usize = 12;

// ---------------------------------------------------------------------------------------------
// Small helpers: the clock, a seeded generator, the run's length.

/// Nanoseconds since the start of the run, on one monotonic clock for every client.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// SplitMix64: enough randomness for schedules, replayable from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn faults_duration() -> Duration {
    std::env::var("KL_FAULTS_DURATION")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(DEFAULT_DURATION, Duration::from_secs)
}

fn seed() -> u64 {
    std::env::var("KL_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Tasks that must not outlive the test body, whichever way it ends: aborted when dropped.
struct Tasks<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Tasks<T> {
    /// Waits for each, in order, bounded.
    async fn join(mut self, bound: Duration, what: &str) -> anyhow::Result<Vec<T>> {
        let mut out = Vec::new();
        for t in &mut self.0 {
            let r = tokio::time::timeout(bound, t)
                .await
                .map_err(|_| anyhow::anyhow!("{what} did not finish within {bound:?}"))?;
            out.push(r?);
        }
        Ok(out)
    }
}

impl<T> Drop for Tasks<T> {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The clients.

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Answered (a compare-and-swap that did not swap included).
    Ok,
    /// Known not to have taken effect: a read that failed, or a request whose connection was
    /// never made.
    Failed,
    /// Unknown: timed out, or failed after it may have reached the server.
    Indeterminate,
}

/// One operation as recorded, with what the checks beyond linearizability need.
#[derive(Clone, Debug)]
struct Record {
    key: String,
    op: Op,
    fate: Fate,
    /// The revision in the response header: the write's own revision for a put or a swap, the
    /// store's revision at the read for a get or a failed comparison.
    rev: Option<i64>,
}

#[derive(Default)]
struct ClientLog {
    records: Vec<Record>,
    /// Error messages seen, with counts, for the summary.
    errors: BTreeMap<String, usize>,
}

/// Whether an error means the request never left the client: the connection could not be
/// made. Anything else that failed may have reached the server.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = match status_of(e) {
        Some(s) => s.message().to_string(),
        None => e.to_string(),
    };
    text.contains("tcp connect error") || text.contains("Connection refused")
}

/// A short name for an error, for counting.
fn error_kind(e: &etcd_client::Error) -> String {
    match status_of(e) {
        Some(s) => format!("{:?}: {}", s.code(), s.message()),
        None => e.to_string(),
    }
}

async fn run_client(
    id: u64,
    mut cl: Client,
    clock: Clock,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) -> ClientLog {
    let mut log = ClientLog::default();
    let serializable = std::env::var_os("KL_FAULTS_SERIALIZABLE_READS").is_some_and(|v| v == "1");
    // The last value this client saw per key: what its compare-and-swaps expect.
    let mut known: HashMap<String, Option<String>> = HashMap::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let generation = clock.now() / KEY_LIFETIME.as_nanos() as u64;
        let key = format!("{PREFIX}{generation:04}/k{}", rng.below(KEYS));
        seq += 1;
        let value = format!("c{id}-{seq}");
        let dice = rng.below(10);
        let call = clock.now();
        let (input, result) = if dice < 4 {
            let opts = serializable.then(|| GetOptions::new().with_serializable());
            let r = tokio::time::timeout(HARD_TIMEOUT, cl.get(key.as_str(), opts)).await;
            let r = r.map(|r| {
                r.map(|g| {
                    let v = g.kvs().first().map(kv_value);
                    (RegisterRet::Get(v), g.header().map(|h| h.revision()))
                })
            });
            (RegisterOp::Get, r)
        } else if dice < 7 {
            let r = tokio::time::timeout(HARD_TIMEOUT, cl.put(key.as_str(), value.as_str(), None))
                .await;
            let r = r.map(|r| r.map(|p| (RegisterRet::Put, p.header().map(|h| h.revision()))));
            (RegisterOp::Put(value.clone()), r)
        } else {
            let expected = match known.get(&key) {
                Some(v) if rng.below(5) > 0 => v.clone(),
                _ => None,
            };
            let cmp = match &expected {
                Some(v) => Compare::value(key.as_str(), CompareOp::Equal, v.as_str()),
                None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            };
            let txn =
                Txn::new()
                    .when([cmp])
                    .and_then([TxnOp::put(key.as_str(), value.as_str(), None)]);
            let r = tokio::time::timeout(HARD_TIMEOUT, cl.txn(txn)).await;
            let r = r.map(|r| {
                r.map(|t| {
                    (
                        RegisterRet::Cas(t.succeeded()),
                        t.header().map(|h| h.revision()),
                    )
                })
            });
            let input = RegisterOp::Cas {
                expected,
                new: value.clone(),
            };
            (input, r)
        };
        let ret = clock.now();
        let read = matches!(input, RegisterOp::Get);
        let (op, fate, rev) = match result {
            Ok(Ok((output, rev))) => {
                match &output {
                    RegisterRet::Get(v) => {
                        known.insert(key.clone(), v.clone());
                    }
                    RegisterRet::Put | RegisterRet::Cas(true) => {
                        known.insert(key.clone(), Some(value.clone()));
                    }
                    RegisterRet::Cas(false) => {}
                }
                let op = Operation::returned(id, call, input, ret, output);
                (op, Fate::Ok, rev)
            }
            Ok(Err(e)) => {
                *log.errors.entry(error_kind(&e)).or_default() += 1;
                let fate = if read || never_sent(&e) {
                    Fate::Failed
                } else {
                    Fate::Indeterminate
                };
                (Operation::indeterminate(id, call, input), fate, None)
            }
            Err(_) => {
                *log.errors
                    .entry(format!("no answer within {HARD_TIMEOUT:?}"))
                    .or_default() += 1;
                let fate = if read {
                    Fate::Failed
                } else {
                    Fate::Indeterminate
                };
                (Operation::indeterminate(id, call, input), fate, None)
            }
        };
        log.records.push(Record { key, op, fate, rev });
        if fate != Fate::Ok {
            tokio::time::sleep(BACKOFF).await;
        }
    }
    log
}

// ---------------------------------------------------------------------------------------------
// Leases.

/// One lease key: when its lease was asked for, when its put was acknowledged, and the reads
/// of it while its TTL could not have run out yet.
#[derive(Debug)]
struct LeaseRecord {
    key: String,
    grant_call: u64,
    /// `None`: the put failed or timed out, the key may or may not exist.
    put_ret: Option<u64>,
    /// (call, ret, whether the key was there).
    reads: Vec<(u64, u64, bool)>,
}

/// Grants a lease of [`LEASE_TTL`] (never kept alive), attaches a fresh key to it, reads the
/// key now and then until just past the TTL, and starts over.
async fn run_leases(
    mut cl: Client,
    clock: Clock,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) -> Vec<LeaseRecord> {
    let ttl = Duration::from_secs(LEASE_TTL as u64).as_nanos() as u64;
    let mut out = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{LEASE_PREFIX}{n:04}");
        let grant_call = clock.now();
        let lease = match tokio::time::timeout(HARD_TIMEOUT, cl.lease_grant(LEASE_TTL, None)).await
        {
            Ok(Ok(l)) => l.id(),
            _ => {
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let put = cl.put(key.as_str(), "v", Some(PutOptions::new().with_lease(lease)));
        let put_ret = match tokio::time::timeout(HARD_TIMEOUT, put).await {
            Ok(Ok(_)) => Some(clock.now()),
            _ => None,
        };
        let mut reads = Vec::new();
        while put_ret.is_some() && clock.now() < grant_call + ttl && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(rng.millis(100, 600)).await;
            let call = clock.now();
            if let Ok(Ok(r)) = tokio::time::timeout(HARD_TIMEOUT, cl.get(key.as_str(), None)).await
            {
                reads.push((call, clock.now(), !r.kvs().is_empty()));
            }
        }
        out.push(LeaseRecord {
            key,
            grant_call,
            put_ret,
            reads,
        });
    }
    out
}

/// A lease key read before its TTL could have run out must be there.
fn check_leases(leases: &[LeaseRecord]) -> Vec<String> {
    let ttl = Duration::from_secs(LEASE_TTL as u64).as_nanos() as u64;
    let mut anomalies = Vec::new();
    for l in leases {
        let Some(put_ret) = l.put_ret else { continue };
        for &(call, ret, present) in &l.reads {
            // Began after the put was acknowledged, ended before the lease could expire.
            if call > put_ret && ret < l.grant_call + ttl && !present {
                anomalies.push(format!(
                    "lease: {} was gone at {:.3}s..{:.3}s, before its {LEASE_TTL}s lease (asked \
                     for at {:.3}s) could have expired",
                    l.key,
                    call as f64 / 1e9,
                    ret as f64 / 1e9,
                    l.grant_call as f64 / 1e9
                ));
            }
        }
    }
    anomalies
}

/// Waits until no lease key is left; returns how long that took.
async fn wait_leases_gone(urls: &[String], options: &ConnectOptions) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let cl = Client::connect(urls.to_vec(), Some(options.clone())).await?;
    testkit::wait_until(
        "every lease key to expire",
        LEASE_GRACE,
        Duration::from_millis(200),
        || {
            let mut cl = cl.clone();
            async move {
                let opts = GetOptions::new().with_prefix().with_count_only();
                let r =
                    tokio::time::timeout(HARD_TIMEOUT, cl.get(LEASE_PREFIX, Some(opts))).await??;
                Ok((r.count() == 0).then_some(()))
            }
        },
    )
    .await?;
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------------------------
// The watcher.

#[derive(Default)]
struct WatchLog {
    /// (revision, key, value; `None` for a delete), in the order delivered.
    events: Vec<(i64, String, Option<String>)>,
    /// How many times the watch was (re)opened.
    opened: usize,
    /// Anything a watch must never do (a compacted or cancelled watch).
    problems: Vec<String>,
}

/// Watches every key (the cluster is this test's own) from revision 1 until it has seen
/// `until` (sent once the run is over), re-opening on the next member from the last revision
/// seen + 1 whenever the stream breaks or stays silent for [`WATCH_IDLE`].
async fn run_watcher(
    urls: Vec<String>,
    options: ConnectOptions,
    mut until: tokio::sync::watch::Receiver<Option<i64>>,
) -> WatchLog {
    let mut log = WatchLog::default();
    let mut last = 0i64;
    let mut member = 0usize;
    loop {
        if until.borrow().is_some_and(|target| last >= target) {
            return log;
        }
        let url = urls[member % urls.len()].clone();
        member += 1;
        let opened = async {
            let mut cl = Client::connect([url], Some(options.clone())).await?;
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(last + 1);
            cl.watch("/", Some(opts)).await
        };
        let mut stream = match tokio::time::timeout(HARD_TIMEOUT, opened).await {
            Ok(Ok(s)) => s,
            _ => {
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        log.opened += 1;
        loop {
            if until.borrow().is_some_and(|target| last >= target) {
                return log;
            }
            let msg = tokio::select! {
                m = tokio::time::timeout(WATCH_IDLE, stream.message()) => m,
                // Wake up when the target arrives, to check it.
                changed = until.changed() => match changed {
                    Ok(()) => continue,
                    // The test is gone.
                    Err(_) => return log,
                },
            };
            let resp = match msg {
                Ok(Ok(Some(resp))) => resp,
                // Broken, ended, or silent: re-open elsewhere.
                _ => break,
            };
            if resp.canceled() || resp.compact_revision() != 0 {
                log.problems.push(format!(
                    "the watch from revision {} was cancelled (compact revision {}, reason {:?})",
                    last + 1,
                    resp.compact_revision(),
                    resp.cancel_reason()
                ));
                break;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let value = match ev.event_type() {
                    EventType::Put => Some(kv_value(kv)),
                    EventType::Delete => None,
                };
                log.events.push((kv.mod_revision(), kv_key(kv), value));
                last = last.max(kv.mod_revision());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The nemesis.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
    PartitionLeader,
    PartitionFollower,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::KillLeader,
        Fault::KillFollower,
        Fault::PauseLeader,
        Fault::PauseFollower,
        Fault::PartitionLeader,
        Fault::PartitionFollower,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill -9 leader",
            Fault::KillFollower => "kill -9 follower",
            Fault::PauseLeader => "SIGSTOP leader",
            Fault::PauseFollower => "SIGSTOP follower",
            Fault::PartitionLeader => "partition leader",
            Fault::PartitionFollower => "partition follower",
        }
    }

    fn on_leader(self) -> bool {
        matches!(
            self,
            Fault::KillLeader | Fault::PauseLeader | Fault::PartitionLeader
        )
    }

    fn is_partition(self) -> bool {
        matches!(self, Fault::PartitionLeader | Fault::PartitionFollower)
    }
}

/// The kinds the nemesis injects: all, or those `KL_FAULTS_ONLY` names.
fn fault_kinds() -> anyhow::Result<Vec<Fault>> {
    let Ok(only) = std::env::var("KL_FAULTS_ONLY") else {
        return Ok(Fault::ALL.to_vec());
    };
    let words: Vec<String> = only
        .split(',')
        .map(|w| w.trim().to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    let kinds: Vec<Fault> = Fault::ALL
        .into_iter()
        .filter(|f| words.iter().any(|w| f.name().to_lowercase().contains(w)))
        .collect();
    anyhow::ensure!(
        !kinds.is_empty(),
        "KL_FAULTS_ONLY={only:?} names no fault kind (kinds: {:?})",
        Fault::ALL.map(Fault::name)
    );
    Ok(kinds)
}

/// One fault as injected: what, on whom, from when to when (clock times).
#[derive(Debug)]
struct Injected {
    fault: Fault,
    member: usize,
    from: u64,
    to: u64,
    /// A partition: how long after the cut the majority agreed on a leader among itself.
    majority_leader_after: Option<Duration>,
}

/// One fault at a time: inject, hold for 1-3 s (a partition 3-5 s), heal, wait for a leader,
/// rest 0.3-1 s. The kinds come round in a shuffled order, and the first round is always
/// completed (past the deadline if need be), so that even a short run has each once. During a partition the
/// majority must agree on a leader among itself (a new one when the leader was cut off).
async fn nemesis(
    c: &mut EtcdCluster,
    until: Instant,
    clock: Clock,
    rng: &mut Rng,
) -> anyhow::Result<Vec<Injected>> {
    let all = fault_kinds()?;
    let mut done = Vec::new();
    let mut kinds = Vec::new();
    tokio::time::sleep(rng.millis(500, 1000)).await;
    while Instant::now() < until || done.len() < all.len() {
        if kinds.is_empty() {
            kinds = all.clone();
            for i in (1..kinds.len()).rev() {
                kinds.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let fault = kinds.pop().expect("refilled above");
        let leader = c.wait_for_leader(SETTLE).await?;
        let member = if fault.on_leader() {
            leader
        } else {
            (leader + 1 + rng.below(MEMBERS as u64 - 1) as usize) % MEMBERS
        };
        // A partition is held longer: a client of the cut-off member spends up to a request
        // timeout on a write that cannot commit before it reads again.
        let hold = if fault.is_partition() {
            rng.millis(3000, 5000)
        } else {
            rng.millis(1000, 3000)
        };
        let from = clock.now();
        let cut = Instant::now();
        let mut majority_leader_after = None;
        match fault {
            Fault::KillLeader | Fault::KillFollower => c.kill9(member),
            Fault::PauseLeader | Fault::PauseFollower => c.sigstop(member)?,
            Fault::PartitionLeader | Fault::PartitionFollower => {
                c.isolate(member)?;
                let majority: Vec<usize> = (0..MEMBERS).filter(|&i| i != member).collect();
                let new = c
                    .wait_for_leader_among(&majority, SETTLE)
                    .await
                    .map_err(|e| {
                        e.context(format!(
                            "the majority {majority:?} has no leader while member {member} is \
                             partitioned away"
                        ))
                    })?;
                anyhow::ensure!(new != member, "the partitioned member {member} still leads");
                majority_leader_after = Some(cut.elapsed());
            }
        }
        tokio::time::sleep(hold.saturating_sub(cut.elapsed())).await;
        match fault {
            Fault::KillLeader | Fault::KillFollower => c.restart(member)?,
            Fault::PauseLeader | Fault::PauseFollower => c.sigcont(member)?,
            Fault::PartitionLeader | Fault::PartitionFollower => c.heal(),
        }
        let to = clock.now();
        done.push(Injected {
            fault,
            member,
            from,
            to,
            majority_leader_after,
        });
        c.wait_for_leader(SETTLE).await.map_err(|e| {
            e.context(format!(
                "no leader after healing {} of member {member}",
                fault.name()
            ))
        })?;
        tokio::time::sleep(rng.millis(300, 1000)).await;
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------------------
// Final reads.

/// A linearizable read of the whole prefix through any member, retried until it answers:
/// (call, ret, values by key, revision).
async fn read_all(
    urls: &[String],
    options: &ConnectOptions,
    clock: Clock,
) -> anyhow::Result<(u64, u64, BTreeMap<String, String>, i64)> {
    let deadline = Instant::now() + SETTLE;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        let attempt = async {
            let mut cl = Client::connect(urls.to_vec(), Some(options.clone())).await?;
            let call = clock.now();
            let r = cl
                .get(PREFIX, Some(GetOptions::new().with_prefix()))
                .await?;
            let ret = clock.now();
            let kvs = r
                .kvs()
                .iter()
                .map(|kv| (kv_key(kv), kv_value(kv)))
                .collect();
            let rev = r.header().map_or(0, |h| h.revision());
            anyhow::Ok((call, ret, kvs, rev))
        };
        match tokio::time::timeout(HARD_TIMEOUT, attempt).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => last_error = format!("{e:#}"),
            Err(_) => last_error = format!("no answer within {HARD_TIMEOUT:?}"),
        }
        tokio::time::sleep(BACKOFF).await;
    }
    anyhow::bail!("reading {PREFIX} after the run: {last_error}")
}

/// The final read as one get per key, for the histories.
fn final_reads(
    client: u64,
    keys: &[String],
    (call, ret, kvs, rev): &(u64, u64, BTreeMap<String, String>, i64),
) -> Vec<Record> {
    keys.iter()
        .map(|k| Record {
            key: k.clone(),
            op: Operation::returned(
                client,
                *call,
                RegisterOp::Get,
                *ret,
                RegisterRet::Get(kvs.get(k).cloned()),
            ),
            fate: Fate::Ok,
            rev: Some(*rev),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The checks beyond linearizability. Each returns the anomalies it found, in words.

/// Revisions against real time, across keys: a write that finished before another began has
/// the lower revision; a read (or a comparison that failed) sees every revision written
/// before it began.
fn check_revisions(records: &[Record]) -> Vec<String> {
    let mut writes: Vec<(u64, i64, &Record)> = records
        .iter()
        .filter(|r| r.fate == Fate::Ok && r.op.client < FINAL_BEFORE)
        .filter(|r| {
            matches!(
                r.op.output(),
                Some(RegisterRet::Put | RegisterRet::Cas(true))
            )
        })
        .filter_map(|r| Some((r.op.ret()?, r.rev?, r)))
        .collect();
    writes.sort_by_key(|w| w.0);
    let mut by_call: Vec<&Record> = records
        .iter()
        .filter(|r| r.fate == Fate::Ok && r.rev.is_some())
        .collect();
    by_call.sort_by_key(|r| r.op.call);
    let mut anomalies = Vec::new();
    // The highest revision (and its write) among writes finished before the current call.
    let mut highest: Option<(i64, &Record)> = None;
    let mut w = 0;
    for r in by_call {
        while w < writes.len() && writes[w].0 < r.op.call {
            if highest.is_none_or(|(rev, _)| writes[w].1 > rev) {
                highest = Some((writes[w].1, writes[w].2));
            }
            w += 1;
        }
        let (Some((before, earlier)), Some(rev)) = (highest, r.rev) else {
            continue;
        };
        let is_write = matches!(
            r.op.output(),
            Some(RegisterRet::Put | RegisterRet::Cas(true))
        );
        if (is_write && rev <= before) || (!is_write && rev < before) {
            anomalies.push(format!(
                "revision order: {} on {} by client {} at revision {rev} began after {} on {} \
                 by client {} had finished at revision {before}",
                describe(&r.op),
                r.key,
                r.op.client,
                describe(&earlier.op),
                earlier.key,
                earlier.op.client
            ));
        }
    }
    anomalies
}

fn describe(op: &Op) -> String {
    match (&op.input, op.output()) {
        (RegisterOp::Put(v), _) => format!("put {v:?}"),
        (RegisterOp::Get, _) => "a get".to_string(),
        (RegisterOp::Cas { new, .. }, Some(RegisterRet::Cas(true))) => format!("cas to {new:?}"),
        (RegisterOp::Cas { .. }, _) => "a failed cas".to_string(),
    }
}

/// The watch against the history, the lease keys and the final read (at revision
/// `final_rev`).
fn check_watch(
    watch: &WatchLog,
    records: &[Record],
    leases: &[LeaseRecord],
    final_values: &BTreeMap<String, String>,
    final_rev: i64,
) -> Vec<String> {
    let mut anomalies = watch.problems.clone();
    // In order, each once.
    for pair in watch.events.windows(2) {
        if pair[1].0 <= pair[0].0 {
            anomalies.push(format!(
                "watch: revision {} delivered after revision {}",
                pair[1].0, pair[0].0
            ));
        }
    }
    let by_rev: BTreeMap<i64, &(i64, String, Option<String>)> =
        watch.events.iter().map(|e| (e.0, e)).collect();
    // None missing: every revision of the store is a write the test made (the cluster is its
    // own) or a lease's expiry, from 2 (the first write) to the final read's.
    let missing: Vec<i64> = (2..=final_rev)
        .filter(|r| !by_rev.contains_key(r))
        .collect();
    if !missing.is_empty() {
        anomalies.push(format!(
            "watch: {} revisions up to {final_rev} never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    // Each acknowledged write is the event at its revision.
    let mut writes: HashMap<&str, &Record> = HashMap::new();
    for r in records {
        let value = match &r.op.input {
            RegisterOp::Put(v) | RegisterOp::Cas { new: v, .. } => v,
            RegisterOp::Get => continue,
        };
        writes.insert(value, r);
        let acked = matches!(
            r.op.output(),
            Some(RegisterRet::Put | RegisterRet::Cas(true))
        );
        if let (true, Some(rev)) = (acked, r.rev) {
            match by_rev.get(&rev) {
                Some((_, k, Some(v))) if *k == r.key && v == value => {}
                other => anomalies.push(format!(
                    "watch: {} on {} was acknowledged at revision {rev}, the watch has {other:?} \
                     there",
                    describe(&r.op),
                    r.key
                )),
            }
        }
    }
    // Each lease key: put once, deleted once (it expired), in that order.
    let lease_keys: HashMap<&str, &LeaseRecord> =
        leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let mut lease_events: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
    for (rev, key, value) in watch.events.iter().filter(|e| e.0 <= final_rev) {
        if let Some(k) = key.strip_prefix(LEASE_PREFIX).map(|_| key.as_str()) {
            if !lease_keys.contains_key(k) {
                anomalies.push(format!("watch: {k} at revision {rev} was never written"));
            }
            lease_events.entry(k).or_default().push(value.is_some());
        }
    }
    for l in leases.iter().filter(|l| l.put_ret.is_some()) {
        let seen = lease_events
            .get(l.key.as_str())
            .cloned()
            .unwrap_or_default();
        if seen != [true, false] {
            anomalies.push(format!(
                "watch: lease key {} should have been put and then deleted once, the watch has \
                 {seen:?} (true: put, false: delete)",
                l.key
            ));
        }
    }
    // Each event is a write someone asked for and that could have happened.
    for (rev, key, value) in watch.events.iter().filter(|e| e.1.starts_with(PREFIX)) {
        let Some(value) = value else {
            anomalies.push(format!("watch: a delete of {key} at revision {rev}"));
            continue;
        };
        let origin = writes.get(value.as_str());
        let possible = origin.is_some_and(|r| {
            r.key == *key
                && match r.fate {
                    Fate::Ok => matches!(
                        r.op.output(),
                        Some(RegisterRet::Put | RegisterRet::Cas(true))
                    ),
                    Fate::Indeterminate => true,
                    Fate::Failed => false,
                }
        });
        if !possible {
            anomalies.push(format!(
                "watch: {key} = {value:?} at revision {rev} was never written, or its write \
                 failed: {origin:?}"
            ));
        }
    }
    // It ends where the final read is.
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for (rev, key, value) in watch.events.iter().filter(|e| e.1.starts_with(PREFIX)) {
        if *rev <= final_rev {
            if let Some(v) = value {
                last.insert(key, v);
            }
        }
    }
    let read: BTreeMap<&str, &str> = final_values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if last != read {
        let differ: Vec<_> = read
            .iter()
            .filter(|(k, v)| last.get(*k) != Some(*v))
            .take(5)
            .collect();
        anomalies.push(format!(
            "watch: the last values it delivered differ from the final read, e.g. {differ:?}"
        ));
    }
    anomalies
}

/// Before and after the full restart: equal, or the later value is an indeterminate write.
fn check_durability(
    records: &[Record],
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> (Vec<String>, usize) {
    let late: HashMap<(&str, &str), ()> = records
        .iter()
        .filter(|r| r.fate == Fate::Indeterminate)
        .filter_map(|r| match &r.op.input {
            RegisterOp::Put(v) | RegisterOp::Cas { new: v, .. } => {
                Some(((r.key.as_str(), v.as_str()), ()))
            }
            RegisterOp::Get => None,
        })
        .collect();
    let mut anomalies = Vec::new();
    let mut changed = 0;
    for (k, v) in before {
        match after.get(k) {
            Some(a) if a == v => {}
            Some(a) if late.contains_key(&(k.as_str(), a.as_str())) => changed += 1,
            other => anomalies.push(format!(
                "durability: {k} read {v:?} before every member was killed, {other:?} after"
            )),
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        if !late.contains_key(&(k.as_str(), after[k].as_str())) {
            anomalies.push(format!(
                "durability: {k} was absent before every member was killed, {:?} after",
                after[k]
            ));
        }
    }
    (anomalies, changed)
}

// ---------------------------------------------------------------------------------------------
// The test.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_linearizable_under_kills_pauses_and_partitions() {
    let duration = faults_duration();
    let mut c = common::start(MEMBERS, EtcdOpts::fast().with_peer_proxies()).await;
    // The body's bound grows with the nemesis phase (common::run's is fixed).
    let bound = duration + Duration::from_secs(240);
    match tokio::time::timeout(bound, body(&mut c, duration)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:#}"),
        Err(_) => panic!("the test did not finish within {bound:?}"),
    }
}

async fn body(c: &mut EtcdCluster, duration: Duration) -> anyhow::Result<()> {
    let seed = seed();
    let mut rng = Rng(seed);
    c.wait_for_leader(SETTLE).await?;
    let urls: Vec<String> = (0..MEMBERS).map(|i| c.client_url(i)).collect();
    let plain = c.connect_options();
    let with_timeout = plain.clone().with_timeout(REQUEST_TIMEOUT);
    let started = Instant::now();
    let clock = Clock(started);

    let (target_tx, target_rx) = tokio::sync::watch::channel(None);
    let watcher = Tasks(vec![tokio::spawn(run_watcher(
        urls.clone(),
        plain.clone(),
        target_rx,
    ))]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Tasks(Vec::new());
    for id in 0..CLIENTS {
        let members: Vec<String> = if id < MEMBERS {
            vec![urls[id].clone()]
        } else {
            urls.clone()
        };
        let cl = Client::connect(members, Some(with_timeout.clone())).await?;
        let client_rng = Rng(rng.next());
        clients.0.push(tokio::spawn(run_client(
            id as u64,
            cl,
            clock,
            stop.clone(),
            client_rng,
        )));
    }

    let lease_client = Client::connect(urls.clone(), Some(with_timeout.clone())).await?;
    let lease_task = Tasks(vec![tokio::spawn(run_leases(
        lease_client,
        clock,
        stop.clone(),
        Rng(rng.next()),
    ))]);

    let injected = nemesis(c, Instant::now() + duration, clock, &mut rng).await;
    stop.store(true, Ordering::Relaxed);
    let nemesis_time = started.elapsed();
    let mut records = Vec::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for log in clients.join(HARD_TIMEOUT * 3, "a client").await? {
        records.extend(log.records);
        for (e, n) in log.errors {
            *errors.entry(e).or_default() += n;
        }
    }
    // Heal whatever a failed nemesis left behind, then read the final state.
    c.heal();
    for i in 0..MEMBERS {
        if !c.is_running(i) {
            c.restart(i)?;
        } else {
            let _ = c.sigcont(i);
        }
    }
    let leases = lease_task
        .join(HARD_TIMEOUT * 3, "the lease task")
        .await?
        .pop()
        .expect("one lease task");
    let injected = injected?;
    let proxy = c.proxies().map(|p| p.total_stats()).unwrap_or_default();
    c.wait_for_leader(SETTLE).await?;
    let leases_gone = wait_leases_gone(&urls, &plain).await?;
    let mut keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let before = read_all(&urls, &plain, clock).await?;
    target_tx.send_replace(Some(before.3));
    let what = format!("the watch, to revision {},", before.3);
    let watch = watcher
        .join(SETTLE, &what)
        .await?
        .pop()
        .expect("one watcher");

    // Every member at once, then all back.
    for i in 0..MEMBERS {
        c.kill9(i);
    }
    for i in 0..MEMBERS {
        c.restart(i)?;
    }
    c.wait_for_leader(SETTLE).await?;
    let after = read_all(&urls, &plain, clock).await?;

    // The checks.
    let (mut anomalies, changed) = check_durability(&records, &before.2, &after.2);
    anomalies.extend(check_revisions(&records));
    anomalies.extend(check_watch(&watch, &records, &leases, &before.2, before.3));
    anomalies.extend(check_leases(&leases));
    records.extend(final_reads(FINAL_BEFORE, &keys, &before));
    records.extend(final_reads(FINAL_AFTER, &keys, &after));
    let history: Vec<(String, Op)> = records
        .iter()
        .filter(|r| r.fate != Fate::Failed)
        .map(|r| (r.key.clone(), r.op.clone()))
        .collect();
    let check_started = Instant::now();
    let limits = Limits {
        steps_per_key: 2_000_000,
        time: Duration::from_secs(120),
    };
    let report = kl_lincheck::check(&Register::new(), &history, &limits);
    let check_time = check_started.elapsed();

    let summary = summary(&Summary {
        seed,
        duration,
        nemesis_time,
        records: &records,
        errors: &errors,
        injected: &injected,
        proxy,
        report: &report,
        check_time,
        watch: &watch,
        final_rev: before.3,
        keys: keys.len(),
        changed,
        leases: &leases,
        leases_gone,
        anomalies: &anomalies,
    });
    println!("{summary}");

    let ok = records
        .iter()
        .filter(|r| r.fate == Fate::Ok && r.op.client < FINAL_BEFORE)
        .count();
    anyhow::ensure!(
        report.is_linearizable() && anomalies.is_empty(),
        "the store misbehaved under faults (seed {seed}):\n{report}\n{}",
        anomalies.join("\n")
    );
    anyhow::ensure!(
        ok >= MIN_OK,
        "only {ok} operations completed (at least {MIN_OK} needed for the run to mean \
         anything); errors: {errors:?}"
    );
    anyhow::ensure!(
        !injected.is_empty(),
        "the nemesis injected no fault in {duration:?}"
    );
    anyhow::ensure!(
        !injected.iter().any(|f| f.fault.is_partition()) || proxy.cut + proxy.blackholed > 0,
        "partitions were injected but the peer proxies cut no connection: {proxy:?}"
    );
    Ok(())
}

struct Summary<'a> {
    seed: u64,
    duration: Duration,
    nemesis_time: Duration,
    records: &'a [Record],
    errors: &'a BTreeMap<String, usize>,
    injected: &'a [Injected],
    proxy: ProxyStats,
    report: &'a Report<String>,
    check_time: Duration,
    watch: &'a WatchLog,
    final_rev: i64,
    keys: usize,
    changed: usize,
    leases: &'a [LeaseRecord],
    leases_gone: Duration,
    anomalies: &'a [String],
}

/// The one block the test prints (and `scripts/faults` shows).
fn summary(s: &Summary) -> String {
    let clients: Vec<&Record> = s
        .records
        .iter()
        .filter(|r| r.op.client < FINAL_BEFORE)
        .collect();
    let count = |f: &dyn Fn(&Record) -> bool| clients.iter().filter(|r| f(r)).count();
    let is = |r: &Record, fate: Fate| r.fate == fate;
    let out = |r: &Record, o: &dyn Fn(&RegisterRet<String>) -> bool| r.op.output().is_some_and(o);
    let ok = count(&|r| is(r, Fate::Ok));
    let gets = count(&|r| out(r, &|o| matches!(o, RegisterRet::Get(_))));
    let puts = count(&|r| out(r, &|o| matches!(o, RegisterRet::Put)));
    let swapped = count(&|r| out(r, &|o| matches!(o, RegisterRet::Cas(true))));
    let not_swapped = count(&|r| out(r, &|o| matches!(o, RegisterRet::Cas(false))));
    let failed = count(&|r| is(r, Fate::Failed));
    let failed_reads = count(&|r| is(r, Fate::Failed) && matches!(r.op.input, RegisterOp::Get));
    let indeterminate = count(&|r| is(r, Fate::Indeterminate));

    let mut by_kind: BTreeMap<Fault, usize> = BTreeMap::new();
    for f in s.injected {
        *by_kind.entry(f.fault).or_default() += 1;
    }
    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    let total_steps: u64 = s.report.keys.iter().map(|k| k.steps).sum();
    let anomalies = s.report.anomalies().count() + s.report.unknown().count() + s.anomalies.len();

    let mut b = String::new();
    let _ = writeln!(b, "==== linearizability summary ====");
    let _ = writeln!(
        b,
        "run:         {MEMBERS} members, {CLIENTS} clients, nemesis {:.0}s (asked {}s, \
         KL_FAULTS_DURATION), seed {} (KL_FAULTS_SEED)",
        s.nemesis_time.as_secs_f64(),
        s.duration.as_secs(),
        s.seed
    );
    let _ = writeln!(
        b,
        "operations:  {} total: {ok} ok (get {gets}, put {puts}, cas {} = {swapped} swapped + \
         {not_swapped} not), {failed} failed ({failed_reads} reads, {} writes never sent), \
         {indeterminate} indeterminate",
        clients.len(),
        swapped + not_swapped,
        failed - failed_reads
    );
    let _ = writeln!(
        b,
        "faults:      {} injected: {}",
        s.injected.len(),
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        }
    );
    let partitions: Vec<&Injected> = s
        .injected
        .iter()
        .filter(|f| f.fault.is_partition())
        .collect();
    let elected: Vec<f64> = partitions
        .iter()
        .filter_map(|f| f.majority_leader_after)
        .map(|d| d.as_secs_f64())
        .collect();
    let (lo, hi) = elected
        .iter()
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), &d| {
            (lo.min(d), hi.max(d))
        });
    let _ = writeln!(
        b,
        "partitions:  {} ({} of the leader){}; peer proxies: {} connections forwarded, {} cut, \
         {} blackholed",
        partitions.len(),
        partitions.iter().filter(|f| f.fault.on_leader()).count(),
        if elected.is_empty() {
            String::new()
        } else {
            format!(": the majority had a leader among itself {lo:.1}-{hi:.1}s after the cut")
        },
        s.proxy.forwarded,
        s.proxy.cut,
        s.proxy.blackholed
    );
    for f in s.injected.iter().take(TIMELINE_SHOWN) {
        let _ = writeln!(
            b,
            "             {:>7.3}s .. {:>7.3}s  {} (member {})",
            f.from as f64 / 1e9,
            f.to as f64 / 1e9,
            f.fault.name(),
            f.member
        );
    }
    if s.injected.len() > TIMELINE_SHOWN {
        let _ = writeln!(
            b,
            "             ... and {} more",
            s.injected.len() - TIMELINE_SHOWN
        );
    }
    let _ = writeln!(
        b,
        "checker:     {} keys: {} linearizable, {} not, {} unknown ({total_steps} search steps, \
         {:.2}s)",
        s.keys,
        s.report
            .keys
            .iter()
            .filter(|k| k.verdict.is_linearizable())
            .count(),
        s.report.anomalies().count(),
        s.report.unknown().count(),
        s.check_time.as_secs_f64()
    );
    let _ = writeln!(
        b,
        "watch:       {} events up to revision {}, opened {} times",
        s.watch.events.len(),
        s.final_rev,
        s.watch.opened
    );
    let _ = writeln!(
        b,
        "full kill:   all {MEMBERS} members kill -9'd and restarted: {} keys re-read, {} \
         changed to a later indeterminate write",
        s.keys, s.changed
    );
    let attached = s.leases.iter().filter(|l| l.put_ret.is_some()).count();
    let reads: usize = s.leases.iter().map(|l| l.reads.len()).sum();
    let _ = writeln!(
        b,
        "leases:      {} granted ({LEASE_TTL}s, never kept alive), {attached} with a key, read \
         {reads} times before their TTL ({}); all gone {:.1}s after the healed cluster had a \
         leader",
        s.leases.len(),
        match check_leases(s.leases).len() {
            0 => "there every time".to_string(),
            n => format!("{n} times gone early"),
        },
        s.leases_gone.as_secs_f64()
    );
    let top: Vec<String> = {
        let mut e: Vec<(&String, &usize)> = s.errors.iter().collect();
        e.sort_by(|a, b| b.1.cmp(a.1));
        e.iter()
            .take(6)
            .map(|(m, n)| format!("{n} x {m}"))
            .collect()
    };
    let _ = writeln!(
        b,
        "errors seen: {}",
        if top.is_empty() {
            "none".to_string()
        } else {
            top.join("; ")
        }
    );
    let _ = writeln!(b, "anomalies:   {anomalies}");
    let _ = write!(b, "================================");
    b
}
