//! Folders on this host: held open by descriptor and walked one name at a time ([`dirfd`]),
//! their entries' metadata read into tree nodes and applied back ([`metadata`]), and what a
//! backup leaves out ([`exclude`]).

pub mod dirfd;
pub mod exclude;
pub mod metadata;
