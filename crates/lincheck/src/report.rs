//! Verdicts and counterexamples, printable for a person reading a failed test.

use std::fmt;

/// The verdict on one key (or one object).
#[derive(Clone, Debug)]
pub enum Verdict {
    Linearizable,
    /// No order of the operations explains what the clients saw.
    NotLinearizable(Box<Counterexample>),
    /// The search ran out of its [`crate::Limits`] (or the history was malformed): nothing is
    /// known. Never to be read as "linearizable".
    Unknown(String),
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// One operation as a report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpView {
    /// Its index in the (per-key) history the checker was given, in the order given.
    pub index: usize,
    pub client: u64,
    pub call: u64,
    /// `None`: indeterminate.
    pub ret: Option<u64>,
    /// The model's description: operation and answer.
    pub text: String,
}

/// Why a history is not linearizable, as far as the search got.
#[derive(Clone, Debug)]
pub struct Counterexample {
    /// The longest linearization of a prefix that the search found: each operation and the
    /// model state after it, in order.
    pub linearized: Vec<(OpView, String)>,
    /// The model state after `linearized`.
    pub state: String,
    /// The operation whose response had arrived by then, so it had to be linearized next or
    /// earlier, and could not be.
    pub blocked: OpView,
    /// Every operation that could have come next (invoked before `blocked` returned and not
    /// yet linearized); none of them could, in that state, lead to a full linearization.
    pub candidates: Vec<OpView>,
    /// The operations of the history whose intervals overlap the failing stretch, by
    /// invocation time: what a person reads first.
    pub around: Vec<OpView>,
}

/// How many steps of the linearized prefix a report prints.
const PREFIX_SHOWN: usize = 8;
/// How many operations around the failure a report prints.
const AROUND_SHOWN: usize = 40;
/// How many counterexamples a report prints in full (the other keys are only named).
const KEYS_SHOWN: usize = 3;

/// Times are printed in milliseconds, assuming nanosecond inputs.
fn ms(t: u64) -> String {
    format!("{:.3}ms", t as f64 / 1e6)
}

impl fmt::Display for OpView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ret = self.ret.map_or_else(|| "never".to_string(), ms);
        write!(
            f,
            "#{:<5} client {:<3} [{} .. {}] {}",
            self.index,
            self.client,
            ms(self.call),
            ret,
            self.text
        )
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.linearized.len();
        writeln!(
            f,
            "  longest linearizable prefix: {n} operations{}",
            if n > PREFIX_SHOWN {
                format!(" (the last {PREFIX_SHOWN} shown)")
            } else {
                String::new()
            }
        )?;
        for (op, state) in &self.linearized[n.saturating_sub(PREFIX_SHOWN)..] {
            writeln!(f, "    {op}   => {state}")?;
        }
        writeln!(f, "  state then: {}", self.state)?;
        writeln!(
            f,
            "  this operation had returned and could not be linearized:"
        )?;
        writeln!(f, "    {}", self.blocked)?;
        writeln!(
            f,
            "  operations that could have come next ({}), none leading to a linearization:",
            self.candidates.len()
        )?;
        for op in &self.candidates {
            writeln!(f, "    {op}")?;
        }
        writeln!(
            f,
            "  the history around it ({} operations{}):",
            self.around.len(),
            if self.around.len() > AROUND_SHOWN {
                format!(", the first {AROUND_SHOWN} shown")
            } else {
                String::new()
            }
        )?;
        for op in self.around.iter().take(AROUND_SHOWN) {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

/// The verdict on one key.
#[derive(Clone, Debug)]
pub struct KeyReport<K> {
    pub key: K,
    /// Operations of this key in the history (indeterminate reads included).
    pub operations: usize,
    /// Search steps taken.
    pub steps: u64,
    pub verdict: Verdict,
}

/// The verdicts on every key of a history.
#[derive(Clone, Debug)]
pub struct Report<K> {
    pub keys: Vec<KeyReport<K>>,
}

impl<K> Report<K> {
    /// Whether every key is linearizable (an unknown key is not).
    pub fn is_linearizable(&self) -> bool {
        self.keys.iter().all(|k| k.verdict.is_linearizable())
    }

    /// Keys with a counterexample.
    pub fn anomalies(&self) -> impl Iterator<Item = &KeyReport<K>> {
        self.keys
            .iter()
            .filter(|k| matches!(k.verdict, Verdict::NotLinearizable(_)))
    }

    /// Keys whose search ran out.
    pub fn unknown(&self) -> impl Iterator<Item = &KeyReport<K>> {
        self.keys
            .iter()
            .filter(|k| matches!(k.verdict, Verdict::Unknown(_)))
    }
}

impl<K: fmt::Debug> fmt::Display for Report<K> {
    /// One line in all, then every key that is not linearizable, the first few with their
    /// counterexample.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = 0;
        let steps: u64 = self.keys.iter().map(|k| k.steps).sum();
        writeln!(
            f,
            "{} keys: {} linearizable, {} not linearizable, {} unknown ({} search steps)",
            self.keys.len(),
            self.keys
                .iter()
                .filter(|k| k.verdict.is_linearizable())
                .count(),
            self.anomalies().count(),
            self.unknown().count(),
            steps
        )?;
        for k in &self.keys {
            match &k.verdict {
                Verdict::Linearizable => {}
                Verdict::Unknown(why) => writeln!(
                    f,
                    "key {:?} ({} operations): UNKNOWN: {why}",
                    k.key, k.operations
                )?,
                Verdict::NotLinearizable(c) => {
                    writeln!(
                        f,
                        "key {:?} ({} operations): NOT LINEARIZABLE",
                        k.key, k.operations
                    )?;
                    if shown < KEYS_SHOWN {
                        write!(f, "{c}")?;
                        shown += 1;
                    }
                }
            }
        }
        Ok(())
    }
}
