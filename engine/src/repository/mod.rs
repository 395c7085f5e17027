//! The repository: immutable objects in a store, opened with a password ([`Repository`]).
//!
//! Object names: `config`, `keys/<id>`, `data/<2 hex>/<id>` (packs), `index/<id>`,
//! `snapshots/<id>`. Every name but `config` is the BLAKE3 hash of the object's stored bytes.
//!
//! This layer holds where objects live ([`store`]: a folder, S3 or Azure, and the kind of
//! every object; the lowest part, which uses nothing else of the repository); the local index
//! cache ([`local_index`]) and tree-pack cache ([`pack_cache`]); saving blobs into packs
//! ([`packer`]); snapshots, trees and evidence records as stored objects ([`snapshots`],
//! [`trees`], [`records`]); what lets writers and garbage collection share a repository
//! without locks ([`session`], [`marks`], [`segments`]); object-lock extensions
//! ([`object_lock`]); and the store's clock ([`clock`]). It may use the format, never the
//! sources, operations or evidence.

pub mod clock;
pub mod local_index;
pub mod marks;
pub mod object_lock;
pub mod pack_cache;
pub mod packer;
pub mod records;
pub mod segments;
pub mod session;
pub mod snapshots;
pub mod store;
pub mod trees;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::Utc;
use object_store::path::Path as ObjectPath;

use crate::error::{Error, Result};
use crate::format::blob;
use crate::format::blob::BlobKind;
use crate::format::chunker::ChunkerParams;
use crate::format::config::{
    Config, EPOCHS_VERSION, FORMAT_VERSION, ObjectLock, config_header, split_config,
};
use crate::format::crypto::keys::{KdfParams, KeyFile};
use crate::format::crypto::{Domain, MasterKeys};
use crate::format::id::Id;
use crate::format::index::{self, IndexSegment};
use crate::format::pack::{self, PackedBlob};
use crate::repository::local_index::{BlobLocation, LocalIndex};
use crate::repository::pack_cache::PackCache;
use crate::repository::store::ObjectKind;
use crate::repository::store::{Location, Store};

/// The most bytes a `config` can hold (it holds a few hundred).
const CONFIG_MAX: u64 = 1 << 20;

/// The zstd level new repositories compress data with. Level 1 rather than zstd's default 3:
/// on the benchmark's data sets (`benches/RESULTS.md`) it compresses about 1.5 times as fast
/// for 1-3 % more stored bytes, since most blobs are small files or whole chunks whose ratio
/// depends little on the level.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// The default retention: 720 hours (30 days).
pub const DEFAULT_KEEP_WITHIN_SECS: u64 = 720 * 3600;

/// Options for a new repository.
#[derive(Clone)]
pub struct InitOptions {
    /// Chunker parameters (default: 512 KiB / 1 MiB / 8 MiB, random seed).
    pub chunker: ChunkerParams,
    /// zstd level (default 3).
    pub compression_level: i32,
    /// Pack target size (default 16 MiB).
    pub pack_size: u32,
    /// Argon2id cost of the first key.
    pub kdf: KdfParams,
    /// Default retention in seconds.
    pub keep_within_secs: u64,
    /// Object Lock for every object (S3 repositories only).
    pub object_lock: Option<ObjectLock>,
    /// Master keys to use (default: new random ones).
    pub keys: Option<MasterKeys>,
}

/// A repository in `dir/repo` (cache in `dir/cache`) for unit tests: 4 KiB chunks, packs of
/// `pack_size` bytes and a cheap key derivation, so that little data makes many packs quickly.
#[cfg(test)]
pub(crate) fn small_test_repository(dir: &Path, pack_size: u32) -> Repository {
    let options = InitOptions {
        chunker: ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
            gear_seed: 7,
        },
        pack_size,
        kdf: KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        },
        ..InitOptions::default()
    };
    let location = Location::Local(dir.join("repo"));
    Repository::init(&location, b"pw", options, &dir.join("cache")).unwrap()
}

/// `len` bytes of incompressible noise from `seed`, for unit tests.
#[cfg(test)]
pub(crate) fn test_noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::new_default(),
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            pack_size: 16 * 1024 * 1024,
            kdf: KdfParams::default(),
            keep_within_secs: DEFAULT_KEEP_WITHIN_SECS,
            object_lock: None,
            keys: None,
        }
    }
}

/// The index segments a repository lists.
pub struct IndexSegments {
    /// Every listed segment.
    pub listed: Vec<Id>,
    /// The active ones (not [`index::retired`]), loaded.
    pub active: Vec<(Id, IndexSegment)>,
}

/// An open repository: its store, keys, config and local index.
pub struct Repository {
    location: Location,
    store: Store,
    keys: MasterKeys,
    key_id: Id,
    config: Config,
    index: LocalIndex,
    /// This repository's folder in the cache base (`<cache>/<repository id>`).
    cache: PathBuf,
    /// Local copies of tree packs, for remote stores.
    tree_packs: Option<PackCache>,
    /// How many times the local index was rebuilt after a failed read, guarding the rebuild
    /// (one at a time; threads that failed before a rebuild finished only read again).
    rebuilds: std::sync::Mutex<u64>,
}

impl Repository {
    /// Creates a new repository at `location`, protected by `password`.
    pub fn init(
        location: &Location,
        password: &[u8],
        options: InitOptions,
        cache_base: &Path,
    ) -> Result<Repository> {
        options.chunker.validate().map_err(Error::Invalid)?;
        let store = location.open(true, options.object_lock.as_ref())?;
        if store
            .get_bounded(&ObjectPath::from("config"), CONFIG_MAX)?
            .is_some()
        {
            return Err(Error::RepositoryExists {
                location: location.to_string(),
            });
        }
        let keys = options.keys.unwrap_or_else(MasterKeys::generate);
        let config = Config {
            version: FORMAT_VERSION,
            id: Id(crate::format::crypto::random_bytes()),
            created: Utc::now(),
            chunker: options.chunker,
            compression_level: options.compression_level,
            pack_size: options.pack_size,
            keep_within_secs: options.keep_within_secs,
            object_lock: options.object_lock,
        };
        let key_id = save_key(&store, &keys, password, options.kdf)?;
        let mut stored = config_header();
        let body = serde_json::to_vec(&config).expect("config serializes");
        stored.extend(blob::seal(&keys, Domain::Config, 0, &body));
        store
            .put_new(&ObjectPath::from("config"), stored)
            .map_err(|e| match e {
                Error::Storage(object_store::Error::AlreadyExists { .. }) => {
                    Error::RepositoryExists {
                        location: location.to_string(),
                    }
                }
                e => e,
            })?;
        Repository::assemble(location, store, keys, key_id, config, cache_base)
    }

    /// Puts an unlocked repository together with its local index cache.
    fn assemble(
        location: &Location,
        store: Store,
        keys: MasterKeys,
        key_id: Id,
        config: Config,
        cache_base: &Path,
    ) -> Result<Repository> {
        let cache = cache_base.join(config.id.to_hex());
        let index = LocalIndex::open(&cache.join("index"))?;
        let tree_packs = store
            .is_remote()
            .then(|| PackCache::new(cache.join("tree-packs")));
        Ok(Repository {
            tree_packs,
            rebuilds: std::sync::Mutex::new(0),
            location: location.clone(),
            store,
            keys,
            key_id,
            config,
            index,
            cache,
        })
    }

    /// Opens the repository at `location` with `password`, and brings the local index cache up
    /// to date.
    pub fn open(location: &Location, password: &[u8], cache_base: &Path) -> Result<Repository> {
        let mut store = location.open(false, None)?;
        let raw = store
            .get_bounded(&ObjectPath::from("config"), CONFIG_MAX)?
            .ok_or_else(|| Error::NoRepository {
                location: location.to_string(),
            })?;
        let (version, body) = split_config(&raw)?;
        let (keys, key_id) = unlock(&store, password)?;
        let plain = blob::open(&keys, Domain::Config, body, "config", &"object", None)?;
        let config: Config =
            serde_json::from_slice(&plain).map_err(|e| Error::damaged("config", "object", e))?;
        if config.version != version {
            return Err(Error::damaged(
                "config",
                "object",
                "header and body versions differ",
            ));
        }
        config
            .chunker
            .validate()
            .map_err(|e| Error::damaged("config", "object", e))?;
        if config.object_lock.is_some() {
            store = location.open(false, config.object_lock.as_ref())?;
        }
        let repo = Repository::assemble(location, store, keys, key_id, config, cache_base)?;
        repo.sync_index()?;
        tracing::info!(
            location = %location,
            format_version = version,
            key = %key_id.short(),
            "repository opened"
        );
        Ok(repo)
    }

    /// Where the repository is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Raw object access.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The repository's keys.
    pub fn keys(&self) -> &MasterKeys {
        &self.keys
    }

    /// The id of the key file that opened the repository.
    pub fn key_id(&self) -> Id {
        self.key_id
    }

    /// The repository config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The local index cache.
    pub fn index(&self) -> &LocalIndex {
        &self.index
    }

    /// This repository's folder in the local cache, for work files that outgrow memory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Seals `plaintext` and stores it under the hash of its stored bytes.
    pub fn save_object(&self, kind: ObjectKind, domain: Domain, plaintext: &[u8]) -> Result<Id> {
        let stored = blob::seal(&self.keys, domain, self.config.compression_level, plaintext);
        let id = Id::of_stored(&stored);
        self.store.put(&kind.path(&id), stored)?;
        Ok(id)
    }

    /// Loads an object stored by [`Repository::save_object`], verifying its name and MAC.
    pub fn load_object(&self, kind: ObjectKind, domain: Domain, id: &Id) -> Result<Vec<u8>> {
        let stored = self.store.get_named(kind, id)?;
        blob::open(&self.keys, domain, &stored, kind.name(), id, None)
    }

    /// Stores an index segment and adds it to the local cache.
    pub fn save_index(&self, segment: &IndexSegment) -> Result<Id> {
        let id = self.save_object(ObjectKind::Index, Domain::Index, &segment.encode())?;
        self.index.add_segment(&id, segment, true)?;
        Ok(id)
    }

    /// Loads and parses one index segment.
    pub fn load_index(&self, id: &Id) -> Result<IndexSegment> {
        let plain = self.load_object(ObjectKind::Index, Domain::Index, id)?;
        IndexSegment::decode(&plain).ok_or_else(|| Error::damaged("index", id, "malformed segment"))
    }

    /// Every listed index segment, and those of them that are *active*: not retired by a listed
    /// one ([`index::retired`]).
    pub fn index_segments(&self) -> Result<IndexSegments> {
        let listed = self.store.ids(ObjectKind::Index)?;
        let mut loaded = Vec::with_capacity(listed.len());
        for id in &listed {
            loaded.push((*id, self.load_index(id)?));
        }
        let retired = index::retired(loaded.iter().map(|(id, s)| (id, &s.lineage)));
        loaded.retain(|(id, _)| !retired.contains(id));
        Ok(IndexSegments {
            listed,
            active: loaded,
        })
    }

    /// Brings the local index cache up to date with `index/`: adds new segments, leaving out
    /// retired ones ([`index::retired`]), and rebuilds from scratch if a segment it knew has
    /// gone (garbage collection replaced it) or has been retired since it was added.
    pub fn sync_index(&self) -> Result<()> {
        let listed: HashSet<Id> = self.store.ids(ObjectKind::Index)?.into_iter().collect();
        let mut known = self.index.known_segments()?;
        // a segment gone, or one whose entries a run stopped adding: start over
        if !known.keys().all(|id| listed.contains(id)) || known.values().any(|k| !k.complete) {
            self.index.clear()?;
            known.clear();
        }
        let rebuild = known.is_empty();
        // New segments are read once for what they supersede; up to a budget of entries they
        // are kept for adding, beyond it read again, so that memory stays bounded.
        let mut fresh = vec![];
        let mut room = segments::KEPT_ENTRIES;
        for id in listed.iter().filter(|id| !known.contains_key(*id)) {
            // A damaged segment must not stop the repository from opening (`repair index` needs
            // it open): its blobs are reported missing when something needs them.
            match self.load_index(id) {
                Ok(segment) => {
                    let entries: usize = segment.packs.iter().map(|(_, b)| b.len()).sum();
                    let lineage = segment.lineage.clone();
                    let kept = (entries <= room).then(|| {
                        room -= entries;
                        segment
                    });
                    fresh.push((*id, lineage, kept));
                }
                Err(e @ Error::Damaged { .. }) => tracing::warn!("{e}"),
                // removed by a gc since it was listed: its content is in the compacted segment
                Err(Error::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let retired = index::retired(
            known
                .iter()
                .map(|(id, k)| (id, &k.lineage))
                .chain(fresh.iter().map(|(id, lineage, _)| (id, lineage))),
        );
        if known.iter().any(|(id, k)| k.active && retired.contains(id)) {
            // entries of a now retired segment are in the cache: start over
            self.index.clear()?;
            return self.sync_index();
        }
        for (id, lineage, kept) in fresh {
            let active = !retired.contains(&id);
            let segment = match kept {
                Some(segment) => segment,
                None if !active => IndexSegment {
                    packs: vec![],
                    lineage,
                },
                None => match self.load_index(&id) {
                    Ok(segment) => segment,
                    Err(Error::Missing { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            self.index.add_segment(&id, &segment, active)?;
        }
        if rebuild && !listed.is_empty() {
            self.index.compact();
        }
        Ok(())
    }

    /// Whether this repository's index segments carry compaction epochs (format §7).
    pub fn has_epochs(&self) -> bool {
        self.config.version >= EPOCHS_VERSION
    }

    /// The epoch a writer's index segment takes (format §7): the highest of the segments
    /// listed now, read after bringing the local cache up to date.
    pub fn writer_epoch(&self) -> Result<u64> {
        if !self.has_epochs() {
            return Ok(0);
        }
        self.sync_index()?;
        let known = self.index.known_segments()?;
        Ok(known.values().map(|k| k.lineage.epoch).max().unwrap_or(0))
    }

    /// Discards the local cache and reloads it from the repository's index segments.
    pub fn rebuild_local_index(&self) -> Result<()> {
        self.index.clear()?;
        self.sync_index()
    }

    /// Where a blob is stored.
    pub fn locate(&self, id: &Id) -> Result<BlobLocation> {
        self.index
            .get(id)?
            .ok_or_else(|| Error::MissingBlob { id: id.to_hex() })
    }

    /// Reads and verifies one blob. If the local cache does not know it or points at the wrong
    /// place (stale after a gc elsewhere, damaged or tampered), the cache is rebuilt from the
    /// repository once and the read retried.
    pub fn load_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let rebuilds = *self.rebuilds.lock().expect("lock");
        match self.locate(id).and_then(|loc| self.read_blob_at(id, &loc)) {
            Ok(b) => Ok(b),
            Err(first) => {
                let mut done = self.rebuilds.lock().expect("lock");
                // another thread may have rebuilt it since this read began
                if *done == rebuilds {
                    tracing::warn!(blob = %id, error = %first, "blob read failed; re-reading the index from the repository");
                    self.rebuild_local_index()?;
                    *done += 1;
                }
                drop(done);
                let loc = self.locate(id)?;
                self.read_blob_at(id, &loc)
            }
        }
    }

    /// Reads and verifies one blob at a known location (tree blobs of a remote repository from
    /// the local copy of their pack when possible).
    pub fn read_blob_at(&self, id: &Id, loc: &BlobLocation) -> Result<Vec<u8>> {
        let start = loc.blob.offset as u64;
        let range = start..start + loc.blob.length as u64;
        if let (Some(cache), BlobKind::Tree) = (&self.tree_packs, loc.blob.kind) {
            match cache
                .read(&self.store, &loc.pack, range.clone())
                .and_then(|stored| blob::open_blob(&self.keys, id, &stored, loc.blob.raw_len))
            {
                Ok(plain) => return Ok(plain),
                Err(e) => {
                    tracing::debug!(blob = %id, error = %e, "cached tree pack unusable; reading the repository");
                    cache.remove(&loc.pack);
                }
            }
        }
        let stored = self
            .store
            .get_range(
                &ObjectKind::Pack.path(&loc.pack),
                start..start + loc.blob.length as u64,
            )
            .map_err(|e| Error::damaged("pack", loc.pack, format!("cannot read blob {id}: {e}")))?;
        blob::open_blob(&self.keys, id, &stored, loc.blob.raw_len)
    }

    /// Reads the blob list of a pack of `size` bytes with two ranged reads (trailer, then the
    /// sealed header), without its data. The header is authenticated by its seal; the pack's
    /// hash is not checked (that needs the whole pack).
    pub fn read_pack_header(&self, id: &Id, size: u64) -> Result<Vec<PackedBlob>> {
        let path = ObjectKind::Pack.path(id);
        let too_short = || Error::damaged("pack", id, "too short to hold a header");
        let trailer_at = size
            .checked_sub(pack::TRAILER_LEN as u64)
            .ok_or_else(too_short)?;
        let trailer = self.store.get_range(&path, trailer_at..size)?;
        let header_len = pack::header_len(id, &trailer)? as u64;
        let start = trailer_at.checked_sub(header_len).ok_or_else(too_short)?;
        let sealed = self.store.get_range(&path, start..trailer_at)?;
        pack::open_header(&self.keys, id, &sealed, start as usize)
    }

    /// Keeps a local copy of a tree pack this process stored (remote repositories only).
    pub fn remember_tree_pack(&self, pack: &Id, bytes: &[u8]) {
        if let Some(cache) = &self.tree_packs {
            cache.insert(pack, bytes);
        }
    }

    /// Drops the local copy of a pack deleted from the repository.
    pub fn forget_cached_pack(&self, pack: &Id) {
        if let Some(cache) = &self.tree_packs {
            cache.remove(pack);
        }
    }

    /// Adds a key file for `password`, returning its id.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<Id> {
        save_key(&self.store, &self.keys, password, kdf)
    }

    /// Lists the key files.
    pub fn list_keys(&self) -> Result<Vec<(Id, KeyFile)>> {
        let mut out = Vec::new();
        for (id, _) in self.store.list(ObjectKind::Key)? {
            out.push((id, load_key(&self.store, &id)?));
        }
        out.sort_by_key(|(_, k)| k.created);
        Ok(out)
    }

    /// Removes a key file; refuses the key in use and the last one. In a repository with an
    /// object lock the key file stays locked until its lock passes: it is hidden behind a
    /// delete marker, so that no password opens the repository with it and gc, which lists
    /// the keys, no longer extends its lock; the bucket's lifecycle rule then removes the
    /// locked version (README, Object Lock).
    pub fn remove_key(&self, id: &Id) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::KeyRefused(
                "refusing to remove the key this session opened the repository with: open it with another password first".into(),
            ));
        }
        let keys = self.store.list(ObjectKind::Key)?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(Error::KeyRefused(format!(
                "no key {id}: list keys with `cairn key list`"
            )));
        }
        self.delete_key(id)
    }

    fn delete_key(&self, id: &Id) -> Result<()> {
        let path = ObjectKind::Key.path(id);
        match self.store.lock() {
            Some(_) => self.store.delete_unlocked(&path),
            None => self.store.delete(&path),
        }
    }

    /// Replaces the key in use by one for `new_password`; returns the new key id.
    pub fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<Id> {
        let new_id = self.add_key(new_password, kdf)?;
        let old = std::mem::replace(&mut self.key_id, new_id);
        self.delete_key(&old)?;
        Ok(new_id)
    }
}

fn save_key(store: &Store, keys: &MasterKeys, password: &[u8], kdf: KdfParams) -> Result<Id> {
    let file = KeyFile::wrap(keys, password, kdf)?;
    let bytes = serde_json::to_vec_pretty(&file).expect("key file serializes");
    let id = Id::of_stored(&bytes);
    store.put_new(&ObjectKind::Key.path(&id), bytes)?;
    Ok(id)
}

fn load_key(store: &Store, id: &Id) -> Result<KeyFile> {
    let bytes = store.get_named(ObjectKind::Key, id)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::damaged("key", id, e))
}

/// Tries every key file with the password. Damaged key files are skipped with a warning as long
/// as another key opens the repository.
fn unlock(store: &Store, password: &[u8]) -> Result<(MasterKeys, Id)> {
    let ids = store.list(ObjectKind::Key)?;
    let mut first_damage = None;
    for (id, _) in &ids {
        let opened = load_key(store, id).and_then(|k| k.unwrap_keys(password));
        match opened {
            Ok(Some(keys)) => return Ok((keys, *id)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(key = %id, error = %e, "skipping unusable key file");
                first_damage.get_or_insert(e);
            }
        }
    }
    match first_damage {
        Some(e) if ids.len() == 1 => Err(e),
        _ => Err(Error::WrongPassword { keys: ids.len() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::blob::BlobKind;
    use crate::repository::packer::Packer;

    #[test]
    fn a_segment_a_run_stopped_adding_to_the_cache_makes_the_next_sync_rebuild_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = small_test_repository(dir.path(), 16 * 1024);
        let packer = Packer::new(&repo);
        let ids: Vec<Id> = (0..20)
            .map(|n| {
                packer
                    .save(BlobKind::Data, &test_noise(n + 1, 3000))
                    .unwrap()
            })
            .collect();
        packer.finish().unwrap();
        repo.sync_index().unwrap();
        let known = repo.index().known_segments().unwrap();
        let (segment, k) = known.iter().find(|(_, k)| k.active).unwrap();
        repo.index()
            .stop_adding(segment, &k.lineage, &ids[7])
            .unwrap();
        assert!(repo.index().get(&ids[7]).unwrap().is_none());
        repo.sync_index().unwrap();
        for id in &ids {
            assert!(repo.index().get(id).unwrap().is_some(), "blob {id}");
        }
        assert!(
            repo.index()
                .known_segments()
                .unwrap()
                .values()
                .all(|k| k.complete)
        );
    }
}
