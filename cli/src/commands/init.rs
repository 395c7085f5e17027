//! `cairn init`: creates a repository, optionally chunking and naming data like another one.

use std::path::PathBuf;

use anyhow::Result;
use cairn_engine::format::chunker::ChunkerParams;
use cairn_engine::format::config::{LockMode, ObjectLock};
use cairn_engine::repository::store::Location;
use cairn_engine::repository::{DEFAULT_COMPRESSION_LEVEL, InitOptions, Repository};
use clap::Args;
use serde_json::json;

use super::{cache_base, location, print_json};
use crate::{Global, password};

/// `cairn init` options.
#[derive(Args)]
pub struct InitArgs {
    /// zstd compression level for data (0 = off, up to 19: smaller and slower)
    #[arg(long, default_value_t = DEFAULT_COMPRESSION_LEVEL, value_parser = clap::value_parser!(i32).range(0..=19))]
    compression: i32,
    /// Target pack size in MiB
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=512))]
    pack_size: u32,
    /// Default retention: keep every snapshot younger than this (e.g. 720h, 30days)
    #[arg(long, default_value = "720h", value_parser = humantime::parse_duration)]
    keep_within: std::time::Duration,
    /// Lock every object with S3 Object Lock in this mode: compliance or governance (S3 only;
    /// the bucket must have been created with Object Lock enabled)
    #[arg(long, value_name = "MODE")]
    object_lock: Option<LockMode>,
    /// Days each object stays locked [default: the retention in days, plus 1]
    #[arg(long, requires = "object_lock", value_parser = clap::value_parser!(u32).range(1..=36500))]
    lock_days: Option<u32>,
    /// Chunk and name data like this repository (its encryption key stays apart), so that
    /// `cairn copy` from it deduplicates (its password: --from-password-file,
    /// CAIRN_FROM_PASSWORD_FILE or CAIRN_FROM_PASSWORD)
    #[arg(long, value_name = "REPO")]
    copy_chunker_params_from: Option<String>,
    /// File whose first line is the password of the --copy-chunker-params-from repository
    #[arg(
        long,
        env = "CAIRN_FROM_PASSWORD_FILE",
        requires = "copy_chunker_params_from"
    )]
    from_password_file: Option<PathBuf>,
}

/// `cairn init`
pub fn run(g: &Global, a: InitArgs) -> Result<u8> {
    let loc = location(g)?;
    let pw = password::get(
        g.password_file.as_deref(),
        "CAIRN_PASSWORD",
        "new repository password",
        true,
    )?;
    let keep_within_secs = a.keep_within.as_secs();
    let object_lock = a.object_lock.map(|mode| ObjectLock {
        mode,
        days: a
            .lock_days
            .unwrap_or(ObjectLock::days_covering(keep_within_secs)),
    });
    let (chunker, keys) = match &a.copy_chunker_params_from {
        Some(from) => {
            let pw = password::get(
                a.from_password_file.as_deref(),
                "CAIRN_FROM_PASSWORD",
                "password of the repository to copy chunker parameters from",
                false,
            )?;
            let other = Repository::open(&Location::parse(from)?, &pw, &cache_base(g))?;
            (
                other.config().chunker,
                Some(other.keys().sharing_blob_ids()),
            )
        }
        None => (ChunkerParams::new_default(), None),
    };
    let options = InitOptions {
        chunker,
        compression_level: a.compression,
        pack_size: a.pack_size * 1024 * 1024,
        keep_within_secs,
        object_lock,
        keys,
        ..InitOptions::default()
    };
    let repo = Repository::init(&loc, &pw, options, &cache_base(g))?;
    if g.json {
        print_json(
            &json!({"id": repo.config().id, "location": loc.to_string(), "version": repo.config().version, "object_lock": repo.config().object_lock}),
        );
    } else {
        println!(
            "created Cairn repository {} at {loc}",
            repo.config().id.short()
        );
        println!(
            "Keep the password safe: without it the data in this repository cannot be read by anyone."
        );
    }
    Ok(0)
}
