//! The workspace integration tests: each file under `tests/` runs several
//! services together (or a service against the demo stack) against a real
//! broker. What they share comes from `mlwatch-testkit`; what only they
//! need (a started collector) is in `tests/support/mod.rs`. See
//! `docs/testing.md` for where a test lives.
