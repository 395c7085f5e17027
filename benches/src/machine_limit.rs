//! The machine's own limit for new data: the throughput of one pass of chunk + keyed hash +
//! zstd (at the default level of new repositories) + AES-256-GCM over a folder's files held in memory,
//! on all cores, with no I/O at all. A backup of new data cannot be faster than this; the
//! side-by-side benchmark shows how close Cairn comes.
//! Usage: `machine-limit FOLDER` — prints `bytes seconds MB/s`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_engine::format::blob;
use cairn_engine::format::chunker::ChunkerParams;
use cairn_engine::format::crypto::{Domain, MasterKeys};
use cairn_engine::repository::DEFAULT_COMPRESSION_LEVEL;
use rayon::prelude::*;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let entry = entry.expect("readable entry");
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            files(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .expect("usage: machine-limit FOLDER");
    let mut paths = vec![];
    files(&dir, &mut paths);
    let data: Vec<Vec<u8>> = paths.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    let total: usize = data.iter().map(Vec::len).sum();
    let keys = MasterKeys::generate();
    let params = ChunkerParams::new_default();
    let started = Instant::now();
    let stored: usize = data
        .par_iter()
        .map(|file| {
            params
                .chunks(&file[..], file.len() as u64)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|chunk| {
                    let chunk = chunk.expect("in-memory read");
                    std::hint::black_box(keys.blob_id(&chunk));
                    blob::seal(&keys, Domain::Blob, DEFAULT_COMPRESSION_LEVEL, &chunk).len()
                })
                .sum::<usize>()
        })
        .sum();
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(stored);
    println!("{total} {secs:.3} {:.1}", total as f64 / secs / 1e6);
}
