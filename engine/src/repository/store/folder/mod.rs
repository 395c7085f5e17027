//! Repositories in a local folder, durable against power loss (format-spec §10).
//!
//! object_store's `LocalFileSystem` reads and lists the folder; writes and deletes are this
//! module's own, so that a change is on disk when it returns. A put writes a staging file
//! `<name>#<n>` (a name `LocalFileSystem` never lists), flushes it, renames it to its name (a
//! create-only put hard-links it, which fails if the name exists, then removes the staging
//! name) and flushes the folder holding the name; the first time a run writes into a folder it
//! creates it if needed and flushes every folder above it up to the repository's, so that the
//! folder's own entry is on disk too. A delete flushes the folder after removing the name.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

#[cfg(test)]
pub(crate) mod power_cut;

/// Runs one file-system call that changes the folder; under test, the power-cut journal
/// records it (`$op`) once it has returned.
macro_rules! disk {
    ($op:expr, $call:expr) => {{
        #[cfg(test)]
        let done = power_cut::record($op, || $call);
        #[cfg(not(test))]
        let done = $call;
        done
    }};
}

/// Objects at least this large (packs) leave the page cache once on disk: a backup rarely reads
/// them again soon, and their pages then hold the next pack.
const DROP_FROM: usize = 1 << 20;

/// A repository folder as an object store whose writes and deletes are durable on return.
#[derive(Clone, Debug)]
pub struct Folder {
    files: LocalFileSystem,
    root: PathBuf,
    /// Folders known to be on disk with their entries up to `root` (flushed by this process).
    durable: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Folder {
    /// The folder at `root`, which must exist.
    pub fn new(root: &Path) -> object_store::Result<Folder> {
        let files = LocalFileSystem::new_with_prefix(root)?.with_fsync(true);
        let root = files.path_to_filesystem(&ObjectPath::from("config"))?;
        Ok(Folder {
            files,
            root: root.parent().expect("a file in the folder").to_owned(),
            durable: Arc::default(),
        })
    }

    /// Writes an object durably: see the module documentation.
    fn write(&self, dest: &Path, payload: &PutPayload, create: bool) -> io::Result<()> {
        let dir = dest.parent().expect("objects are in the folder");
        self.make_durable_dir(dir)?;
        let (mut file, staging) = stage(dest)?;
        let published = disk!(
            power_cut::Op::write(&staging, payload),
            payload.iter().try_for_each(|chunk| file.write_all(chunk))
        )
        .and_then(|()| disk!(power_cut::Op::SyncFile(staging.clone()), file.sync_all()))
        .and_then(|()| {
            if payload.content_length() >= DROP_FROM {
                crate::drop_from_page_cache(&file, 0, payload.content_length() as u64);
            }
            drop(file);
            if create {
                let linked = disk!(
                    power_cut::Op::Link(staging.clone(), dest.to_owned()),
                    std::fs::hard_link(&staging, dest)
                );
                remove_staging(&staging);
                linked
            } else {
                disk!(
                    power_cut::Op::Rename(staging.clone(), dest.to_owned()),
                    std::fs::rename(&staging, dest)
                )
            }
        });
        if let Err(e) = published {
            remove_staging(&staging);
            return Err(e);
        }
        sync_dir(dir)
    }

    /// Creates `dir` if needed and flushes it into its parents up to the repository's folder,
    /// once per process and folder (another process or thread may have created it and not yet
    /// flushed its entry).
    fn make_durable_dir(&self, dir: &Path) -> io::Result<()> {
        if self.durable.lock().expect("lock").contains(dir) {
            return Ok(());
        }
        if dir != self.root {
            let parent = dir.parent().expect("inside the folder");
            self.make_durable_dir(parent)?;
            match disk!(
                power_cut::Op::MkDir(dir.to_owned()),
                std::fs::create_dir(dir)
            ) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            sync_dir(parent)?;
        }
        self.durable.lock().expect("lock").insert(dir.to_owned());
        Ok(())
    }
}

/// Deletes an object and flushes its folder.
fn remove(dest: &Path) -> io::Result<()> {
    disk!(
        power_cut::Op::Remove(dest.to_owned()),
        std::fs::remove_file(dest)
    )?;
    sync_dir(dest.parent().expect("objects are in the folder"))
}

/// Creates a new staging file `<dest>#<n>`.
fn stage(dest: &Path) -> io::Result<(File, PathBuf)> {
    for n in 1.. {
        let mut staging = dest.as_os_str().to_owned();
        staging.push(format!("#{n}"));
        let staging = PathBuf::from(staging);
        match disk!(
            power_cut::Op::Create(staging.clone()),
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staging)
        ) {
            Ok(file) => return Ok((file, staging)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    unreachable!("some staging name is free")
}

/// Removes a staging file that was published or failed; one left behind (by a crash) is never
/// listed.
fn remove_staging(staging: &Path) {
    let _ = disk!(
        power_cut::Op::Remove(staging.to_owned()),
        std::fs::remove_file(staging)
    );
}

/// Flushes a folder's entries to disk.
fn sync_dir(dir: &Path) -> io::Result<()> {
    disk!(
        power_cut::Op::SyncDir(dir.to_owned()),
        File::open(dir)?.sync_all()
    )
}

/// An error of this store, naming the file.
fn storage_error(path: &Path, e: io::Error) -> object_store::Error {
    let path = path.display().to_string();
    match e.kind() {
        ErrorKind::NotFound => object_store::Error::NotFound {
            path,
            source: e.into(),
        },
        ErrorKind::AlreadyExists => object_store::Error::AlreadyExists {
            path,
            source: e.into(),
        },
        _ => object_store::Error::Generic {
            store: "Folder",
            source: format!("{path}: {e}").into(),
        },
    }
}

/// Runs blocking file-system calls off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> object_store::Result<T> + Send + 'static,
) -> object_store::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "Folder",
            source: e.into(),
        })?
}

impl std::fmt::Display for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Folder({})", self.root.display())
    }
}

#[async_trait]
impl ObjectStore for Folder {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let create = match opts.mode {
            PutMode::Overwrite => false,
            PutMode::Create => true,
            PutMode::Update(_) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "`put_opts` with mode `PutMode::Update`".into(),
                    implementer: self.to_string(),
                });
            }
        };
        let dest = self.files.path_to_filesystem(location)?;
        let folder = self.clone();
        blocking(move || {
            folder
                .write(&dest, &payload, create)
                .map_err(|e| storage_error(&dest, e))
        })
        .await?;
        Ok(PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        })
    }

    /// Parts are kept in memory and written as one object on completion (Cairn's objects are
    /// in memory whole anyway).
    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(Upload {
            folder: self.clone(),
            location: location.clone(),
            parts: vec![],
        }))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.files.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        let files = self.files.clone();
        locations
            .then(move |location| {
                let files = files.clone();
                async move {
                    let location = location?;
                    let path = files.path_to_filesystem(&location)?;
                    blocking(move || remove(&path).map_err(|e| storage_error(&path, e))).await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.files.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.files.list_with_delimiter(prefix).await
    }

    /// Not used by Cairn; `LocalFileSystem`'s, flushed.
    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.files.copy_opts(from, to, options).await
    }

    /// Not used by Cairn; `LocalFileSystem`'s, flushed.
    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.files.rename_opts(from, to, options).await
    }
}

/// A multipart upload to a folder: its parts, written as one object by `complete`.
#[derive(Debug)]
struct Upload {
    folder: Folder,
    location: ObjectPath,
    parts: Vec<PutPayload>,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.push(data);
        Box::pin(async { Ok(()) })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let payload: PutPayload = std::mem::take(&mut self.parts)
            .iter()
            .flat_map(|part| part.iter().cloned())
            .collect();
        self.folder
            .put_opts(&self.location, payload, PutOptions::default())
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.parts.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of `path` in the page cache, by util-linux's `fincore`.
    fn cached(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .expect("fincore (util-linux) runs");
        assert!(out.status.success(), "fincore: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Needs a disk file system under the temporary folder (tmpfs keeps every page).
    #[test]
    fn packs_leave_the_page_cache_once_on_disk_and_small_objects_stay() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Folder::new(dir.path()).unwrap();
        let pack = dir.path().join("data/ab/pack");
        let small = dir.path().join("snapshots/small");
        folder
            .write(&pack, &PutPayload::from(vec![7u8; 4 << 20]), true)
            .unwrap();
        folder
            .write(&small, &PutPayload::from(vec![7u8; 64 << 10]), true)
            .unwrap();
        assert_eq!(cached(&pack), 0, "a flushed pack leaves the page cache");
        assert_eq!(cached(&small), 64 << 10, "a small object stays");
        assert_eq!(std::fs::read(&pack).unwrap(), vec![7u8; 4 << 20]);
    }
}
