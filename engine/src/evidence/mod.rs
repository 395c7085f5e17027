//! The evidence an auditor asks for: the [`audit`] report of what the repository holds and how
//! each protection is met, built from the repository alone (snapshots, config, keys, object
//! locks) and the records that `check` and `drill` store ([`crate::repository::records`]).
//!
//! The top layer: it may use every other.

pub mod audit;
