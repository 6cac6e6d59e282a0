//! This package only holds the multi-process tests in `tests/`; see README.md.
