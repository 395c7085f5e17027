//! The S3 calls `object_store` does not make: reading an object's Object Lock retention (from
//! HeadObject's `x-amz-object-lock-retain-until-date`, which every implementation answers,
//! unlike GetObjectRetention), extending it (PutObjectRetention), reading the server's clock
//! (the `Date` header of an answer), and listing and aborting the multipart uploads a killed
//! process left open (ListMultipartUploads, AbortMultipartUpload). Requests are signed with `object_store`'s own SigV4 signer
//! and credentials and sent through its client.

use base64::Engine;
use chrono::{DateTime, Utc};
use md5::Digest;
use object_store::ClientOptions;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequest, ReqwestConnector};
use object_store::path::Path as ObjectPath;

use crate::error::{Error, Result};
use crate::format::config::LockMode;
use crate::repository::store::Retries;

/// A multipart upload in progress under the repository's prefix.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpenUpload {
    /// The object it would create (the bucket's key, prefix included).
    pub key: String,
    /// The upload's id.
    pub upload_id: String,
}

/// One page of a ListMultipartUploads answer.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadsPage {
    #[serde(default, rename = "Upload")]
    uploads: Vec<OpenUpload>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

/// Encodes a query value as SigV4 wants it (every byte but the unreserved ones).
fn query_value(v: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(v, RESERVED).to_string()
}

/// Requests to one bucket and prefix.
#[derive(Debug)]
pub struct S3Api {
    s3: AmazonS3,
    http: HttpClient,
    /// `https://host[:port]/bucket` (path-style addressing).
    base: String,
    prefix: String,
    region: String,
    retries: Retries,
}

impl S3Api {
    /// Requests through the client and credentials of `s3`.
    pub fn new(
        s3: AmazonS3,
        options: &ClientOptions,
        endpoint: Option<String>,
        region: String,
        bucket: &str,
        prefix: &str,
    ) -> Result<S3Api> {
        let endpoint = endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        Ok(S3Api {
            s3,
            http: ReqwestConnector::default().connect(options)?,
            base: format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            prefix: prefix.to_owned(),
            region,
            retries: Retries::from_env(),
        })
    }

    fn url(&self, path: &ObjectPath) -> String {
        match self.prefix.is_empty() {
            true => format!("{}/{path}", self.base),
            false => format!("{}/{}/{path}", self.base, self.prefix),
        }
    }

    /// Signs and sends the request `make` builds, again (with the store's [`Retries`]) while
    /// the connection fails or the server answers 5xx or 429 (SlowDown); returns the last answer.
    async fn send(
        &self,
        make: impl Fn() -> HttpRequest,
    ) -> Result<object_store::client::HttpResponse> {
        let start = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            let mut request = make();
            let credential = self.s3.credentials().get_credential().await?;
            AwsAuthorizer::new(&credential, "s3", &self.region)
                .try_authorize(&mut request, None)?;
            let result = self.http.execute(request).await;
            let transient = match &result {
                Ok(r) => r.status().is_server_error() || r.status().as_u16() == 429,
                Err(_) => true,
            };
            attempt += 1;
            if !transient || !self.retries.allow(attempt, start.elapsed()) {
                return result.map_err(|e| {
                    Error::Invalid(format!(
                        "S3 request failed: {e}; check the endpoint and retry"
                    ))
                });
            }
            tokio::time::sleep(self.retries.backoff(attempt)).await;
        }
    }

    async fn head(&self, path: &ObjectPath) -> Result<object_store::client::HttpResponse> {
        self.send(|| {
            http::Request::head(self.url(path))
                .body(Vec::new().into())
                .expect("valid request")
        })
        .await
    }

    /// The server's clock: the `Date` header of its answer to a HeadObject of `path` (every
    /// answer has one, whether the object exists or not).
    pub async fn date(&self, path: &ObjectPath) -> Result<DateTime<Utc>> {
        let response = self.head(path).await?;
        response
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|d| d.with_timezone(&Utc))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the S3 server's answer (HTTP {}) has no valid Date header, so its clock cannot be read; check the endpoint",
                    response.status()
                ))
            })
    }

    /// When the object's lock ends; `None` if it does not exist. Asked only in a lock-enabled
    /// repository, where every object is locked: an answer without a valid retain-until date
    /// (the caller lacks `s3:GetObjectRetention`, or the store does not report it) is an error,
    /// never "not locked", so that nothing locked is deleted or counted as freed.
    pub async fn retain_until(&self, path: &ObjectPath) -> Result<Option<DateTime<Utc>>> {
        let response = self.head(path).await?;
        if response.status() == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(Error::Invalid(format!(
                "reading the object lock of {path} failed with HTTP {}; check the credentials' s3:GetObjectRetention permission",
                response.status()
            )));
        }
        let until = response
            .headers()
            .get("x-amz-object-lock-retain-until-date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|d| d.with_timezone(&Utc));
        match until {
            Some(until) => Ok(Some(until)),
            None => Err(Error::Invalid(format!(
                "the store did not give the object lock of {path} (its HeadObject answer has no valid x-amz-object-lock-retain-until-date), so whether it is still locked is unknown and nothing was deleted: grant the credentials s3:GetObjectRetention (see the README's IAM policies), or use a store that reports Object Lock retention"
            ))),
        }
    }

    /// GETs `url` and reads its whole body, again (with the store's [`Retries`]) while the
    /// body breaks after the headers arrived, which [`S3Api::send`] cannot see.
    async fn get_whole(&self, url: &str) -> Result<(http::StatusCode, bytes::Bytes)> {
        let start = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            let response = self
                .send(|| {
                    http::Request::get(url)
                        .body(Vec::new().into())
                        .expect("valid request")
                })
                .await?;
            let status = response.status();
            attempt += 1;
            match response.into_body().bytes().await {
                Ok(body) => return Ok((status, body)),
                Err(e) if !self.retries.allow(attempt, start.elapsed()) => {
                    return Err(Error::Invalid(format!(
                        "reading the answer of {url} failed: {e}; check the endpoint and retry"
                    )));
                }
                Err(_) => tokio::time::sleep(self.retries.backoff(attempt)).await,
            }
        }
    }

    /// The multipart uploads in progress under the repository's prefix.
    pub async fn open_uploads(&self) -> Result<Vec<OpenUpload>> {
        let prefix = match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        };
        let mut out = vec![];
        let mut markers = (String::new(), String::new());
        loop {
            let url = format!(
                "{}?key-marker={}&prefix={}&upload-id-marker={}&uploads=",
                self.base,
                query_value(&markers.0),
                query_value(&prefix),
                query_value(&markers.1)
            );
            let (status, body) = self.get_whole(&url).await?;
            if !status.is_success() {
                return Err(Error::Invalid(format!(
                    "listing multipart uploads failed with HTTP {status}; check the credentials' s3:ListBucketMultipartUploads permission"
                )));
            }
            let page: UploadsPage = quick_xml::de::from_reader(body.as_ref()).map_err(|e| {
                Error::Invalid(format!(
                    "the store's list of multipart uploads cannot be read ({e}); check the endpoint"
                ))
            })?;
            out.extend(page.uploads);
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(id)) => markers = (key, id),
                _ => return Ok(out),
            }
        }
    }

    /// Aborts `upload`, freeing its parts (one already gone counts as aborted).
    pub async fn abort(&self, upload: &OpenUpload) -> Result<()> {
        let url = format!(
            "{}/{}?uploadId={}",
            self.base,
            upload.key,
            query_value(&upload.upload_id)
        );
        let response = self
            .send(|| {
                http::Request::delete(&url)
                    .body(Vec::new().into())
                    .expect("valid request")
            })
            .await?;
        match response.status() {
            s if s.is_success() || s == http::StatusCode::NOT_FOUND => Ok(()),
            s => Err(Error::Invalid(format!(
                "aborting the multipart upload of {} failed with HTTP {s}; check the credentials' s3:AbortMultipartUpload permission",
                upload.key
            ))),
        }
    }

    /// Extends the object's lock to `until` (S3 refuses to shorten a compliance lock).
    pub async fn extend(
        &self,
        path: &ObjectPath,
        mode: LockMode,
        until: DateTime<Utc>,
    ) -> Result<()> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.header(),
            until.format("%Y-%m-%dT%H:%M:%SZ")
        );
        let md5 =
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body.as_bytes()));
        let response = self
            .send(|| {
                http::Request::put(format!("{}?retention", self.url(path)))
                    .header("content-md5", &md5)
                    .header("content-type", "application/xml")
                    .body(body.clone().into_bytes().into())
                    .expect("valid request")
            })
            .await?;
        if !response.status().is_success() {
            return Err(Error::Invalid(format!(
                "extending the object lock of {path} failed with HTTP {}; check the credentials' s3:PutObjectRetention permission",
                response.status()
            )));
        }
        Ok(())
    }
}
