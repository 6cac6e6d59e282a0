//! The checker against hand-made histories with a known answer, and against random histories
//! of a real sequential register.

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;

type Op = Operation<RegisterOp<u32>, RegisterRet<u32>>;

fn put(client: u64, call: u64, ret: u64, v: u32) -> Op {
    Operation::returned(client, call, RegisterOp::Put(v), ret, RegisterRet::Put)
}

fn get(client: u64, call: u64, ret: u64, seen: Option<u32>) -> Op {
    Operation::returned(client, call, RegisterOp::Get, ret, RegisterRet::Get(seen))
}

fn cas(client: u64, call: u64, ret: u64, expected: Option<u32>, new: u32, swapped: bool) -> Op {
    let op = RegisterOp::Cas { expected, new };
    Operation::returned(client, call, op, ret, RegisterRet::Cas(swapped))
}

fn put_unknown(client: u64, call: u64, v: u32) -> Op {
    Operation::indeterminate(client, call, RegisterOp::Put(v))
}

fn cas_unknown(client: u64, call: u64, expected: Option<u32>, new: u32) -> Op {
    Operation::indeterminate(client, call, RegisterOp::Cas { expected, new })
}

fn verdict(h: &[Op]) -> Verdict {
    check_single(&Register::new(), h, &Limits::default())
}

#[track_caller]
fn assert_linearizable(h: &[Op]) {
    match verdict(h) {
        Verdict::Linearizable => {}
        Verdict::NotLinearizable(c) => panic!("expected linearizable, got:\n{c}"),
        Verdict::Unknown(why) => panic!("expected linearizable, got unknown: {why}"),
    }
}

#[track_caller]
fn assert_not_linearizable(h: &[Op]) -> Box<Counterexample> {
    match verdict(h) {
        Verdict::NotLinearizable(c) => c,
        v => panic!("expected not linearizable, got {v:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
    assert_linearizable(&[get(0, 0, 1, None)]);
}

#[test]
fn concurrent_history_is_linearizable() {
    assert_linearizable(&[
        put(0, 0, 10, 1),
        // Overlaps the put: may see it, or not.
        get(1, 2, 8, None),
        get(2, 5, 15, Some(1)),
        // Two overlapping writes; the later reads fix their order: 2, then 3.
        put(0, 20, 40, 2),
        put(1, 21, 41, 3),
        get(2, 30, 45, Some(2)),
        get(2, 46, 50, Some(3)),
        cas(0, 51, 60, Some(3), 4, true),
        cas(1, 52, 61, Some(3), 5, false),
        get(2, 62, 63, Some(4)),
    ]);
}

#[test]
fn touching_intervals_count_as_concurrent() {
    // The read's invocation time equals the put's response time: they may overlap.
    assert_linearizable(&[put(0, 0, 10, 1), get(1, 10, 12, None)]);
}

#[test]
fn stale_read_after_a_completed_write_is_caught() {
    let c =
        assert_not_linearizable(&[put(0, 0, 10, 1), put(0, 20, 30, 2), get(1, 40, 50, Some(1))]);
    assert_eq!(
        c.blocked.index, 2,
        "the stale read is the one that cannot be placed"
    );
    assert_eq!(c.linearized.len(), 2);
    assert!(c.state.starts_with("2 "), "{}", c.state);
}

#[test]
fn read_of_a_value_never_written_is_caught() {
    assert_not_linearizable(&[put(0, 0, 10, 1), get(1, 5, 15, Some(7))]);
    // Nor may a read see a value before its write was invoked.
    assert_not_linearizable(&[get(1, 0, 5, Some(1)), put(0, 10, 20, 1)]);
}

#[test]
fn two_successful_cas_from_the_same_value_are_caught() {
    assert_not_linearizable(&[
        put(0, 0, 1, 1),
        cas(1, 10, 20, Some(1), 2, true),
        cas(2, 12, 22, Some(1), 3, true),
    ]);
    // The same from "absent": two clients both create the key.
    assert_not_linearizable(&[cas(1, 10, 20, None, 2, true), cas(2, 12, 22, None, 3, true)]);
    // One wins, one loses: fine.
    assert_linearizable(&[
        cas(1, 10, 20, None, 2, true),
        cas(2, 12, 22, None, 3, false),
    ]);
}

#[test]
fn a_failed_cas_is_a_completed_operation() {
    // The value was 1 the whole time: "not swapped" is a lie.
    assert_not_linearizable(&[put(0, 0, 1, 1), cas(1, 5, 6, Some(1), 2, false)]);
    // A concurrent write explains it.
    assert_linearizable(&[
        put(0, 0, 1, 1),
        put(2, 4, 7, 3),
        cas(1, 5, 6, Some(1), 2, false),
    ]);
}

#[test]
fn indeterminate_write_that_must_be_assumed_applied() {
    // Only the timed-out put can explain the read.
    assert_linearizable(&[
        put(0, 0, 1, 1),
        put_unknown(1, 5, 2),
        get(2, 10, 20, Some(2)),
    ]);
    // It may take effect long after the client gave up.
    assert_linearizable(&[
        put(0, 0, 1, 1),
        put_unknown(1, 5, 2),
        get(2, 10, 20, Some(1)),
        get(2, 1000, 1010, Some(2)),
    ]);
    // An indeterminate compare-and-swap likewise, when its comparison held.
    assert_linearizable(&[
        put(0, 0, 1, 1),
        cas_unknown(1, 5, Some(1), 2),
        get(2, 10, 20, Some(2)),
    ]);
}

#[test]
fn indeterminate_write_that_must_not_be_assumed_applied() {
    // It may also never have happened.
    assert_linearizable(&[
        put(0, 0, 1, 1),
        put_unknown(1, 5, 2),
        get(2, 100, 110, Some(1)),
    ]);
    // But once seen, it cannot be undone.
    assert_not_linearizable(&[
        put(0, 0, 1, 1),
        put_unknown(1, 5, 2),
        get(2, 10, 20, Some(2)),
        get(2, 30, 40, Some(1)),
    ]);
    // It cannot take effect before its invocation.
    assert_not_linearizable(&[get(2, 0, 5, Some(2)), put_unknown(1, 10, 2)]);
    // A compare-and-swap whose comparison failed had no effect, indeterminate or not.
    assert_not_linearizable(&[
        put(0, 0, 1, 1),
        cas_unknown(1, 5, Some(3), 2),
        get(2, 10, 20, Some(2)),
    ]);
    // An indeterminate read is no evidence of anything.
    assert_linearizable(&[
        put(0, 0, 1, 1),
        Operation::indeterminate(1, 2, RegisterOp::Get),
        get(2, 10, 20, Some(1)),
    ]);
}

#[test]
fn keys_are_checked_apart() {
    let h: Vec<(&str, Op)> = vec![
        ("a", put(0, 0, 10, 1)),
        ("b", put(0, 0, 10, 1)),
        ("a", get(1, 20, 30, Some(1))),
        // Stale on b only.
        ("b", put(1, 11, 12, 2)),
        ("b", get(2, 20, 30, Some(1))),
        // Values are per key: 2 on c is not 2 on b.
        ("c", get(3, 40, 50, None)),
    ];
    let r = check(&Register::new(), &h, &Limits::default());
    assert!(!r.is_linearizable());
    let bad: Vec<&str> = r.anomalies().map(|k| k.key).collect();
    assert_eq!(bad, ["b"]);
    assert_eq!(r.keys.len(), 3);
    let text = r.to_string();
    assert!(
        text.contains("key \"b\" (3 operations): NOT LINEARIZABLE"),
        "{text}"
    );
    // Reports name operations by their index in the whole history.
    assert!(text.contains("#4 "), "{text}");
    assert!(text.contains("get: 1"), "{text}");
}

#[test]
fn a_search_that_runs_out_is_unknown() {
    // Twelve concurrent writes, then a read of none of them: every order must be ruled out.
    let mut h: Vec<Op> = (0..12).map(|i| put(i, 0, 100, i as u32)).collect();
    h.push(get(99, 200, 210, Some(999)));
    let tight = Limits {
        steps_per_key: 100,
        ..Limits::default()
    };
    assert!(matches!(
        check_single(&Register::new(), &h, &tight),
        Verdict::Unknown(_)
    ));
    assert_not_linearizable(&h);
}

#[test]
fn malformed_history_is_unknown() {
    assert!(matches!(verdict(&[put(0, 10, 5, 1)]), Verdict::Unknown(_)));
}

#[test]
fn counterexample_prints_what_a_person_needs() {
    const MS: u64 = 1_000_000; // times are nanoseconds
    let h = [
        put(0, 0, 10 * MS, 1),
        put(0, 20 * MS, 30 * MS, 2),
        get(1, 40 * MS, 50 * MS + 1500, Some(1)),
    ];
    let text = assert_not_linearizable(&h).to_string();
    for want in [
        "longest linearizable prefix: 2 operations",
        "state then: 2 ",
        "could not be linearized",
        "get: 1",
        "client 1   [40.000ms .. 50.002ms] get: 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// A random seed, or `KL_LINCHECK_SEED` to replay a failure.
fn seed() -> u64 {
    std::env::var("KL_LINCHECK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// A history of a real register: every client runs operations one after another; each takes
/// effect at a random instant inside its interval (or, when indeterminate, at any later
/// instant, or never), and its output is what the register answered at that instant.
fn random_history(rng: &mut StdRng, clients: u64, per_client: usize, p_unknown: f64) -> Vec<Op> {
    struct Plan {
        client: u64,
        call: u64,
        ret: Option<u64>,
        /// When it takes effect; `None`: never.
        at: Option<u64>,
        kind: u8,
    }
    let mut plans = Vec::new();
    for client in 0..clients {
        let mut t = rng.gen_range(0..20);
        for _ in 0..per_client {
            let call = t;
            let dur = rng.gen_range(0..60);
            let unknown = rng.gen_bool(p_unknown);
            let kind = rng.gen_range(0..3u8);
            let (ret, at) = if unknown {
                let pa: f64 = std::env::var("PA")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.5);
                let at = rng.gen_bool(pa).then(|| call + rng.gen_range(0..400));
                (None, at)
            } else {
                (Some(call + dur), Some(call + rng.gen_range(0..=dur)))
            };
            plans.push(Plan {
                client,
                call,
                ret,
                at,
                kind,
            });
            // A client that gave up moves on after its timeout; otherwise after the response.
            // Zero gaps make touching intervals.
            t = call + dur + rng.gen_range(0..10);
        }
    }
    // Inputs are chosen in the order operations take effect, so that compare-and-swaps often
    // expect the current value; never-applied ones get inputs at invocation time.
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by_key(|&i| (plans[i].at.unwrap_or(plans[i].call), i));
    let mut state: Option<u32> = None;
    let mut ops: Vec<Option<Op>> = (0..plans.len()).map(|_| None).collect();
    // Values are unique: the k-th operation writes k + 2 (if it writes).
    for (written, i) in (1..).zip(order) {
        let p = &plans[i];
        let fresh = written + 1;
        let input = match p.kind {
            0 => RegisterOp::Put(fresh),
            1 => RegisterOp::Get,
            _ => {
                let expected = match rng.gen_range(0..4) {
                    0 | 1 => state,
                    2 => None,
                    _ => Some(rng.gen_range(1..written + 1)),
                };
                RegisterOp::Cas {
                    expected,
                    new: fresh,
                }
            }
        };
        let output = if p.at.is_some() {
            match &input {
                RegisterOp::Put(v) => {
                    state = Some(*v);
                    RegisterRet::Put
                }
                RegisterOp::Get => RegisterRet::Get(state),
                RegisterOp::Cas { expected, new } => {
                    let swapped = *expected == state;
                    if swapped {
                        state = Some(*new);
                    }
                    RegisterRet::Cas(swapped)
                }
            }
        } else {
            RegisterRet::Put // never seen: the operation is indeterminate
        };
        ops[i] = Some(match p.ret {
            Some(ret) => Operation::returned(p.client, p.call, input, ret, output),
            None => Operation::indeterminate(p.client, p.call, input),
        });
    }
    ops.into_iter().flatten().collect()
}

#[test]
fn random_histories_of_a_real_register_are_linearizable() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..200 {
        let clients = rng.gen_range(1..7);
        let per_client = rng.gen_range(1..60);
        let h = random_history(&mut rng, clients, per_client, 0.08);
        match verdict(&h) {
            Verdict::Linearizable => {}
            v => panic!("seed {seed} round {round}: a real register's history: {v:?}\n{h:#?}"),
        }
    }
}

#[test]
fn random_histories_with_a_forged_read_are_not_linearizable() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut forged_any = 0;
    for round in 0..100 {
        let mut h = random_history(&mut rng, 4, 30, 0.05);
        let reads: Vec<usize> = (0..h.len())
            .filter(|&i| matches!(h[i].output(), Some(RegisterRet::Get(_))))
            .collect();
        if reads.is_empty() {
            continue;
        }
        let i = reads[rng.gen_range(0..reads.len())];
        if let Outcome::Returned { output, .. } = &mut h[i].outcome {
            *output = RegisterRet::Get(Some(u32::MAX)); // never written
        }
        forged_any += 1;
        match verdict(&h) {
            Verdict::NotLinearizable(c) => {
                assert_eq!(c.blocked.index, i, "seed {seed} round {round}")
            }
            v => panic!("seed {seed} round {round}: a forged read went unnoticed: {v:?}"),
        }
    }
    assert!(forged_any > 50);
}

#[test]
fn a_long_history_is_checked_quickly_enough() {
    // About what one key of the store's fault test holds, several times over.
    let mut rng = StdRng::seed_from_u64(7);
    let h = random_history(&mut rng, 8, 300, 0.03);
    let r = check_single(&Register::new(), &h, &Limits::default());
    assert!(r.is_linearizable(), "{r:?}");
}

/// Every order of the operations that respects real time, tried one by one: the definition
/// of linearizability, for histories small enough.
fn brute_force(h: &[Op]) -> bool {
    fn go(h: &[Op], model: &Register<u32>, state: &Option<u32>, done: &mut Vec<bool>) -> bool {
        if h.iter()
            .zip(done.iter())
            .all(|(op, &d)| d || op.ret().is_none())
        {
            return true;
        }
        for i in 0..h.len() {
            if done[i] {
                continue;
            }
            // Nothing that returned before it was invoked may still be waiting.
            let blocked = (0..h.len())
                .any(|k| !done[k] && k != i && h[k].ret().is_some_and(|r| r < h[i].call));
            if blocked {
                continue;
            }
            if let Some(next) = model.step(state, &h[i].input, h[i].output()) {
                done[i] = true;
                let ok = go(h, model, &next, done);
                done[i] = false;
                if ok {
                    return true;
                }
            }
        }
        false
    }
    go(h, &Register::new(), &None, &mut vec![false; h.len()])
}

/// A small history with random answers (mostly not linearizable) and few values, so that
/// values repeat and many are never read.
fn random_small_history(rng: &mut StdRng) -> Vec<Op> {
    let n = rng.gen_range(1..8);
    (0..n)
        .map(|_| {
            let client = rng.gen_range(0..3);
            let call = rng.gen_range(0..20);
            let value = |rng: &mut StdRng| rng.gen_range(1..5);
            let input = match rng.gen_range(0..3) {
                0 => RegisterOp::Put(value(rng)),
                1 => RegisterOp::Get,
                _ => RegisterOp::Cas {
                    expected: rng.gen_bool(0.8).then(|| value(rng)),
                    new: value(rng),
                },
            };
            if rng.gen_bool(0.3) {
                return Operation::indeterminate(client, call, input);
            }
            let output = match &input {
                RegisterOp::Put(_) => RegisterRet::Put,
                RegisterOp::Get => RegisterRet::Get(rng.gen_bool(0.8).then(|| value(rng))),
                RegisterOp::Cas { .. } => RegisterRet::Cas(rng.gen_bool(0.5)),
            };
            Operation::returned(client, call, input, call + rng.gen_range(0..10), output)
        })
        .collect()
}

#[test]
fn the_search_agrees_with_brute_force() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut linearizable = 0;
    for round in 0..20_000 {
        let h = random_small_history(&mut rng);
        let expected = brute_force(&h);
        let got = match verdict(&h) {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable(_) => false,
            Verdict::Unknown(why) => panic!("seed {seed} round {round}: unknown: {why}"),
        };
        assert_eq!(got, expected, "seed {seed} round {round}: {h:#?}");
        linearizable += usize::from(expected);
    }
    // Both answers were exercised.
    assert!((2_000..18_000).contains(&linearizable), "{linearizable}");
}

#[test]
fn many_timed_out_writes_nobody_saw_stay_cheap() {
    // What a dead member's clients leave behind: a few hundred writes that timed out and that
    // no read ever saw, among an ordinary concurrent history. Each may have happened anywhere
    // after its invocation; without the dominance check, the grouping and the merged values
    // the search would go through subsets of them.
    let mut rng = StdRng::seed_from_u64(11);
    let mut h = random_history(&mut rng, 4, 150, 0.0);
    let end = h.iter().filter_map(Operation::ret).max().unwrap_or(0);
    for i in 0..300 {
        let client = 10 + i % 3;
        h.push(put_unknown(
            client,
            rng.gen_range(0..end),
            1_000_000 + i as u32,
        ));
    }
    let budget = Limits {
        steps_per_key: 50_000,
        ..Limits::default()
    };
    let r = check(
        &Register::new(),
        &h.iter().map(|op| ("k", op.clone())).collect::<Vec<_>>(),
        &budget,
    );
    assert!(r.is_linearizable(), "{r}");
}
