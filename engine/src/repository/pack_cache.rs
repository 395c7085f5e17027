//! Local copies of tree packs, for repositories in a remote store: listing, restoring and
//! incremental backups read many small tree blobs, and one download of each tree pack (or
//! none, for packs this host wrote) replaces a request per blob. Copies are checked against
//! their content-hash names when fetched and every blob read from them is verified as usual;
//! a bad copy is dropped and the blob read from the repository. Deleting the folder is safe.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::id::Id;
use crate::repository::store::ObjectKind;
use crate::repository::store::Store;

/// A folder of pack copies named by pack id.
pub struct PackCache {
    dir: PathBuf,
}

impl PackCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: PathBuf) -> Self {
        PackCache { dir }
    }

    fn path(&self, pack: &Id) -> PathBuf {
        self.dir.join(pack.to_hex())
    }

    /// Reads `range` of a pack, downloading the whole pack into the cache first if needed.
    pub fn read(&self, store: &Store, pack: &Id, range: Range<u64>) -> Result<Vec<u8>> {
        let path = self.path(pack);
        if !path.exists() {
            self.insert(pack, &store.get_named(ObjectKind::Pack, pack)?);
        }
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut out = vec![0; (range.end - range.start) as usize];
        file.seek(SeekFrom::Start(range.start))
            .and_then(|_| file.read_exact(&mut out))
            .map_err(|e| Error::io(&path, e))?;
        Ok(out)
    }

    /// Keeps a copy of a pack (best effort: a cache that cannot be written only costs speed).
    pub fn insert(&self, pack: &Id, bytes: &[u8]) {
        let path = self.path(pack);
        let written = std::fs::create_dir_all(&self.dir).and_then(|()| {
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.persist(&path).map(drop).map_err(|e| e.error)
        });
        if let Err(e) = written {
            tracing::debug!(cache = %self.dir.display(), error = %e, "could not cache a pack");
        }
    }

    /// Drops the copy of a pack (damaged, or deleted from the repository).
    pub fn remove(&self, pack: &Id) {
        let _ = std::fs::remove_file(self.path(pack));
    }
}
