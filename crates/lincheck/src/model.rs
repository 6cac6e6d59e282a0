//! Sequential specifications: what one object does when operations reach it one at a time.

use std::{collections::HashSet, fmt::Debug, hash::Hash};

use crate::history::Operation;

/// An operation on a model's object.
pub type ModelOp<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// A deterministic sequential object: the state after an operation, and its output, follow
/// from the state before it and its input.
pub trait Model {
    /// The object's state. Hashed into the memo table, so keep it small.
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` takes effect in `state`, if it could have answered `output`
    /// there; `None` if not. `output` is `None` for an indeterminate operation, which must then
    /// be accepted in every state (whatever it answered, nobody saw it).
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// A version of the model for one object's operations, or `None` to use it as it is.
    /// The search calls it once per object, before it starts. A model may use it to merge
    /// states that no operation of the history can tell apart; the result must accept exactly
    /// the same orders of these operations as the model itself.
    fn specialise(&self, _ops: &[&ModelOp<Self>]) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }

    /// Whether two operations have the same effect in every state, so that one indeterminate
    /// operation may stand for the other (the search then tries only one of them). Must be an
    /// equivalence. Default: never.
    fn interchangeable(&self, _a: &Self::Input, _b: &Self::Input) -> bool {
        false
    }

    /// Whether `input` never changes the state (a read). An indeterminate read says nothing,
    /// so the search leaves it out.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// One line for a report, e.g. `put "a"` or `cas "a" -> "b": swapped`.
    fn describe(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(o) => format!("{input:?} -> {o:?}"),
            None => format!("{input:?} -> ?"),
        }
    }

    /// A state for a report.
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}

/// What a client asks of a register.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp<V> {
    /// Write `V`.
    Put(V),
    /// Read the value (`None`: the key is absent).
    Get,
    /// Write `new` if the value is `expected` (`None`: if the key is absent).
    Cas { expected: Option<V>, new: V },
}

/// What a register answers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegisterRet<V> {
    Put,
    Get(Option<V>),
    /// Whether the compare-and-swap swapped.
    Cas(bool),
}

/// A single-key register that starts absent: put, get and compare-and-swap, as one etcd key
/// with Put, Range and a one-compare Txn. Values are best unique per write, which makes a
/// wrong read stand out at once.
///
/// Specialised to a history, it merges the values that no operation reads or compares
/// against: they behave alike in every state, so one of them stands in for all (see
/// [`Model::specialise`]). Writes that nobody saw then lead to one state, not one each, which
/// is what keeps timed-out writes from blowing up the search.
pub struct Register<V> {
    merge: Option<Merge<V>>,
}

/// The values a history can tell apart, and the one that stands in for all the others.
struct Merge<V> {
    told_apart: HashSet<V>,
    stand_in: V,
}

impl<V> Register<V> {
    pub fn new() -> Self {
        Register { merge: None }
    }
}

impl<V: Clone + Eq + Hash> Register<V> {
    /// The state that holds `v`.
    fn holding(&self, v: &V) -> Option<V> {
        match &self.merge {
            Some(m) if !m.told_apart.contains(v) => Some(m.stand_in.clone()),
            _ => Some(v.clone()),
        }
    }
}

impl<V> Default for Register<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone + Eq + Hash + Debug> Model for Register<V> {
    type State = Option<V>;
    type Input = RegisterOp<V>;
    type Output = RegisterRet<V>;

    fn init(&self) -> Option<V> {
        None
    }

    fn step(
        &self,
        state: &Option<V>,
        input: &RegisterOp<V>,
        output: Option<&RegisterRet<V>>,
    ) -> Option<Option<V>> {
        match (input, output) {
            (RegisterOp::Put(v), None | Some(RegisterRet::Put)) => Some(self.holding(v)),
            (RegisterOp::Get, None) => Some(state.clone()),
            (RegisterOp::Get, Some(RegisterRet::Get(seen))) => {
                (seen == state).then(|| state.clone())
            }
            (RegisterOp::Cas { expected, new }, out) => {
                let swaps = expected == state;
                match out {
                    // Nobody saw the answer: it did whatever the state made it do.
                    None => Some(if swaps {
                        Some(new.clone())
                    } else {
                        state.clone()
                    }),
                    Some(RegisterRet::Cas(swapped)) if *swapped == swaps => Some(if swaps {
                        Some(new.clone())
                    } else {
                        state.clone()
                    }),
                    _ => None,
                }
            }
            // An output of another kind of operation: a malformed history, never linearizable.
            _ => None,
        }
    }

    fn specialise(&self, ops: &[&Operation<RegisterOp<V>, RegisterRet<V>>]) -> Option<Self> {
        // Told apart: a value some read returned, or some compare-and-swap compares against.
        let mut told_apart = HashSet::new();
        for op in ops {
            match (&op.input, op.output()) {
                (RegisterOp::Get, Some(RegisterRet::Get(Some(v)))) => {
                    told_apart.insert(v.clone());
                }
                (
                    RegisterOp::Cas {
                        expected: Some(v), ..
                    },
                    _,
                ) => {
                    told_apart.insert(v.clone());
                }
                _ => {}
            }
        }
        let stand_in = ops.iter().find_map(|op| match &op.input {
            RegisterOp::Put(v) | RegisterOp::Cas { new: v, .. } if !told_apart.contains(v) => {
                Some(v.clone())
            }
            _ => None,
        })?;
        Some(Register {
            merge: Some(Merge {
                told_apart,
                stand_in,
            }),
        })
    }

    fn interchangeable(&self, a: &RegisterOp<V>, b: &RegisterOp<V>) -> bool {
        match (a, b) {
            (RegisterOp::Put(x), RegisterOp::Put(y)) => self.holding(x) == self.holding(y),
            (
                RegisterOp::Cas {
                    expected: e1,
                    new: x,
                },
                RegisterOp::Cas {
                    expected: e2,
                    new: y,
                },
            ) => e1 == e2 && self.holding(x) == self.holding(y),
            (RegisterOp::Get, RegisterOp::Get) => true,
            _ => false,
        }
    }

    fn is_read_only(&self, input: &RegisterOp<V>) -> bool {
        matches!(input, RegisterOp::Get)
    }

    fn describe(&self, input: &RegisterOp<V>, output: Option<&RegisterRet<V>>) -> String {
        let value = |v: &Option<V>| match v {
            Some(v) => format!("{v:?}"),
            None => "absent".to_string(),
        };
        let asked = match input {
            RegisterOp::Put(v) => format!("put {v:?}"),
            RegisterOp::Get => "get".to_string(),
            RegisterOp::Cas { expected, new } => format!("cas {} -> {new:?}", value(expected)),
        };
        let answer = match output {
            None => "? (indeterminate)".to_string(),
            Some(RegisterRet::Put) => "ok".to_string(),
            Some(RegisterRet::Get(v)) => value(v),
            Some(RegisterRet::Cas(true)) => "swapped".to_string(),
            Some(RegisterRet::Cas(false)) => "not swapped".to_string(),
        };
        format!("{asked}: {answer}")
    }

    fn describe_state(&self, state: &Option<V>) -> String {
        match (state, &self.merge) {
            (Some(v), Some(m)) if m.stand_in == *v => {
                format!("{v:?} (standing for any value no operation reads or compares)")
            }
            (Some(v), _) => format!("{v:?}"),
            (None, _) => "absent".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_steps() {
        let r = Register::<u32>::new();
        let put = RegisterOp::Put(1);
        assert_eq!(r.step(&None, &put, Some(&RegisterRet::Put)), Some(Some(1)));
        assert_eq!(
            r.step(&Some(1), &RegisterOp::Get, Some(&RegisterRet::Get(Some(1)))),
            Some(Some(1))
        );
        assert_eq!(
            r.step(&Some(1), &RegisterOp::Get, Some(&RegisterRet::Get(None))),
            None
        );
        let cas = RegisterOp::Cas {
            expected: None,
            new: 2,
        };
        assert_eq!(
            r.step(&None, &cas, Some(&RegisterRet::Cas(true))),
            Some(Some(2))
        );
        assert_eq!(r.step(&None, &cas, Some(&RegisterRet::Cas(false))), None);
        assert_eq!(
            r.step(&Some(1), &cas, Some(&RegisterRet::Cas(false))),
            Some(Some(1))
        );
        assert_eq!(r.step(&Some(1), &cas, None), Some(Some(1)));
        assert_eq!(r.step(&None, &cas, None), Some(Some(2)));
        // A mismatched answer is never accepted.
        assert_eq!(r.step(&None, &put, Some(&RegisterRet::Cas(true))), None);
    }

    #[test]
    fn register_describes_operations() {
        let r = Register::<&str>::new();
        let cas = RegisterOp::Cas {
            expected: None,
            new: "b",
        };
        assert_eq!(
            r.describe(&cas, Some(&RegisterRet::Cas(false))),
            r#"cas absent -> "b": not swapped"#
        );
        assert_eq!(
            r.describe(&RegisterOp::Put("a"), None),
            r#"put "a": ? (indeterminate)"#
        );
        assert_eq!(
            r.describe(&RegisterOp::Get, Some(&RegisterRet::Get(Some("a")))),
            r#"get: "a""#
        );
    }
}
