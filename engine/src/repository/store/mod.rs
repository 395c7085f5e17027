//! Where a repository's objects live: a local folder, an S3 bucket or an Azure Blob Storage
//! container, behind one synchronous [`Store`] (the engine's threads are not async; requests
//! run on a small tokio runtime). Every object's bytes pass the process's bandwidth limits
//! ([`bandwidth`]). Objects are named by their kind and id ([`ObjectKind`]).
//!
//! The lowest part of the repository layer: it uses the format, nothing else of the repository.

mod aws_profile;
mod azure;
pub mod bandwidth;
pub mod folder;
pub mod s3_api;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, HeaderMap, HeaderValue, ObjectStore, ObjectStoreExt, PutMode,
    PutPayload, RetryConfig,
};

use crate::error::{Error, Result};
use crate::format::config::ObjectLock;
use crate::format::id::Id;
use crate::repository::store::s3_api::{OpenUpload, S3Api};

/// Objects larger than this many MiB are uploaded in parts: `CAIRN_MULTIPART_MB` (5–4096),
/// else 32.
fn multipart_threshold() -> usize {
    crate::env_number("CAIRN_MULTIPART_MB", 5..=4096, 32) << 20
}

/// Size of one part of a multipart upload: a quarter of the threshold, at least S3's minimum of
/// 5 MiB.
fn part_size(threshold: usize) -> usize {
    (threshold / 4).max(5 << 20)
}

/// How failed requests are retried, with one budget: `object_store` retries a request that
/// fails (an error status, a connection that fails before the answer), and the store retries a
/// whole operation whose answer broke after its headers arrived (a list page, a get, a put cut
/// mid-body), which `object_store` does not, as well as the requests of [`S3Api`]. Both use the
/// same backoff and the same time limit; `CAIRN_S3_RETRIES` (0–100, else 8) and
/// `CAIRN_S3_BACKOFF_MS` (1–60000, else 200, the first wait) tune them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retries {
    /// Retries of one request (or one operation) after its first attempt.
    pub max_retries: usize,
    /// The first wait; each further one doubles, up to `max_backoff`.
    pub init_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
    /// No retry starts after this long.
    pub timeout: Duration,
}

impl Retries {
    /// The settings from the environment.
    pub fn from_env() -> Retries {
        let init = crate::env_number("CAIRN_S3_BACKOFF_MS", 1..=60_000, 200) as u64;
        Retries {
            max_retries: crate::env_number("CAIRN_S3_RETRIES", 0..=100, 8),
            init_backoff: Duration::from_millis(init),
            max_backoff: Duration::from_millis(init * 100),
            timeout: Duration::from_secs(240),
        }
    }

    /// The wait before retry number `attempt` (from 1).
    pub fn backoff(&self, attempt: usize) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        (self.init_backoff * factor).min(self.max_backoff)
    }

    /// Whether one more retry may start, `attempt` retries and `elapsed` into the operation.
    pub fn allow(&self, attempt: usize, elapsed: Duration) -> bool {
        attempt <= self.max_retries && elapsed < self.timeout
    }

    /// Runs `operation` until it succeeds, fails for good, or the budget is spent.
    async fn run<T, F, Fut>(&self, what: &ObjectPath, mut operation: F) -> object_store::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let start = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            match operation().await {
                Err(e) if broke_in_transit(&e) && self.allow(attempt + 1, start.elapsed()) => {
                    attempt += 1;
                    let wait = self.backoff(attempt);
                    tracing::info!(object = %what, attempt, "retrying after {e}");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// Whether a request failed in transit (the connection broke, before or after the answer's
/// headers), rather than with an answer: an answer (an error status) has already had
/// `object_store`'s retries, and one such as "not found" or "already exists" is final.
fn broke_in_transit(error: &object_store::Error) -> bool {
    let object_store::Error::Generic { source, .. } = error else {
        return false;
    };
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(e) = current {
        if e.downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Where a repository lives, as given by `--repo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local folder.
    Local(PathBuf),
    /// A bucket (and a prefix in it) of an S3-compatible store.
    S3 {
        /// `http(s)://host[:port]` when given in the location; else the AWS environment decides.
        endpoint: Option<String>,
        /// The bucket.
        bucket: String,
        /// Key prefix inside the bucket ("" for the bucket's root).
        prefix: String,
        /// An AWS profile whose credentials, region and endpoint this repository uses instead
        /// of the environment's (for the other side of a `copy`).
        profile: Option<String>,
    },
    /// A container (and a prefix in it) of Azure Blob Storage; the account, credentials and
    /// endpoint come from the Azure environment (see `repository::store::azure`).
    Azure {
        /// The container.
        container: String,
        /// Blob name prefix inside the container ("" for the container's root).
        prefix: String,
    },
}

impl Location {
    /// Parses a repository location: `s3:BUCKET[/PREFIX]`, `s3://BUCKET[/PREFIX]`,
    /// `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]` (restic's form), `azure:CONTAINER[/PREFIX]`
    /// (or `azure://…`), or a folder path, optionally prefixed `local:`.
    pub fn parse(s: &str) -> Result<Location> {
        if s.is_empty() {
            return Err(Error::Invalid(
                "no repository given: pass --repo or set CAIRN_REPOSITORY".into(),
            ));
        }
        if let Some(rest) = s.strip_prefix("azure:") {
            let path = rest.strip_prefix("//").unwrap_or(rest).trim_matches('/');
            let (container, prefix) = path.split_once('/').unwrap_or((path, ""));
            if container.is_empty() || container.contains(':') {
                return Err(Error::Invalid(format!(
                    "{s:?} names no container: write azure:CONTAINER/PREFIX (the account and endpoint come from AZURE_STORAGE_ACCOUNT_NAME or AZURE_STORAGE_CONNECTION_STRING)"
                )));
            }
            return Ok(Location::Azure {
                container: container.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        let Some(rest) = s.strip_prefix("s3:") else {
            return Ok(Location::Local(PathBuf::from(
                s.strip_prefix("local:").unwrap_or(s),
            )));
        };
        let (endpoint, path) = match ["http://", "https://"]
            .into_iter()
            .find(|scheme| rest.starts_with(scheme))
        {
            Some(scheme) => {
                let after = &rest[scheme.len()..];
                let (host, path) = after.split_once('/').unwrap_or((after, ""));
                (Some(format!("{scheme}{host}")), path)
            }
            None => (None, rest.strip_prefix("//").unwrap_or(rest)),
        };
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(Error::Invalid(format!(
                "{s:?} names no bucket: write s3:BUCKET/PREFIX or s3:https://HOST/BUCKET/PREFIX"
            )));
        }
        Ok(Location::S3 {
            endpoint,
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
            profile: None,
        })
    }

    /// This location reached with the credentials, region and endpoint of an AWS profile
    /// (S3 only; a folder is unchanged).
    pub fn with_aws_profile(self, name: Option<String>) -> Location {
        match self {
            Location::S3 {
                endpoint,
                bucket,
                prefix,
                profile,
            } => Location::S3 {
                endpoint,
                bucket,
                prefix,
                profile: name.or(profile),
            },
            other => other,
        }
    }

    /// Whether objects travel over the network (so caching them locally pays).
    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }

    /// Opens the store; `create` makes a missing local folder. With `lock`, every object is
    /// written with that retention, except the short-lived ones of [`Store::put_new_unlocked`].
    pub fn open(&self, create: bool, lock: Option<&ObjectLock>) -> Result<Store> {
        let (endpoint, bucket, prefix, profile) = match self {
            Location::Local(path) => return open_folder(path, create, lock),
            Location::Azure { container, prefix } => {
                return open_azure(container, prefix, create, lock);
            }
            Location::S3 {
                endpoint,
                bucket,
                prefix,
                profile,
            } => (endpoint, bucket, prefix, profile),
        };
        // one client without lock headers: for `locks/`, and for the calls of [`S3Api`]
        let builder = s3_builder(endpoint.as_deref(), bucket, None, profile.as_deref())?;
        let url = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".into());
        let options = ClientOptions::new().with_allow_http(allow_http(url.as_deref()));
        let s3 = builder.build()?;
        let api = S3Api::new(s3.clone(), &options, url, region, bucket, prefix)?;
        let plain = under_prefix(s3, prefix);
        let inner = match lock {
            Some(lock) => under_prefix(
                s3_builder(endpoint.as_deref(), bucket, Some(lock), profile.as_deref())?.build()?,
                prefix,
            ),
            None => plain.clone(),
        };
        Store::new(inner, plain, lock.copied(), Some(Arc::new(api)), true)
    }
}

/// Opens a container of Azure Blob Storage as a store; `create` makes the container if
/// missing. Azure's counterpart of Object Lock (version-level immutability policies) is not
/// supported, so a repository that asks for locks is refused rather than written unlocked.
fn open_azure(
    container: &str,
    prefix: &str,
    create: bool,
    lock: Option<&ObjectLock>,
) -> Result<Store> {
    if lock.is_some() {
        return Err(Error::Invalid(
            "object lock is not supported on Azure Blob Storage: Cairn cannot lock objects there (Azure's immutability policies), so it refuses to write a repository that asks for locks; use an S3 repository with Object Lock, or one without --object-lock".into(),
        ));
    }
    let builder = azure::builder(container, client_options(), retry_config())?;
    let azure = builder.clone().build()?;
    if create {
        let options = client_options().with_allow_http(true);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?
            .block_on(azure::create_container(&builder, &azure, &options))?;
    }
    let objects: Arc<dyn ObjectStore> = match prefix.is_empty() {
        true => Arc::new(azure),
        false => Arc::new(object_store::prefix::PrefixStore::new(azure, prefix)),
    };
    Store::new(objects.clone(), objects, None, None, true)
}

/// Opens a folder as a store; `create` makes it if missing.
fn open_folder(path: &std::path::Path, create: bool, lock: Option<&ObjectLock>) -> Result<Store> {
    if lock.is_some() {
        return Err(Error::Invalid(
            "object lock needs an S3 repository: use --repo s3:BUCKET/PREFIX on a bucket created with Object Lock".into(),
        ));
    }
    if create {
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
    } else if !path.is_dir() {
        return Err(Error::NoRepository {
            location: path.display().to_string(),
        });
    }
    let folder: Arc<dyn ObjectStore> = Arc::new(folder::Folder::new(path)?);
    let mut store = Store::new(folder.clone(), folder, None, None, false)?;
    // resolved once, as the folder store resolves its root
    store.folder = Some(std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?);
    Ok(store)
}

/// The bucket's objects under `prefix` ("" for all).
fn under_prefix(s3: AmazonS3, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } => {
                write!(f, "s3:")?;
                if let Some(e) = endpoint {
                    write!(f, "{e}/")?;
                }
                write!(f, "{bucket}")?;
                if !prefix.is_empty() {
                    write!(f, "/{prefix}")?;
                }
                Ok(())
            }
            Location::Azure { container, prefix } => match prefix.is_empty() {
                true => write!(f, "azure:{container}"),
                false => write!(f, "azure:{container}/{prefix}"),
            },
        }
    }
}

/// The directories of a repository's objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// `keys/`
    Key,
    /// `data/`
    Pack,
    /// `index/`
    Index,
    /// `snapshots/`
    Snapshot,
    /// `marks/`: packs marked for deletion by garbage collection.
    Mark,
    /// `checks/`: records of `check` runs.
    CheckRecord,
    /// `drills/`: records of restore drills.
    DrillRecord,
    /// `sessions/`: writers running now (named by a random id, not by content).
    Session,
}

impl ObjectKind {
    /// Every kind.
    pub const ALL: [ObjectKind; 8] = [
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Mark,
        ObjectKind::CheckRecord,
        ObjectKind::DrillRecord,
        ObjectKind::Session,
    ];

    /// The top-level directory of this kind.
    pub fn dir(self) -> &'static str {
        match self {
            ObjectKind::Key => "keys",
            ObjectKind::Pack => "data",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Mark => "marks",
            ObjectKind::CheckRecord => "checks",
            ObjectKind::DrillRecord => "drills",
            ObjectKind::Session => "sessions",
        }
    }

    /// The singular name of this kind, for messages.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Key => "key",
            ObjectKind::Pack => "pack",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshot",
            ObjectKind::Mark => "mark",
            ObjectKind::CheckRecord => "check record",
            ObjectKind::DrillRecord => "drill record",
            ObjectKind::Session => "writer session",
        }
    }

    /// The most bytes an object of this kind can hold; larger ones are refused unread. Packs:
    /// blob offsets are 32-bit, so the blobs take less than 4 GiB, and the header (45 bytes an
    /// entry, each for a blob of 28 bytes or more, sealed) less than as much again. The others
    /// are far larger than any Cairn writes: an index segment of 1 GiB lists some 20 million
    /// blobs (gc writes at most 500 000 entries a segment, a backup 64 packs).
    pub fn max_size(self) -> u64 {
        const MIB: u64 = 1 << 20;
        match self {
            ObjectKind::Key | ObjectKind::Session => MIB,
            ObjectKind::Snapshot | ObjectKind::CheckRecord | ObjectKind::DrillRecord => 64 * MIB,
            ObjectKind::Index | ObjectKind::Mark => 1024 * MIB,
            ObjectKind::Pack => 8 * 1024 * MIB,
        }
    }

    /// The object name of `id`.
    pub fn path(self, id: &Id) -> ObjectPath {
        let hex = id.to_hex();
        match self {
            ObjectKind::Pack => ObjectPath::from(format!("data/{}/{hex}", &hex[..2])),
            _ => ObjectPath::from(format!("{}/{hex}", self.dir())),
        }
    }
}

/// Builds an S3 client from the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity, and the
/// shared files for `AWS_PROFILE`), or from the repository's own `profile` alone, with retries
/// and path-style addressing; an endpoint in the location wins.
fn s3_builder(
    endpoint: Option<&str>,
    bucket: &str,
    lock: Option<&ObjectLock>,
    profile: Option<&str>,
) -> Result<AmazonS3Builder> {
    let mut builder = match profile {
        Some(name) => aws_profile::apply(AmazonS3Builder::new(), name, true)?,
        None if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() => {
            let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
            aws_profile::apply(AmazonS3Builder::from_env(), &name, false)?
        }
        None => AmazonS3Builder::from_env(),
    }
    .with_bucket_name(bucket);
    if let Some(e) = endpoint {
        builder = builder.with_endpoint(e);
    }
    let endpoint_url = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    let mut headers = HeaderMap::new();
    // Buckets with a default retention refuse uploads without a checksum header.
    headers.insert(
        "x-amz-sdk-checksum-algorithm",
        HeaderValue::from_static("SHA256"),
    );
    if let Some(lock) = lock {
        headers.insert(
            "x-amz-object-lock-mode",
            HeaderValue::from_static(lock.mode.header()),
        );
        let until = lock
            .retain_until(Utc::now())
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        headers.insert(
            "x-amz-object-lock-retain-until-date",
            HeaderValue::from_str(&until).expect("a date is a valid header"),
        );
    }
    let options = client_options()
        .with_allow_http(allow_http(endpoint_url.as_deref()))
        .with_default_headers(headers);
    Ok(builder
        .with_virtual_hosted_style_request(false)
        .with_checksum_algorithm(Checksum::SHA256)
        .with_client_options(options)
        .with_retry(retry_config()))
}

/// The timeouts of a remote store's client.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout(Duration::from_secs(300))
        .with_connect_timeout(Duration::from_secs(20))
}

/// `object_store`'s retries of one request, from the store's [`Retries`].
fn retry_config() -> RetryConfig {
    let retries = Retries::from_env();
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: retries.init_backoff,
            max_backoff: retries.max_backoff,
            base: 2.0,
        },
        max_retries: retries.max_retries,
        retry_timeout: retries.timeout,
    }
}

/// Reads `range` of the object at `path` in the folder repository at `folder` from its file
/// into the start of `buf` (grown if need be, never shrunk): the number of bytes the folder
/// store returns, fewer if the file ends first, and a missing object is the store's "not found".
fn read_file_range(
    folder: &std::path::Path,
    path: &ObjectPath,
    range: Range<u64>,
    buf: &mut Vec<u8>,
) -> Result<usize> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file_path = folder.join(path.as_ref());
    // never through a symlink, never waiting on a FIFO planted in the folder
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(&file_path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Storage(object_store::Error::NotFound {
                path: path.to_string(),
                source: e.into(),
            }),
            _ => Error::io(&file_path, e),
        })?;
    if !file
        .metadata()
        .map_err(|e| Error::io(&file_path, e))?
        .is_file()
    {
        return Err(Error::damaged("object", path, "not a regular file"));
    }
    let want = range.end.saturating_sub(range.start) as usize;
    if buf.len() < want {
        // not a resize: memory fresh from the system comes zeroed, and is not written twice
        *buf = vec![0; want];
    }
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buf[filled..want], range.start + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(&file_path, e)),
        }
    }
    Ok(filled)
}

/// An error unless `got` bytes are the whole of `range` of the object at `path`.
fn whole_range(path: &ObjectPath, range: &Range<u64>, got: usize) -> Result<()> {
    let want = range.end.saturating_sub(range.start);
    if got as u64 != want {
        return Err(Error::damaged(
            "object",
            path,
            format!(
                "the store returned {got} of the {want} bytes asked at offset {}: it is shorter than the index says (truncated)",
                range.start
            ),
        ));
    }
    Ok(())
}

/// Whether plain HTTP may be used: for an `http://` endpoint, or with `AWS_ALLOW_HTTP=true`.
fn allow_http(endpoint: Option<&str>) -> bool {
    endpoint.is_some_and(|e| e.starts_with("http://"))
        || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true")
}

/// The bytes [`Store::get_range_into`] read: in the caller's buffer, or as the store gave them.
pub enum RangeRead<'b> {
    /// Read into the caller's buffer.
    Buffer(&'b [u8]),
    /// As the store returned them.
    Store(bytes::Bytes),
}

impl std::ops::Deref for RangeRead<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            RangeRead::Buffer(b) => b,
            RangeRead::Store(b) => b,
        }
    }
}

/// Thin synchronous access to the object store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The same store without object-lock headers.
    plain: Arc<dyn ObjectStore>,
    rt: Arc<tokio::runtime::Runtime>,
    lock: Option<ObjectLock>,
    /// The calls `object_store` does not make (S3 only).
    s3: Option<Arc<S3Api>>,
    /// Whether objects travel over the network.
    remote: bool,
    connections: usize,
    retries: Retries,
    /// The folder of a folder repository.
    folder: Option<PathBuf>,
}

impl Store {
    fn new(
        inner: Arc<dyn ObjectStore>,
        plain: Arc<dyn ObjectStore>,
        lock: Option<ObjectLock>,
        s3: Option<Arc<S3Api>>,
        remote: bool,
    ) -> Result<Store> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-io")
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let connections =
            crate::env_number("CAIRN_CONNECTIONS", 1..=256, if remote { 8 } else { 2 });
        Ok(Store {
            inner,
            plain,
            rt: Arc::new(rt),
            lock,
            s3,
            remote,
            connections,
            retries: Retries::from_env(),
            folder: None,
        })
    }

    /// Whether objects travel over the network.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// How many requests to keep in flight (pack uploads; pack downloads of a restore from a
    /// remote store): `CAIRN_CONNECTIONS` (1–256), else 8 for a remote store and 2 for a
    /// folder. Each holds a pack in memory.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// The Object Lock every object is written with, if any.
    pub fn lock(&self) -> Option<ObjectLock> {
        self.lock
    }

    /// When an object's lock ends (`None`: no lock, or no such object).
    pub fn locked_until(&self, path: &ObjectPath) -> Result<Option<DateTime<Utc>>> {
        match (&self.lock, &self.s3) {
            (Some(_), Some(api)) => self.rt.block_on(api.retain_until(path)),
            _ => Ok(None),
        }
    }

    /// Extends an object's lock to `until`, in the repository's lock mode.
    pub fn extend_lock(&self, path: &ObjectPath, until: DateTime<Utc>) -> Result<()> {
        match (&self.lock, &self.s3) {
            (Some(lock), Some(api)) => self.rt.block_on(api.extend(path, lock.mode, until)),
            _ => Ok(()),
        }
    }

    /// The store's clock, which dates what it stores: for S3 the `Date` header of the server's
    /// answer to a HeadObject of `config`; for a folder the modification time the file system
    /// gives a new file (an empty `locks/clock-<random>`, deleted at once), which on a network
    /// file system is the server's. Only whole seconds may be relied on. Snapshot times and
    /// `forget` are checked against it, so that one host's wrong clock cannot date a snapshot
    /// in the future (see [`crate::repository::clock`]).
    pub fn now(&self) -> Result<DateTime<Utc>> {
        if let Some(api) = &self.s3 {
            return self.rt.block_on(api.date(&ObjectPath::from("config")));
        }
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        let probe = ObjectPath::from(format!("locks/clock-{}", hex::encode(random)));
        self.put_new_unlocked(&probe, Vec::new())?;
        let written = self.rt.block_on(self.plain.head(&probe));
        self.delete_unlocked(&probe)?;
        Ok(written?.last_modified)
    }

    /// Stores an object (replacing any object of that name).
    pub fn put(&self, path: &ObjectPath, bytes: Vec<u8>) -> Result<()> {
        self.rt
            .block_on(put(self.inner.clone(), self.retries, path.clone(), bytes))
    }

    /// Starts storing an object in the background.
    pub fn put_async(
        &self,
        path: ObjectPath,
        bytes: Vec<u8>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        self.rt
            .spawn(put(self.inner.clone(), self.retries, path, bytes))
    }

    /// Waits for a background task.
    pub fn wait<T>(&self, task: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
        self.rt
            .block_on(task)
            .map_err(|e| Error::Invalid(format!("background upload failed: {e}")))?
    }

    /// Stores a short-lived object (a writer session) without any object lock, replacing any
    /// object of that name, so that it can be deleted when done.
    pub fn put_unlocked(&self, path: &ObjectPath, bytes: Vec<u8>) -> Result<()> {
        self.rt.block_on(bandwidth::upload(bytes.len()));
        let payload = PutPayload::from(bytes);
        self.rt.block_on(
            self.retries
                .run(path, || self.plain.put(path, payload.clone())),
        )?;
        Ok(())
    }

    /// When the store last wrote an object, in the store's own clock (`None`: no such object).
    pub fn modified(&self, path: &ObjectPath) -> Result<Option<DateTime<Utc>>> {
        match self
            .rt
            .block_on(self.retries.run(path, || self.plain.head(path)))
        {
            Ok(meta) => Ok(Some(meta.last_modified)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores an object only if no object of that name exists.
    pub fn put_new(&self, path: &ObjectPath, bytes: Vec<u8>) -> Result<()> {
        self.create(&self.inner, path, bytes)
    }

    /// Stores a short-lived object (a lock) only if no object of that name exists, without any
    /// object lock, so that it can be deleted when done.
    pub fn put_new_unlocked(&self, path: &ObjectPath, bytes: Vec<u8>) -> Result<()> {
        self.create(&self.plain, path, bytes)
    }

    /// A create-only put. When an attempt broke in transit, the store may have stored the
    /// object before the answer was lost, so that the retry finds it there: an object found
    /// with exactly these bytes is this put's own.
    fn create(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &ObjectPath,
        bytes: Vec<u8>,
    ) -> Result<()> {
        self.rt.block_on(bandwidth::upload(bytes.len()));
        let payload = PutPayload::from(bytes.clone());
        let mut attempts = 0;
        let result = self.rt.block_on(self.retries.run(path, || {
            attempts += 1;
            store.put_opts(path, payload.clone(), PutMode::Create.into())
        }));
        match result {
            Err(object_store::Error::AlreadyExists { .. })
                if attempts > 1 && self.get_from(store, path)?.as_deref() == Some(&bytes[..]) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
            Ok(_) => Ok(()),
        }
    }

    /// Reads a content-named object (every object but `config` and `locks/`) and checks that
    /// its bytes hash to its name.
    pub fn get_named(&self, kind: ObjectKind, id: &Id) -> Result<Vec<u8>> {
        let bytes = self
            .get_bounded(&kind.path(id), kind.max_size())?
            .ok_or_else(|| Error::Missing {
                kind: kind.name(),
                id: id.to_hex(),
            })?;
        if Id::of_stored(&bytes) != *id {
            return Err(Error::damaged(
                kind.name(),
                id,
                "its contents do not hash to its name",
            ));
        }
        Ok(bytes)
    }

    /// Reads a whole object; `None` if it does not exist.
    pub fn get(&self, path: &ObjectPath) -> Result<Option<Vec<u8>>> {
        self.get_from(&self.inner, path)
    }

    fn get_from(&self, store: &Arc<dyn ObjectStore>, path: &ObjectPath) -> Result<Option<Vec<u8>>> {
        let whole = self.retries.run(path, || async {
            let bytes = store.get(path).await?.bytes().await?;
            bandwidth::download(bytes.len()).await;
            Ok(bytes.to_vec())
        });
        match self.rt.block_on(whole) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a whole object of at most `max` bytes; `None` if it does not exist. A larger one is
    /// refused by the size the store gives before its bytes are read, so that no object, however
    /// large, is taken into memory beyond what its kind can hold.
    pub fn get_bounded(&self, path: &ObjectPath, max: u64) -> Result<Option<Vec<u8>>> {
        self.rt.block_on(async {
            match self.inner.get(path).await {
                Ok(r) if r.meta.size > max => Err(Error::damaged(
                    "object",
                    path,
                    format!(
                        "it is {} bytes, more than an object of its kind can be ({max} bytes), so it was not read: if it is not Cairn's, delete it",
                        r.meta.size
                    ),
                )),
                Ok(r) => {
                    let bytes = r.bytes().await?;
                    bandwidth::download(bytes.len()).await;
                    Ok(Some(bytes.to_vec()))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Reads part of an object (as the store returned it: no copy). A store shortens a range
    /// that runs past the end of the object without complaint: that is an error here.
    pub fn get_range(&self, path: &ObjectPath, range: Range<u64>) -> Result<bytes::Bytes> {
        let mut buf = Vec::new();
        let n = match self.get_range_into(path, range, &mut buf)? {
            RangeRead::Store(got) => return Ok(got),
            RangeRead::Buffer(got) => got.len(),
        };
        buf.truncate(n);
        Ok(buf.into())
    }

    /// Reads part of an object as [`Store::get_range`] does. A folder's files are read straight
    /// into the memory of `buf` (at its start), so that a buffer used again costs no new memory:
    /// each fresh buffer of 4 MiB or more costs a page fault for every 4 KiB written to it.
    /// Other stores' bytes are returned as the store gave them, never copied.
    pub fn get_range_into<'b>(
        &self,
        path: &ObjectPath,
        range: Range<u64>,
        buf: &'b mut Vec<u8>,
    ) -> Result<RangeRead<'b>> {
        let got = match &self.folder {
            Some(folder) if Self::reads_files() => {
                let n = read_file_range(folder, path, range.clone(), buf)?;
                RangeRead::Buffer(&buf[..n])
            }
            _ => RangeRead::Store(self.get_range_remote(path, range.clone())?),
        };
        whole_range(path, &range, got.len())?;
        Ok(got)
    }

    /// Whether a folder store reads its files directly: when no download limit is to be
    /// waited for, straight from the file, not through the runtime's threads.
    fn reads_files() -> bool {
        bandwidth::limits().download.is_none()
    }

    /// Reads part of an object through `object_store`, with retries and the download limit.
    fn get_range_remote(&self, path: &ObjectPath, range: Range<u64>) -> Result<bytes::Bytes> {
        Ok(self.rt.block_on(async {
            let got = self
                .retries
                .run(path, || self.inner.get_range(path, range.clone()))
                .await?;
            bandwidth::download(got.len()).await;
            Ok::<_, object_store::Error>(got)
        })?)
    }

    /// Lists the ids of the objects of one kind.
    pub fn ids(&self, kind: ObjectKind) -> Result<Vec<Id>> {
        Ok(self.list(kind)?.into_iter().map(|(id, _)| id).collect())
    }

    /// Lists the ids of the objects of one kind, with their sizes.
    pub fn list(&self, kind: ObjectKind) -> Result<Vec<(Id, u64)>> {
        Ok(self
            .list_dated(kind)?
            .into_iter()
            .map(|(id, size, _)| (id, size))
            .collect())
    }

    /// Lists the ids of the objects of one kind, with their sizes and modification times.
    pub fn list_dated(&self, kind: ObjectKind) -> Result<Vec<(Id, u64, DateTime<Utc>)>> {
        let prefix = ObjectPath::from(kind.dir());
        // a listing that breaks (a page cut mid-body) is listed again from the start
        let metas: Vec<_> = self.rt.block_on(self.retries.run(&prefix, || {
            self.inner.list(Some(&prefix)).try_collect::<Vec<_>>()
        }))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                Some((
                    m.location.filename()?.parse().ok()?,
                    m.size,
                    m.last_modified,
                ))
            })
            .collect())
    }

    /// Deletes an object; one already gone is not an error (deletions are retried after crashes).
    /// In a repository with an object lock, an object still locked (as its HeadObject says)
    /// gives [`Error::Locked`] and is left alone: S3 would only hide it behind a delete marker.
    pub fn delete(&self, path: &ObjectPath) -> Result<()> {
        if self
            .locked_until(path)?
            .is_some_and(|until| until > Utc::now())
        {
            return Err(Error::Locked {
                object: path.to_string(),
            });
        }
        self.delete_unlocked(path)
    }

    /// Removes the staging files (`NAME#N`) that uploads to a folder repository left when they
    /// were killed mid-write (readers never see them), once unchanged for `age`, so that one
    /// still being written stays; returns how many. Nothing for S3.
    pub fn remove_staging_leftovers(&self, age: Duration) -> Result<u64> {
        fn walk(dir: &std::path::Path, age: Duration, removed: &mut u64) -> Result<()> {
            for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                let entry = entry.map_err(|e| Error::io(dir, e))?;
                let path = entry.path();
                let meta = entry.metadata().map_err(|e| Error::io(&path, e))?;
                if meta.is_dir() {
                    walk(&path, age, removed)?;
                    continue;
                }
                let staging = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.split_once('#'))
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                let idle = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|idle| idle > age);
                if staging && idle {
                    tracing::info!(file = %path.display(), "removing the staging file of a killed upload");
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                    *removed += 1;
                }
            }
            Ok(())
        }
        let mut removed = 0;
        if let Some(folder) = &self.folder {
            walk(folder, age, &mut removed)?;
        }
        Ok(removed)
    }

    /// The multipart uploads in progress under the repository (S3 only: a folder has none).
    pub fn open_uploads(&self) -> Result<Vec<OpenUpload>> {
        match &self.s3 {
            Some(api) => self.rt.block_on(api.open_uploads()),
            None => Ok(vec![]),
        }
    }

    /// Aborts `uploads`, freeing their parts.
    pub fn abort_uploads(&self, uploads: &[OpenUpload]) -> Result<()> {
        let Some(api) = &self.s3 else {
            return Ok(());
        };
        for upload in uploads {
            tracing::info!(object = %upload.key, "aborting a multipart upload left open");
            self.rt.block_on(api.abort(upload))?;
        }
        Ok(())
    }

    /// Deletes an object written by [`Store::put_new_unlocked`] (or, after checking, one whose
    /// lock has passed).
    pub fn delete_unlocked(&self, path: &ObjectPath) -> Result<()> {
        match self
            .rt
            .block_on(self.retries.run(path, || self.inner.delete(path)))
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(object_store::Error::PermissionDenied { .. }) if self.lock.is_some() => {
                Err(Error::Locked {
                    object: path.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Uploads one object, in parts when it is large; the whole upload is retried when it broke in
/// transit.
async fn put(
    inner: Arc<dyn ObjectStore>,
    retries: Retries,
    path: ObjectPath,
    bytes: Vec<u8>,
) -> Result<()> {
    tracing::debug!(object = %path, bytes = bytes.len(), "storing");
    bandwidth::upload(bytes.len()).await;
    let threshold = multipart_threshold();
    let bytes = bytes::Bytes::from(bytes);
    if bytes.len() <= threshold {
        let payload = PutPayload::from(bytes);
        retries
            .run(&path, || inner.put(&path, payload.clone()))
            .await?;
        return Ok(());
    }
    let part = part_size(threshold);
    retries
        .run(&path, || put_in_parts(&inner, &path, &bytes, part))
        .await?;
    Ok(())
}

/// One multipart upload of `bytes`; a failed one is aborted, so that its parts do not stay
/// stored (and billed).
async fn put_in_parts(
    inner: &Arc<dyn ObjectStore>,
    path: &ObjectPath,
    bytes: &bytes::Bytes,
    part: usize,
) -> object_store::Result<()> {
    let mut upload = inner.put_multipart(path).await?;
    let parts: Vec<_> = (0..bytes.len())
        .step_by(part)
        .map(|start| {
            let end = (start + part).min(bytes.len());
            upload.put_part(PutPayload::from(bytes.slice(start..end)))
        })
        .collect();
    let result = match futures::future::try_join_all(parts).await {
        Ok(_) => upload.complete().await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = &result
        && let Err(abort) = upload.abort().await
    {
        tracing::warn!(object = %path, "could not abort the failed upload ({e}): {abort}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: Option<&str>, bucket: &str, prefix: &str) -> Location {
        Location::S3 {
            endpoint: endpoint.map(str::to_owned),
            bucket: bucket.into(),
            prefix: prefix.into(),
            profile: None,
        }
    }

    #[test]
    fn ranges_read_into_a_used_buffer_are_exactly_the_bytes_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Location::Local(dir.path().into()).open(true, None).unwrap();
        let (long, short): (Vec<u8>, Vec<u8>) = ((0..5000).map(|i| i as u8).collect(), vec![9; 50]);
        let (a, b) = (
            ObjectKind::Pack.path(&Id::of_stored(&long)),
            ObjectKind::Pack.path(&Id::of_stored(&short)),
        );
        store.put(&a, long.clone()).unwrap();
        store.put(&b, short.clone()).unwrap();
        let mut buf = Vec::new();
        let got = store.get_range_into(&a, 100..4100, &mut buf).unwrap();
        assert!(matches!(got, RangeRead::Buffer(_)));
        assert_eq!(&*got, &long[100..4100]);
        // a shorter read from another object into the grown buffer: its bytes alone
        let got = store.get_range_into(&b, 10..20, &mut buf).unwrap();
        assert_eq!(&*got, &short[10..20]);
        assert_eq!(store.get_range(&b, 10..20).unwrap(), &short[10..20]);
        // a range past the object's end is an error, not the buffer's old bytes
        assert!(store.get_range_into(&b, 0..51, &mut buf).is_err());
        assert!(store.get_range(&b, 0..51).is_err());
        assert!(store.get_range_into(&b, 49..4000, &mut buf).is_err());
    }

    #[test]
    fn locations_parse_in_every_form() {
        let parse = |s: &str| Location::parse(s).unwrap();
        assert_eq!(parse("/srv/repo"), Location::Local("/srv/repo".into()));
        assert_eq!(parse("local:rel/repo"), Location::Local("rel/repo".into()));
        assert_eq!(parse("s3:bucket"), s3(None, "bucket", ""));
        assert_eq!(parse("s3:bucket/a/b/"), s3(None, "bucket", "a/b"));
        assert_eq!(parse("s3://bucket/a"), s3(None, "bucket", "a"));
        assert_eq!(
            parse("s3:http://127.0.0.1:9000/bucket/a"),
            s3(Some("http://127.0.0.1:9000"), "bucket", "a")
        );
        assert_eq!(
            parse("s3:https://s3.example.net/bucket"),
            s3(Some("https://s3.example.net"), "bucket", "")
        );
        assert_eq!(
            parse("s3:https://s3.example.net/b/p").to_string(),
            "s3:https://s3.example.net/b/p"
        );
        let azure = |container: &str, prefix: &str| Location::Azure {
            container: container.into(),
            prefix: prefix.into(),
        };
        assert_eq!(parse("azure:backups"), azure("backups", ""));
        assert_eq!(parse("azure:backups/a/b/"), azure("backups", "a/b"));
        assert_eq!(parse("azure://backups/a"), azure("backups", "a"));
        assert_eq!(parse("azure:backups/a").to_string(), "azure:backups/a");
        assert!(parse("azure:backups").is_remote());
        for bad in [
            "",
            "s3:",
            "s3://",
            "s3:https://host/",
            "azure:",
            "azure://",
            "azure:https://host/c",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad:?}");
        }
    }
}
