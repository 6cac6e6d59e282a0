//! What a test records: one [`Operation`] per request a client made.
//!
//! Times are plain `u64`s on one monotonic clock shared by every client (nanoseconds since a
//! common `Instant` is the usual choice). For the check to be sound a client must take the
//! invocation time *before* it sends the request and the response time *after* the response
//! arrived: then "A's response time < B's invocation time" really means A finished before B
//! began. Equal times count as overlapping, which only ever makes the check more lenient.

/// What became of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// The response arrived at time `at` and said `output`. A compare-and-swap that answered
    /// "not swapped" is a returned operation too: it is known to have taken no effect.
    Returned { at: u64, output: O },
    /// No response: a timeout, a lost connection, an "unavailable". It may have taken effect at
    /// any instant after its invocation (even long after the client gave up), or never.
    Indeterminate,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Who issued it; only used to make reports readable.
    pub client: u64,
    /// Invocation time.
    pub call: u64,
    /// What was asked.
    pub input: I,
    /// What came back, if anything.
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// A returned operation.
    pub fn returned(client: u64, call: u64, input: I, ret: u64, output: O) -> Self {
        Operation {
            client,
            call,
            input,
            outcome: Outcome::Returned { at: ret, output },
        }
    }

    /// An operation without a response.
    pub fn indeterminate(client: u64, call: u64, input: I) -> Self {
        Operation {
            client,
            call,
            input,
            outcome: Outcome::Indeterminate,
        }
    }

    /// Response time; `None` when indeterminate (+infinity).
    pub fn ret(&self) -> Option<u64> {
        match &self.outcome {
            Outcome::Returned { at, .. } => Some(*at),
            Outcome::Indeterminate => None,
        }
    }

    /// What came back; `None` when indeterminate.
    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Indeterminate => None,
        }
    }
}
