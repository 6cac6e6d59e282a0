//! `/health` and `/metrics`.
