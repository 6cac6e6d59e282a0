//! The search on one object's history: Wing & Gong's algorithm with Lowe's memoization.
//!
//! The history becomes a doubly linked list of entries in time order: a *call* entry per
//! operation at its invocation time and a *return* entry at its response time (none for an
//! indeterminate operation: its response time is +infinity). At equal times calls come first,
//! so operations that touch count as concurrent.
//!
//! A linearization is built front to back. Any call entry met before the first return entry
//! belongs to an operation that may take effect now: nothing that has returned is still
//! waiting for it. The search tries them in list order; when the model accepts one it is
//! *lifted* (its call and return entries are unlinked), pushed on a stack with the state
//! before it, and the scan restarts at the head. Reaching a return entry means its operation
//! had to be linearized by now and was not: the last choice is undone (its entries are linked
//! back exactly where they were, the list being restored in reverse order of removal) and the
//! scan goes on after it. The history is linearizable once every returned operation is
//! lifted; the indeterminate ones left over never took effect.
//!
//! The calls of indeterminate operations are kept in a second list of their own, in the same
//! order: they stay pending for the rest of the history, and scanning past them at every step
//! would make the search quadratic in their number.
//!
//! Lowe's memoization: a configuration is the set of operations linearized so far and the
//! model state they lead to. What can follow depends on nothing else, so a configuration seen
//! before (and whose subtree therefore failed, or is being explored) is not explored again.
//!
//! Indeterminate operations need more, or a few dozen of them make the search exponential:
//! each may be linearized at any point or never, and every subset of them linearized is a
//! configuration of its own. Three things keep that in check. A configuration that differs
//! from one already entered only by more indeterminate operations linearized is not entered:
//! it can do nothing the other could not ([`Seen`]). Indeterminate operations are tried only
//! when no returned operation can come next, and then all at once ([`check_one`]), so the
//! configurations with fewer of them are entered first. And of several interchangeable ones
//! only the first is tried ([`Classes`]). The model helps ([`Model::specialise`]): the
//! register makes every value that no operation reads or compares one and the same state, so
//! timed-out writes that nobody saw are all alike.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hash, Hasher},
    time::Instant,
};

use crate::{
    history::Operation,
    model::{Model, ModelOp},
    report::{Counterexample, OpView, Verdict},
};

/// An operation with its index in the caller's history.
type Indexed<'a, M> = (usize, &'a ModelOp<M>);

/// Link to nothing.
const NONE: usize = usize::MAX;
/// The sentinel of the list of returned operations' calls and returns.
const HEAD: usize = 0;
/// The sentinel of the list of indeterminate operations' calls.
const IHEAD: usize = 1;
/// How often (in steps) the clock is read.
const CLOCK_EVERY: u64 = 4096;

/// One entry of a list.
#[derive(Clone, Debug)]
struct Entry {
    /// The operation (index into the searched operations).
    op: usize,
    is_call: bool,
    /// Place in the time order of all entries (of both lists).
    rank: usize,
    prev: usize,
    next: usize,
    /// A call's return entry (`NONE` when indeterminate); a return's call entry.
    partner: usize,
}

/// The entries of both lists, with unlink and relink in the manner of dancing links.
struct List {
    e: Vec<Entry>,
}

impl List {
    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.e[i].prev, self.e[i].next);
        self.e[p].next = n;
        if n != NONE {
            self.e[n].prev = p;
        }
    }

    /// Puts `i` back between the neighbours it had when unlinked. Only valid in the reverse
    /// order of the unlinks.
    fn relink(&mut self, i: usize) {
        let (p, n) = (self.e[i].prev, self.e[i].next);
        self.e[p].next = i;
        if n != NONE {
            self.e[n].prev = i;
        }
    }

    /// Removes an operation: its call entry, then its return entry.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let r = self.e[call].partner;
        if r != NONE {
            self.unlink(r);
        }
    }

    /// Undoes [`Self::lift`].
    fn unlift(&mut self, call: usize) {
        let r = self.e[call].partner;
        if r != NONE {
            self.relink(r);
        }
        self.relink(call);
    }

    fn next(&self, i: usize) -> usize {
        self.e[i].next
    }

    /// Time rank of an entry; `NONE` (the end of a list) comes after everything.
    fn rank(&self, i: usize) -> usize {
        if i == NONE {
            usize::MAX
        } else {
            self.e[i].rank
        }
    }
}

/// A set of operations, as a bit per operation.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Hash for Bits {
    // Word by word: the derived impl hashes the bytes of the slice, slower in debug builds,
    // where tests run.
    fn hash<H: Hasher>(&self, h: &mut H) {
        for &w in &self.0 {
            h.write_u64(w);
        }
    }
}

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn is_subset_of(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// A fast, non-cryptographic hasher for the memo table (the keys are bit sets and states that
/// nobody chooses adversarially; SipHash was most of the search's time).
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Map<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

/// The configurations entered so far, for Lowe's memoization extended by dominance: a
/// configuration is (returned operations linearized, state, indeterminate operations
/// linearized), and one that differs from an entered one only by *more* indeterminate
/// operations linearized can do nothing the entered one could not (those operations need not
/// be linearized at all, and nothing waits for them), so it is not entered.
///
/// Completeness, briefly: were a history linearizable and the search to fail, take the
/// entered configuration with a linearization to the end that is shortest among all entered
/// ones. Its next operation on that path leads to a configuration that was either entered
/// (with a shorter path: contradiction) or dominated by an entered one, which has the same
/// path, no longer: contradiction.
struct Seen<S> {
    by_returned: Map<Bits, Map<S, Vec<Bits>>>,
}

impl<S: Clone + Eq + Hash> Seen<S> {
    /// Records the configuration; false if it (or one dominating it) was entered before.
    fn enter(&mut self, returned: &Bits, state: &S, indeterminate: &Bits) -> bool {
        if let Some(sets) = self
            .by_returned
            .get_mut(returned)
            .and_then(|by_state| by_state.get_mut(state))
        {
            if sets.iter().any(|s| s.is_subset_of(indeterminate)) {
                return false;
            }
            // Those that the new one dominates can go: whatever they would prune, it prunes.
            sets.retain(|s| !indeterminate.is_subset_of(s));
            sets.push(indeterminate.clone());
        } else {
            self.by_returned
                .entry(returned.clone())
                .or_default()
                .insert(state.clone(), vec![indeterminate.clone()]);
        }
        true
    }
}

/// The indeterminate operations grouped by [`Model::interchangeable`], each group a linked
/// list of its pending members in invocation order.
///
/// Of two interchangeable indeterminate operations that may both come next, trying the
/// earlier one is enough: whatever a linearization does with the later one it can do with the
/// earlier (both may take effect at any later point, with the same effect), and the other way
/// round. So only the first pending member of each group is a candidate. For the register
/// that makes every timed-out write of a value nobody saw one candidate, not one each.
struct Classes {
    /// Per operation, then per group sentinel (`ops.len() + group`).
    prev: Vec<usize>,
    next: Vec<usize>,
    /// Each operation's group sentinel; `NONE` for returned operations.
    head: Vec<usize>,
}

impl Classes {
    fn new<M: Model>(model: &M, ops: &[Indexed<M>]) -> Self {
        let n = ops.len();
        let mut order: Vec<usize> = (0..n).filter(|&j| ops[j].1.ret().is_none()).collect();
        order.sort_by_key(|&j| (ops[j].1.call, j));
        let mut head = vec![NONE; n];
        // Per group: its sentinel and its last member so far.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let (mut prev, mut next) = (vec![NONE; n], vec![NONE; n]);
        for j in order {
            let found = groups
                .iter()
                .position(|&(_, last)| model.interchangeable(&ops[last].1.input, &ops[j].1.input));
            let g = found.unwrap_or_else(|| {
                groups.push((n + groups.len(), NONE));
                prev.push(NONE);
                next.push(NONE);
                groups.len() - 1
            });
            let (sentinel, last) = groups[g];
            let tail = if last == NONE { sentinel } else { last };
            next[tail] = j;
            prev[j] = tail;
            head[j] = sentinel;
            groups[g].1 = j;
        }
        Classes { prev, next, head }
    }

    /// Whether `j` is indeterminate and an earlier pending member of its group stands for it.
    fn stands_for_another(&self, j: usize) -> bool {
        self.head[j] != NONE && self.next[self.head[j]] != j
    }

    fn lift(&mut self, j: usize) {
        if self.head[j] == NONE {
            return;
        }
        let (p, n) = (self.prev[j], self.next[j]);
        self.next[p] = n;
        if n != NONE {
            self.prev[n] = p;
        }
    }

    fn unlift(&mut self, j: usize) {
        if self.head[j] == NONE {
            return;
        }
        let (p, n) = (self.prev[j], self.next[j]);
        self.next[p] = j;
        if n != NONE {
            self.prev[n] = j;
        }
    }
}

/// Where the deepest dead end was: the material of a counterexample.
struct DeadEnd<S> {
    /// Operations linearized, in order (the states between them are replayed when a report
    /// is made: a search passes many dead ends and reports at most one).
    prefix: Vec<usize>,
    state: S,
    blocked: usize,
    candidates: Vec<usize>,
}

/// How a lifted operation was chosen, which says where the search goes on when it is undone.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chosen {
    /// By the scan of the returned operations' list: go on scanning after it.
    Scan,
    /// Among the indeterminate operations that may come next: go on with the next of them.
    Indeterminate,
}

/// A configuration of the stack that is trying indeterminate operations: the return entry
/// that blocks it, and its successors still to explore (call entry, state after), last first.
struct Trying<S> {
    blocker: usize,
    next: Vec<(usize, S)>,
}

/// One lifted operation: its call entry, the state before it, and how it was chosen.
struct Frame<S> {
    call: usize,
    before: S,
    chosen: Chosen,
}

/// Checks one object's operations (`(index in the caller's history, operation)`, any order).
/// Returns the verdict and the steps taken.
///
/// The returned operations that may come next are tried first, one by one, by a scan of the
/// list. Only when none of them leads anywhere (the scan meets a return entry) are the
/// indeterminate ones tried, and then all of their successor configurations are entered at
/// once before any is explored: a configuration reached by linearizing several indeterminate
/// operations in a row is then dominated by the one reached with the last of them alone, and
/// pruned, where exploring them one by one would go through every subset.
pub(crate) fn check_one<M: Model>(
    model: &M,
    history: &[Indexed<M>],
    max_steps: u64,
    deadline: Instant,
) -> (Verdict, u64) {
    // Indeterminate reads change nothing and were seen by nobody: leave them out.
    let ops: Vec<Indexed<M>> = history
        .iter()
        .filter(|(_, op)| op.ret().is_some() || !model.is_read_only(&op.input))
        .copied()
        .collect();
    for (i, op) in &ops {
        if let Some(r) = op.ret() {
            if r < op.call {
                let why = format!(
                    "malformed history: operation #{i} returns at {r}, before its invocation at {}",
                    op.call
                );
                return (Verdict::Unknown(why), 0);
            }
        }
    }
    let plain: Vec<&ModelOp<M>> = ops.iter().map(|(_, op)| *op).collect();
    let specialised = model.specialise(&plain);
    let model = specialised.as_ref().unwrap_or(model);
    let mut list = build_lists(&ops);
    let mut classes = Classes::new(model, &ops);

    // Each operation's bit: returned and indeterminate ones are numbered apart.
    let indeterminate: Vec<bool> = ops.iter().map(|(_, op)| op.ret().is_none()).collect();
    let mut bit = Vec::with_capacity(ops.len());
    let (mut n_returned, mut n_indeterminate) = (0, 0);
    for &ind in &indeterminate {
        let n = if ind {
            &mut n_indeterminate
        } else {
            &mut n_returned
        };
        bit.push(*n);
        *n += 1;
    }

    let mut remaining = n_returned;
    let mut state = model.init();
    let mut done = [Bits::new(n_returned), Bits::new(n_indeterminate)];
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    // Per configuration of the stack that is trying indeterminate operations.
    let mut successors: Vec<Trying<M::State>> = Vec::new();
    let mut seen: Seen<M::State> = Seen {
        by_returned: Map::default(),
    };
    seen.enter(&done[0], &state, &done[1]);
    let mut deepest: Option<DeadEnd<M::State>> = None;
    let mut steps = 0u64;
    let mut next_clock = CLOCK_EVERY;
    // Scanning the returned operations' list at `entry`, or (None) taking the next successor
    // from `successors`.
    let mut scan = Some(list.next(HEAD));

    loop {
        if remaining == 0 {
            return (Verdict::Linearizable, steps);
        }
        steps += 1;
        if steps > max_steps {
            let why = format!("the search ran out of its budget of {max_steps} steps");
            return (Verdict::Unknown(why), steps);
        }
        if steps >= next_clock {
            next_clock = steps + CLOCK_EVERY;
            if Instant::now() >= deadline {
                let why = format!("the search ran out of time after {steps} steps");
                return (Verdict::Unknown(why), steps);
            }
        }

        if let Some(entry) = scan {
            // While returned operations remain, a return entry comes before the end of the
            // list, so `entry` is never NONE.
            if entry != NONE && list.e[entry].is_call {
                let j = list.e[entry].op;
                let op = ops[j].1;
                if let Some(next) = model.step(&state, &op.input, op.output()) {
                    done[0].set(bit[j]);
                    if seen.enter(&done[0], &next, &done[1]) {
                        stack.push(Frame {
                            call: entry,
                            before: std::mem::replace(&mut state, next),
                            chosen: Chosen::Scan,
                        });
                        remaining -= 1;
                        list.lift(entry);
                        scan = Some(list.next(HEAD));
                        continue;
                    }
                    done[0].clear(bit[j]);
                }
                scan = Some(list.next(entry));
                continue;
            }
            // A return entry: no returned operation can come next. Enter every indeterminate
            // one that may (invoked before it, first of its group), then explore them.
            let mut next_states = Vec::new();
            let mut i = list.next(IHEAD);
            while list.rank(i) < list.rank(entry) {
                let j = list.e[i].op;
                if !classes.stands_for_another(j) {
                    steps += 1;
                    if let Some(next) = model.step(&state, &ops[j].1.input, None) {
                        done[1].set(bit[j]);
                        if seen.enter(&done[0], &next, &done[1]) {
                            next_states.push((i, next));
                        }
                        done[1].clear(bit[j]);
                    }
                }
                i = list.next(i);
            }
            next_states.reverse();
            successors.push(Trying {
                blocker: entry,
                next: next_states,
            });
            scan = None;
            continue;
        }

        // The next indeterminate successor of the configuration on top.
        let top = successors
            .last_mut()
            .expect("a configuration trying indeterminate ones");
        let blocker = top.blocker;
        if let Some((call, next)) = top.next.pop() {
            let j = list.e[call].op;
            done[1].set(bit[j]);
            stack.push(Frame {
                call,
                before: std::mem::replace(&mut state, next),
                chosen: Chosen::Indeterminate,
            });
            list.lift(call);
            classes.lift(j);
            scan = Some(list.next(HEAD));
            continue;
        }
        successors.pop();

        // A dead end: the operation of that return entry had to be linearized by now.
        if deepest
            .as_ref()
            .is_none_or(|d| stack.len() > d.prefix.len())
        {
            deepest = Some(dead_end(&list, &stack, &state, blocker));
        }
        let Some(frame) = stack.pop() else {
            let d = deepest.expect("a failed search passed a dead end");
            let c = counterexample(model, &ops, d);
            return (Verdict::NotLinearizable(Box::new(c)), steps);
        };
        let j = list.e[frame.call].op;
        state = frame.before;
        classes.unlift(j);
        list.unlift(frame.call);
        match frame.chosen {
            Chosen::Scan => {
                done[0].clear(bit[j]);
                remaining += 1;
                scan = Some(list.next(frame.call));
            }
            Chosen::Indeterminate => {
                done[1].clear(bit[j]);
                scan = None;
            }
        }
    }
}

/// The two lists, each in time order (calls first at equal times): calls and returns of the
/// returned operations from [`HEAD`], calls of the indeterminate ones from [`IHEAD`].
fn build_lists<I, O>(ops: &[(usize, &Operation<I, O>)]) -> List {
    // (time, 0 = call / 1 = return, operation)
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (j, (_, op)) in ops.iter().enumerate() {
        events.push((op.call, 0, j));
        if let Some(r) = op.ret() {
            events.push((r, 1, j));
        }
    }
    events.sort_unstable();
    let sentinel = Entry {
        op: NONE,
        is_call: false,
        rank: NONE,
        prev: NONE,
        next: NONE,
        partner: NONE,
    };
    let mut e = vec![sentinel.clone(), sentinel];
    let mut call_entry = vec![NONE; ops.len()];
    let mut tail = [HEAD, IHEAD];
    for (rank, &(_, kind, j)) in events.iter().enumerate() {
        let i = e.len();
        let is_call = kind == 0;
        let which = usize::from(is_call && ops[j].1.ret().is_none());
        let partner = if is_call {
            call_entry[j] = i;
            NONE
        } else {
            e[call_entry[j]].partner = i;
            call_entry[j]
        };
        e.push(Entry {
            op: j,
            is_call,
            rank,
            prev: tail[which],
            next: NONE,
            partner,
        });
        e[tail[which]].next = i;
        tail[which] = i;
    }
    List { e }
}

fn dead_end<S: Clone>(list: &List, stack: &[Frame<S>], state: &S, ret: usize) -> DeadEnd<S> {
    let prefix = stack.iter().map(|f| list.e[f.call].op).collect();
    let mut candidates = Vec::new();
    let mut i = list.next(HEAD);
    while i != ret && i != NONE {
        candidates.push(list.e[i].op);
        i = list.next(i);
    }
    let mut i = list.next(IHEAD);
    while list.rank(i) < list.rank(ret) {
        candidates.push(list.e[i].op);
        i = list.next(i);
    }
    DeadEnd {
        prefix,
        state: state.clone(),
        blocked: list.e[ret].op,
        candidates,
    }
}

fn counterexample<M: Model>(model: &M, ops: &[Indexed<M>], d: DeadEnd<M::State>) -> Counterexample {
    let view = |j: usize| {
        let (index, op) = ops[j];
        OpView {
            index,
            client: op.client,
            call: op.call,
            ret: op.ret(),
            text: model.describe(&op.input, op.output()),
        }
    };
    let blocked = view(d.blocked);
    let mut candidates: Vec<OpView> = d.candidates.iter().map(|&j| view(j)).collect();
    candidates.sort_by_key(|o| (o.call, o.index));
    // The failing stretch: from the earliest invocation among the returned operations that
    // could have come next to the response that forced the dead end. (Indeterminate ones may
    // have been invoked long before; they are among the candidates anyway.)
    let hi = blocked.ret.unwrap_or(u64::MAX);
    let lo = candidates
        .iter()
        .filter(|o| o.ret.is_some())
        .map(|o| o.call)
        .chain([blocked.call])
        .min()
        .unwrap_or(0);
    let mut around: Vec<OpView> = (0..ops.len())
        .filter(|&j| {
            let op = ops[j].1;
            op.call <= hi && op.ret().is_none_or(|r| r >= lo)
        })
        .map(view)
        .collect();
    around.sort_by_key(|o| (o.call, o.index));
    let mut state = model.init();
    let mut linearized = Vec::with_capacity(d.prefix.len());
    for &j in &d.prefix {
        let op = ops[j].1;
        if let Some(next) = model.step(&state, &op.input, op.output()) {
            state = next;
        }
        linearized.push((view(j), model.describe_state(&state)));
    }
    Counterexample {
        linearized,
        state: model.describe_state(&d.state),
        blocked,
        candidates,
        around,
    }
}
