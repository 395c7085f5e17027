//! Trees in a repository: loading a tree blob, and walking the trees below one.

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::format::tree::{Node, RawBytes, SnapshotPath, Tree, walk_trees};
use crate::repository::Repository;

impl Tree {
    /// Loads and validates a tree blob.
    pub fn load(repo: &Repository, id: &Id) -> Result<Tree> {
        Tree::decode(id, &repo.load_blob(id)?)
    }
}

/// Visits every node below tree `id` of `repo` depth first, in name order ([`walk_trees`]);
/// `visit` gets each node's path and returns whether to descend into it (for directories). When
/// a subtree cannot be loaded, `unreadable` gets the directory's path and the error, and decides
/// whether to go on (`Ok`).
pub fn walk(
    repo: &Repository,
    id: &Id,
    path: &mut SnapshotPath,
    visit: &mut dyn FnMut(&[RawBytes], &Node) -> Result<bool>,
    unreadable: &mut dyn FnMut(&[RawBytes], Error) -> Result<()>,
) -> Result<()> {
    walk_trees(&|id| Tree::load(repo, id), id, path, visit, unreadable)
}
