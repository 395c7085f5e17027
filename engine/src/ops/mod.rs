//! The operations a user runs, one module each: [`backup`], [`restore`] (and its fill step),
//! [`forget`] (retention policies), [`gc`], [`check`], [`copy`] (to another repository),
//! [`repair`], [`diff`], [`find`], [`stats`], [`drill`] (test restores), [`mount`] (the
//! read-only file system), and [`kube`] (`cairn k8s`: backups of a cluster's namespaces and
//! volumes, and their restore).
//!
//! They may use the format, the repository and the sources, and each other (a drill restores,
//! a Kubernetes backup runs backups), never the evidence.

pub mod backup;
pub mod check;
pub mod copy;
pub mod diff;
pub mod drill;
pub mod find;
pub mod forget;
pub mod gc;
pub mod kube;
pub mod mount;
pub mod repair;
pub mod restore;
pub mod stats;
