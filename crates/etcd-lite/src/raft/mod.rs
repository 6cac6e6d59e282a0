//! openraft wiring (filled in by the raft layer work).
