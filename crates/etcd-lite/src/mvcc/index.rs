//! The in-memory key index: etcd's `keyIndex`. For each key, the revisions at which it changed,
//! grouped into *generations* (from a create to the delete that ends it). It holds no values —
//! those stay in sled, one record per revision — so its size is a function of the number of
//! keys and of the history kept since the last compaction.

/// A revision: the main revision of a change and its position within that revision (a txn
/// writes several keys at one main revision).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Rev {
    pub main: i64,
    pub sub: i64,
}

/// One life of a key: from its creation to the delete that ended it (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Generation {
    /// The key's create_revision in this generation. Kept separately because compaction drops
    /// the creating revision from `revs` while later versions still report it.
    pub created: i64,
    /// The version of the last entry of `revs` (the tombstone counts as one, as in etcd).
    /// Kept as a number rather than derived from `revs.len()` because compaction shortens
    /// `revs`.
    pub ver: i64,
    /// Revisions of this generation's versions, ascending; when `ended`, the last one is the
    /// delete.
    pub revs: Vec<Rev>,
    /// Whether a delete ended this generation.
    pub ended: bool,
}

/// What is visible of a key at some revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Visible {
    /// The revision whose record holds the key's value (its mod revision is `rev.main`).
    pub rev: Rev,
    pub created: i64,
    pub version: i64,
}

/// How an index write changed the key, so that it can be undone exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The key was not in the index.
    NewKey,
    /// The key was deleted (or empty): a new generation started.
    NewGeneration,
    /// Another version of the live generation.
    Version,
    /// A delete ended the live generation.
    Tombstone,
}

/// All generations of one key, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    gens: Vec<Generation>,
    /// The lease of the key's live version (0: none, or the key is deleted). Only the current
    /// value is needed (lease attachment and LEASE compares are about now), and keeping it here
    /// spares Put a record read to find the lease to detach from.
    pub lease: i64,
    /// The key's newest revision (put or delete), and whether it is a put: inline copies of
    /// the end of `gens`, so that reads at the current revision (nearly all of them) and
    /// counts over large ranges never chase the generation vectors.
    last: Rev,
    live: bool,
}

impl KeyIndex {
    /// Whether the key exists now.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The revision holding the key's value now, if it exists.
    pub fn live_rev(&self) -> Option<Rev> {
        self.live.then_some(self.last)
    }

    /// The revision holding the key's value as of `at`, if it existed then.
    pub fn rev_at(&self, at: i64) -> Option<Rev> {
        if at >= self.last.main {
            self.live_rev()
        } else {
            self.get(at).map(|v| v.rev)
        }
    }

    /// Re-derives the inline copies after `gens` changed.
    fn refresh(&mut self) {
        let g = self.gens.last();
        self.last = g.and_then(|g| g.revs.last()).copied().unwrap_or_default();
        self.live = g.is_some_and(|g| !g.ended && !g.revs.is_empty());
    }

    /// The key's live version now, if it exists.
    pub fn current(&self) -> Option<Visible> {
        let g = self.gens.last().filter(|g| !g.ended)?;
        let rev = *g.revs.last()?;
        Some(Visible {
            rev,
            created: g.created,
            version: g.ver,
        })
    }

    /// The key as of revision `at` (etcd's `keyIndex.get`): found from the newest generation
    /// backwards, so reads at the current revision cost O(1).
    pub fn get(&self, at: i64) -> Option<Visible> {
        for g in self.gens.iter().rev() {
            let (Some(first), Some(last)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            if g.ended && last.main <= at {
                // Deleted at or before `at`, and no later generation had started by then.
                return None;
            }
            if first.main <= at {
                // revs ascend; the last one <= at (exists: first.main <= at).
                let n = g.revs.partition_point(|r| r.main <= at).checked_sub(1)?;
                let behind = (g.revs.len() - 1 - n) as i64;
                return Some(Visible {
                    rev: g.revs[n],
                    created: g.created,
                    version: g.ver - behind,
                });
            }
        }
        None
    }

    /// Records a put at `rev`; returns how, for undo. The key's new create revision and version
    /// are then `current()`.
    pub fn push_put(&mut self, rev: Rev) -> Pushed {
        let how = match self.gens.last() {
            None => Pushed::NewKey,
            Some(g) if g.ended || g.revs.is_empty() => Pushed::NewGeneration,
            Some(_) => Pushed::Version,
        };
        match (how, self.gens.last_mut()) {
            (Pushed::Version, Some(g)) => {
                g.revs.push(rev);
                g.ver += 1;
            }
            _ => self.gens.push(Generation {
                created: rev.main,
                ver: 1,
                revs: vec![rev],
                ended: false,
            }),
        }
        self.refresh();
        how
    }

    /// Records a put read back from disk. Its create revision and version come from the
    /// record: after compaction a generation's first record need not be its create.
    pub fn push_loaded_put(&mut self, rev: Rev, created: i64, version: i64) {
        match self.gens.last_mut() {
            Some(g) if !g.ended => {
                g.revs.push(rev);
                g.ver = version;
            }
            _ => self.gens.push(Generation {
                created,
                ver: version,
                revs: vec![rev],
                ended: false,
            }),
        }
        self.refresh();
    }

    /// Records a delete at `rev`. False (and no change) if the key is not live.
    pub fn push_tombstone(&mut self, rev: Rev) -> bool {
        match self.gens.last_mut() {
            Some(g) if !g.ended && !g.revs.is_empty() => {
                g.revs.push(rev);
                g.ver += 1;
                g.ended = true;
                self.refresh();
                true
            }
            _ => false,
        }
    }

    /// Undoes the latest push. Returns true if the key has no history left (`NewKey`), so the
    /// caller removes it.
    pub fn undo(&mut self, how: Pushed) -> bool {
        match how {
            Pushed::NewKey => return true,
            Pushed::NewGeneration => {
                self.gens.pop();
            }
            Pushed::Version => {
                if let Some(g) = self.gens.last_mut() {
                    g.revs.pop();
                    g.ver -= 1;
                }
            }
            Pushed::Tombstone => {
                if let Some(g) = self.gens.last_mut() {
                    g.revs.pop();
                    g.ver -= 1;
                    g.ended = false;
                }
            }
        }
        self.refresh();
        false
    }

    /// What compaction at `at` removes from this key (etcd's `keyIndex.compact`): every
    /// generation deleted at or before `at`, and in the first generation still alive at `at`,
    /// the revisions before its latest one <= `at`. That latest one stays, so reads at `at`
    /// and later remain exact; a delete <= `at` does not (nothing is visible through it).
    pub fn compaction(&self, at: i64) -> Compaction {
        let mut gens = 0;
        for g in &self.gens {
            match g.revs.last() {
                Some(last) if g.ended && last.main <= at => gens += 1,
                None => gens += 1,
                _ => break,
            }
        }
        let revs = self
            .gens
            .get(gens)
            .and_then(|g| g.revs.iter().rposition(|r| r.main <= at))
            .unwrap_or(0);
        Compaction { gens, revs }
    }

    /// The revisions a [`Compaction`] drops, in order.
    pub fn compacted_revs(&self, c: Compaction) -> impl Iterator<Item = Rev> + '_ {
        let whole = self.gens.iter().take(c.gens).flat_map(|g| g.revs.iter());
        let partial = self
            .gens
            .get(c.gens)
            .into_iter()
            .flat_map(move |g| g.revs.iter().take(c.revs));
        whole.chain(partial).copied()
    }

    /// Applies a [`Compaction`]. Returns true if the key has no history left.
    pub fn compact(&mut self, c: Compaction) -> bool {
        self.gens.drain(..c.gens.min(self.gens.len()));
        if let Some(g) = self.gens.first_mut() {
            g.revs.drain(..c.revs.min(g.revs.len()));
        }
        self.refresh();
        self.gens.is_empty()
    }
}

/// What compaction removes from one key: `gens` whole generations, then `revs` revisions of
/// the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Compaction {
    pub gens: usize,
    pub revs: usize,
}

impl Compaction {
    pub fn is_noop(&self) -> bool {
        self.gens == 0 && self.revs == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Rev {
        Rev { main, sub: 0 }
    }

    #[test]
    fn versions_generations_and_reads_at_old_revisions() {
        let mut ki = KeyIndex::default();
        assert_eq!(ki.push_put(r(2)), Pushed::NewKey);
        assert_eq!(ki.push_put(r(4)), Pushed::Version);
        assert!(ki.push_tombstone(r(6)));
        assert!(!ki.push_tombstone(r(7)));
        assert_eq!(ki.push_put(r(8)), Pushed::NewGeneration);
        assert_eq!(ki.get(1), None);
        assert_eq!(
            ki.get(3),
            Some(Visible {
                rev: r(2),
                created: 2,
                version: 1
            })
        );
        assert_eq!(ki.get(5).map(|v| v.version), Some(2));
        assert_eq!(ki.get(6), None);
        assert_eq!(ki.get(7), None);
        assert_eq!(ki.current(), ki.get(8));
        assert_eq!(ki.current().map(|v| (v.created, v.version)), Some((8, 1)));
    }

    #[test]
    fn compaction_keeps_the_latest_live_revision() {
        let mut ki = KeyIndex::default();
        ki.push_put(r(2));
        ki.push_put(r(3));
        ki.push_tombstone(r(5));
        ki.push_put(r(7));
        ki.push_put(r(9));
        // At 4: the generation is alive; keep 3 (and later).
        let c = ki.compaction(4);
        assert_eq!(ki.compacted_revs(c).collect::<Vec<_>>(), vec![r(2)]);
        // At 5: the first generation is gone entirely, tombstone included.
        let c = ki.compaction(5);
        assert_eq!(
            ki.compacted_revs(c).collect::<Vec<_>>(),
            vec![r(2), r(3), r(5)]
        );
        // At 8: and 7 stays as the latest <= 8.
        let c = ki.compaction(8);
        assert!(!ki.compact(c));
        assert_eq!(ki.get(8).map(|v| (v.rev, v.version)), Some((r(7), 1)));
        assert_eq!(ki.get(9).map(|v| v.version), Some(2));
        let mut dead = KeyIndex::default();
        dead.push_put(r(2));
        dead.push_tombstone(r(3));
        let c = dead.compaction(3);
        assert!(dead.compact(c));
    }
}
