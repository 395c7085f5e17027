//! What is backed up, and restored into: folders on this host, reached one name at a time
//! through descriptors ([`fs`]), and Kubernetes clusters ([`kube`]).
//!
//! They may use the format and the repository; the operations that back them up and restore
//! them are in `ops`.

pub mod fs;
pub mod kube;
