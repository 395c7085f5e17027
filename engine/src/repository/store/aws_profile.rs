//! Credentials, region and endpoint from the AWS shared files (`~/.aws/credentials`,
//! `~/.aws/config`, or `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE`) for a profile, as the
//! AWS tools read them. `object_store` reads only environment variables; this fills the gap for
//! administrators used to `aws configure`, and gives each repository of a `copy` its own
//! credentials.

use std::path::PathBuf;

use ini::Ini;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

use crate::error::{Error, Result};

/// Adds the keys of `profile` to `builder`, and its region and `endpoint_url` unless the
/// builder has them (from the environment) and `own` is false. With `own`, the profile is the
/// repository's own and wins. Missing files are no error: credentials may come from a web
/// identity or instance role.
pub fn apply(mut builder: AmazonS3Builder, profile: &str, own: bool) -> Result<AmazonS3Builder> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    if let Some(section) =
        read_section(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"), profile)?
    {
        for (key, config) in [
            ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
            ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
            ("aws_session_token", AmazonS3ConfigKey::Token),
        ] {
            if let Some(value) = section.get(key) {
                builder = builder.with_config(config, value);
            }
        }
    }
    let config_section = if profile == "default" {
        profile.to_owned()
    } else {
        format!("profile {profile}")
    };
    if let Some(section) = read_section(file("AWS_CONFIG_FILE", "config"), &config_section)? {
        let region_set = std::env::var_os("AWS_REGION").is_some()
            || std::env::var_os("AWS_DEFAULT_REGION").is_some();
        if let Some(region) = section.get("region").filter(|_| own || !region_set) {
            builder = builder.with_region(region);
        }
        let endpoint_set = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .is_some();
        if let Some(endpoint) = section.get("endpoint_url").filter(|_| own || !endpoint_set) {
            builder = builder.with_endpoint(endpoint);
        }
    }
    Ok(builder)
}

/// The keys of one section of an INI file, if the file and the section exist.
fn read_section(
    path: Option<PathBuf>,
    section: &str,
) -> Result<Option<std::collections::HashMap<String, String>>> {
    let Some(path) = path.filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let ini = Ini::load_from_file(&path).map_err(|e| {
        Error::Invalid(format!(
            "cannot read the AWS file {}: {e}; fix its syntax or point AWS_PROFILE elsewhere",
            path.display()
        ))
    })?;
    Ok(ini.section(Some(section)).map(|s| {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }))
}
