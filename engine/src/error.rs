//! The engine's error type. Every message says what happened and what the user can do next.

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No repository exists at the given location.
    #[error(
        "no Cairn repository at {location}: check --repo / CAIRN_REPOSITORY, or create one with `cairn init`"
    )]
    NoRepository {
        /// Where we looked.
        location: String,
    },
    /// `init` found a repository already there.
    #[error(
        "a Cairn repository already exists at {location}: use it as it is, or pick an empty location"
    )]
    RepositoryExists {
        /// Where the repository is.
        location: String,
    },
    /// No key file opens with the password given.
    #[error(
        "wrong password: none of the {keys} key(s) in this repository opens with it; check CAIRN_PASSWORD_FILE, --password-file or CAIRN_PASSWORD"
    )]
    WrongPassword {
        /// How many key files were tried.
        keys: usize,
    },
    /// The repository was written by a newer, unknown format version.
    #[error(
        "format version {found} is not supported by this cairn (it reads versions up to {supported}): upgrade cairn to a release that supports it"
    )]
    UnsupportedVersion {
        /// Version found in the repository.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// An object failed verification (hash, MAC, structure or truncation).
    #[error(
        "{kind} {id} is damaged: {reason}; it was not used. Run `cairn repair index` if it is an index, or restore the object from a replica"
    )]
    Damaged {
        /// What kind of object (pack, index, snapshot, blob, key, config).
        kind: &'static str,
        /// Its id or name.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An object that was listed or referenced is not in the repository (any more).
    #[error(
        "{kind} {id} is missing from the repository: if another cairn just removed it (forget, gc), run the command again; otherwise run `cairn check`"
    )]
    Missing {
        /// What kind of object.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// A blob that a tree or snapshot needs is not in any index.
    #[error(
        "blob {id} is not in the repository index: run `cairn repair index`; if it is still missing, the pack holding it is lost"
    )]
    MissingBlob {
        /// Hex id of the blob.
        id: String,
    },
    /// No snapshot matches the given prefix or name.
    #[error("no snapshot matches {0:?}: list them with `cairn snapshots`")]
    SnapshotNotFound(String),
    /// A snapshot id prefix matches more than one snapshot.
    #[error("snapshot prefix {0:?} is ambiguous: give more characters of the id")]
    AmbiguousSnapshot(String),
    /// A snapshot names something that would escape the restore target.
    #[error(
        "snapshot entry {name:?} is not a plain file name (it could write outside the target); the snapshot was refused: it was not written by Cairn or has been tampered with"
    )]
    UnsafeName {
        /// The offending name, lossily decoded.
        name: String,
    },
    /// A path given with --include or ls does not exist in the snapshot.
    #[error("{0:?} is not in this snapshot: list its contents with `cairn ls SNAPSHOT`")]
    PathNotInSnapshot(String),
    /// A key operation that would leave the repository unusable.
    #[error("{0}")]
    KeyRefused(String),
    /// Invalid user input that the CLI could not catch.
    #[error("{0}")]
    Invalid(String),
    /// Local file-system trouble with a path.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An object cannot be deleted yet: its S3 Object Lock has not passed.
    #[error(
        "{object} is still under its object lock: it is kept, and a later `cairn gc` deletes it once the lock has passed"
    )]
    Locked {
        /// The object's name.
        object: String,
    },
    /// The Kubernetes API server refused or failed a request.
    #[error(
        "Kubernetes API error while {doing}: {source}; check the kubeconfig or service account, its RBAC permissions and that the API server is reachable, then retry"
    )]
    Kubernetes {
        /// What Cairn was doing.
        doing: String,
        /// The client's error.
        source: Box<kube::Error>,
    },
    /// The storage backend failed.
    #[error("storage error: {0}; check that the repository is reachable and writable, then retry")]
    Storage(#[from] object_store::Error),
    /// The local index cache failed.
    #[error(
        "local index cache error: {0}; delete the cache directory (it is only a cache) and retry"
    )]
    Cache(#[from] rocksdb::Error),
}

impl Error {
    /// Shorthand for a [`Error::Damaged`].
    pub fn damaged(kind: &'static str, id: impl ToString, reason: impl ToString) -> Self {
        Error::Damaged {
            kind,
            id: id.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Wraps a Kubernetes client error with what Cairn was doing.
    pub fn kube(doing: impl Into<String>, source: kube::Error) -> Self {
        Error::Kubernetes {
            doing: doing.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
