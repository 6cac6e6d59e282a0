//! A linearizability checker for histories recorded against a real system: is there an order of
//! the operations, each taking effect at one instant between its invocation and its response,
//! that a sequential model accepts?
//!
//! Layout:
//! * [`history`]: what a test records: [`Operation`]s with invocation and response times, and
//!   [`Outcome::Indeterminate`] for those whose response never came.
//! * [`model`]: the sequential specification ([`Model`]) and the one this project needs, a
//!   single-key [`Register`] with put, get and compare-and-swap.
//! * `search`: the search itself, on one key: Wing & Gong's backtracking over a linked list
//!   of call and return entries, with Lowe's memoization of (linearized set, model state),
//!   extended so that many indeterminate operations do not make it exponential.
//! * [`report`]: the verdicts, and a counterexample a person can read.
//!
//! [`check`] splits a history by key and searches each key on its own: linearizability is
//! local (Herlihy & Wing), so a history of independent single-key objects is linearizable iff
//! every key's sub-history is, and the search stays small (P-compositionality, Horn & Kroening).
//!
//! Indeterminate operations (timed out, connection lost, "unavailable") are handled as Knossos
//! and Porcupine do: their response time is +infinity, so they may take effect at any instant
//! after their invocation, or never. Indeterminate reads change nothing and are left out.
//!
//! The search is exponential in the worst case, so it is bounded ([`Limits`]): a key whose
//! search runs out is reported [`Verdict::Unknown`], never hangs and is never called
//! linearizable.
//!
//! This crate must never depend on a store or a client: it checks histories, whoever made them.
#![forbid(unsafe_code)]

pub mod history;
pub mod model;
pub mod report;
mod search;

use std::{
    collections::BTreeMap,
    fmt::Debug,
    time::{Duration, Instant},
};

pub use history::{Operation, Outcome};
pub use model::{Model, ModelOp, Register, RegisterOp, RegisterRet};
pub use report::{Counterexample, KeyReport, OpView, Report, Verdict};

/// Bounds of one [`check`]. A key whose search hits one is [`Verdict::Unknown`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Search steps per key (one step tries one operation in one configuration). The memo
    /// table grows by at most one configuration per step, so this also bounds memory.
    pub steps_per_key: u64,
    /// Wall-clock time for the whole check, all keys together.
    pub time: Duration,
}

impl Default for Limits {
    /// Ten million steps per key and 60 s in all. For scale: a 2,400-operation history of 8
    /// concurrent clients on one key, 3% of them indeterminate, takes about 1.4 million steps
    /// (half a second in a debug build); a few hundred operations take a few thousand.
    fn default() -> Self {
        Limits {
            steps_per_key: 10_000_000,
            time: Duration::from_secs(60),
        }
    }
}

/// Checks a history of operations on independent keys: each key's operations are checked
/// against `model` on their own, in key order. Operations may come in any order; reports name
/// them by their index in `history`.
pub fn check<K, M>(model: &M, history: &[(K, ModelOp<M>)], limits: &Limits) -> Report<K>
where
    K: Ord + Clone + Debug,
    M: Model,
{
    let deadline = Instant::now() + limits.time;
    let mut by_key: BTreeMap<&K, Vec<(usize, &ModelOp<M>)>> = BTreeMap::new();
    for (i, (k, op)) in history.iter().enumerate() {
        by_key.entry(k).or_default().push((i, op));
    }
    let keys = by_key
        .into_iter()
        .map(|(k, ops)| {
            let (verdict, steps) = search::check_one(model, &ops, limits.steps_per_key, deadline);
            KeyReport {
                key: k.clone(),
                operations: ops.len(),
                steps,
                verdict,
            }
        })
        .collect();
    Report { keys }
}

/// Checks the history of one object (no keys).
pub fn check_single<M: Model>(model: &M, history: &[ModelOp<M>], limits: &Limits) -> Verdict {
    let ops: Vec<_> = history.iter().enumerate().collect();
    search::check_one(
        model,
        &ops,
        limits.steps_per_key,
        Instant::now() + limits.time,
    )
    .0
}

#[cfg(test)]
mod tests;
