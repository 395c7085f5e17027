//! What Cairn backs up besides plain folders.

pub mod kube;
