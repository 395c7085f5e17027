//! Makes a repository holding many small blobs, to measure what `cairn gc`, `check` and
//! opening cost per indexed blob (see RESULTS.md, "gc memory").
//! Usage: `many-blobs REPO_FOLDER COUNT` — password `bench`; the blobs are 40 distinct bytes each,
//! in 16 MiB packs, and no snapshot refers to them.

use std::path::PathBuf;

use cairn_engine::format::blob::BlobKind;
use cairn_engine::repository::packer::Packer;
use cairn_engine::repository::store::Location;
use cairn_engine::repository::{InitOptions, Repository};
use rayon::prelude::*;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(folder), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: many-blobs REPO_FOLDER COUNT");
        std::process::exit(2);
    };
    let folder = PathBuf::from(folder);
    let count: u64 = count
        .to_str()
        .and_then(|c| c.parse().ok())
        .expect("COUNT is a number");
    let location = Location::Local(folder.join("repo"));
    let repo = Repository::init(
        &location,
        b"bench",
        InitOptions::default(),
        &folder.join("cache"),
    )
    .expect("a new repository");
    let packer = Packer::new(&repo);
    (0..count).into_par_iter().for_each(|n| {
        let mut data = [0u8; 40];
        data[..8].copy_from_slice(&n.to_le_bytes());
        data[8..].copy_from_slice(blake3::hash(&n.to_le_bytes()).as_bytes());
        packer.save(BlobKind::Data, &data).expect("blob stored");
    });
    let stats = packer.finish().expect("packs written");
    println!("{} blobs in {} bytes", stats.blobs, stats.stored_bytes);
}
