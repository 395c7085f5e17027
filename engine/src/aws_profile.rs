//! Credentials and region from the AWS shared files (`~/.aws/credentials`, `~/.aws/config`)
//! for `AWS_PROFILE` (default `default`), as the AWS tools read them. `object_store` reads only
//! environment variables; this fills the gap for administrators used to `aws configure`.

use std::path::PathBuf;

use ini::Ini;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

use crate::error::{Error, Result};

/// Adds the profile's keys (and region, when the environment gives none) to `builder`.
/// Missing files are no error: credentials may come from a web identity or instance role.
pub fn apply(mut builder: AmazonS3Builder) -> Result<AmazonS3Builder> {
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    if let Some(section) =
        read_section(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"), &profile)?
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
        profile.clone()
    } else {
        format!("profile {profile}")
    };
    let region_set = std::env::var_os("AWS_REGION").is_some()
        || std::env::var_os("AWS_DEFAULT_REGION").is_some();
    if !region_set
        && let Some(section) = read_section(file("AWS_CONFIG_FILE", "config"), &config_section)?
        && let Some(region) = section.get("region")
    {
        builder = builder.with_region(region);
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
