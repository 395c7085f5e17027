//! Raw access to a test repository's objects, wherever it lives: a local folder, a fresh
//! bucket on the S3 server the test script started (when `CAIRN_TEST_S3` is set, with the
//! `AWS_*` variables that reach it), or a fresh container of the Azurite emulator it started
//! (when `CAIRN_TEST_AZURE` is set, with `AZURE_STORAGE_USE_EMULATOR` and
//! `AZURITE_BLOB_STORAGE_URL`). Tests use it to damage, plant and count objects.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// One repository's objects.
#[derive(Clone)]
pub struct Backend {
    /// The location, as `--repo` takes it.
    pub location: String,
    /// The bucket (S3) or container (Azure).
    pub bucket: Option<String>,
    store: Arc<dyn ObjectStore>,
    rt: Arc<tokio::runtime::Runtime>,
}

/// Whether this test run puts repositories on S3.
pub fn on_s3() -> bool {
    std::env::var_os("CAIRN_TEST_S3").is_some()
}

/// Whether this test run puts repositories in containers of Azurite.
pub fn on_azure() -> bool {
    std::env::var_os("CAIRN_TEST_AZURE").is_some()
}

/// A name no other bucket or container of this run has (valid for both: lower case, digits
/// and hyphens, at most 63 characters).
pub fn fresh_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    )
}

/// The S3 server's endpoint (from `AWS_ENDPOINT_URL`).
pub fn s3_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("CAIRN_TEST_S3 runs set AWS_ENDPOINT_URL")
}

/// Creates a bucket on the test server (moto does not check signatures, so a plain request
/// does); with `lock`, the bucket has S3 Object Lock enabled (and so versioning).
pub fn create_bucket(lock: bool) -> String {
    let name = fresh_name();
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sf", "-X", "PUT"]);
    if lock {
        curl.args(["-H", "x-amz-bucket-object-lock-enabled: true"]);
    }
    let status = curl
        .arg(format!("{}/{name}", s3_endpoint()))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "cannot create bucket {name}");
    name
}

impl Backend {
    /// A new, empty place for a repository: `folder` (not created), a new bucket on S3 when
    /// the run is on S3 (with Object Lock enabled if `lock`), or a new container of Azurite
    /// (created as `cairn init` does) when the run is on Azure.
    pub fn fresh(folder: &Path, lock: bool) -> Backend {
        if on_s3() || lock {
            Backend::s3(&create_bucket(lock), "repo")
        } else if on_azure() {
            let azure = Backend::azure(&fresh_name(), "repo");
            cairn_engine::repository::store::Location::parse(&azure.location)
                .unwrap()
                .open(true, None)
                .unwrap();
            azure
        } else {
            Backend::local(folder)
        }
    }

    /// A repository folder.
    pub fn local(folder: &Path) -> Backend {
        std::fs::create_dir_all(folder).unwrap();
        let store = object_store::local::LocalFileSystem::new_with_prefix(folder).unwrap();
        std::fs::remove_dir(folder).unwrap();
        Backend {
            location: folder.to_str().unwrap().to_owned(),
            bucket: None,
            store: Arc::new(store),
            rt: runtime(),
        }
    }

    /// A prefix in a bucket of the test S3 server.
    pub fn s3(bucket: &str, prefix: &str) -> Backend {
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(true)
            .with_checksum_algorithm(Checksum::SHA256)
            .build()
            .unwrap();
        Backend {
            location: format!("s3:{bucket}/{prefix}"),
            bucket: Some(bucket.to_owned()),
            store: Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)),
            rt: runtime(),
        }
    }

    /// A prefix in a container of the test Azurite (which need not exist yet).
    pub fn azure(container: &str, prefix: &str) -> Backend {
        let azure = MicrosoftAzureBuilder::from_env()
            .with_container_name(container)
            .build()
            .unwrap();
        Backend {
            location: format!("azure:{container}/{prefix}"),
            bucket: Some(container.to_owned()),
            store: Arc::new(object_store::prefix::PrefixStore::new(azure, prefix)),
            rt: runtime(),
        }
    }

    /// Begins a multipart upload of `name` with one part, and leaves it open, as a writer
    /// killed mid-upload does.
    pub fn leave_upload_open(&self, name: &str) {
        self.rt.block_on(async {
            let mut upload = self
                .store
                .put_multipart(&ObjectPath::from(name))
                .await
                .unwrap();
            upload.put_part(vec![7u8; 5 << 20].into()).await.unwrap();
        });
    }

    /// Settings a `cairn` process needs to reach this repository.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        std::env::vars()
            .filter(|(k, _)| {
                ["AWS_", "AZURE_", "AZURITE_"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .collect()
    }

    /// The names of the objects under `prefix` ("" for all), sorted.
    pub fn names(&self, prefix: &str) -> Vec<String> {
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let metas: Vec<_> = self
            .rt
            .block_on(self.store.list(prefix.as_ref()).try_collect::<Vec<_>>())
            .unwrap_or_default();
        let mut names: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        names.sort();
        names
    }

    /// Total bytes of the objects under `prefix`.
    pub fn size(&self, prefix: &str) -> u64 {
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        self.rt
            .block_on(self.store.list(prefix.as_ref()).try_collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .map(|m| m.size)
            .sum()
    }

    /// Whether an object exists.
    pub fn exists(&self, name: &str) -> bool {
        self.rt
            .block_on(self.store.head(&ObjectPath::from(name)))
            .is_ok()
    }

    /// An object's bytes.
    pub fn read(&self, name: &str) -> Vec<u8> {
        self.rt
            .block_on(async { self.store.get(&ObjectPath::from(name)).await?.bytes().await })
            .unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
            .to_vec()
    }

    /// The bytes of one version of an object (S3 with versioning).
    pub fn read_version(&self, name: &str, version: &str) -> Vec<u8> {
        let options = object_store::GetOptions {
            version: Some(version.to_owned()),
            ..Default::default()
        };
        self.rt
            .block_on(async {
                self.store
                    .get_opts(&ObjectPath::from(name), options)
                    .await?
                    .bytes()
                    .await
            })
            .unwrap_or_else(|e| panic!("cannot read {name} version {version}: {e}"))
            .to_vec()
    }

    /// Writes (or replaces) an object.
    pub fn write(&self, name: &str, bytes: Vec<u8>) {
        self.rt
            .block_on(
                self.store
                    .put(&ObjectPath::from(name), PutPayload::from(bytes)),
            )
            .unwrap_or_else(|e| panic!("cannot write {name}: {e}"));
    }

    /// Deletes an object; the error, if the store refuses.
    pub fn try_delete(&self, name: &str) -> Result<(), object_store::Error> {
        self.rt.block_on(self.store.delete(&ObjectPath::from(name)))
    }

    /// Deletes an object.
    pub fn delete(&self, name: &str) {
        self.try_delete(name)
            .unwrap_or_else(|e| panic!("cannot delete {name}: {e}"));
    }

    /// Copies every object into `other`.
    pub fn copy_to(&self, other: &Backend) {
        for name in self.names("") {
            other.write(&name, self.read(&name));
        }
    }
}

fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    )
}
