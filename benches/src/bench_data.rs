//! Deterministic data sets for `compare.sh` and `scale.sh`: the same bytes, names and folders on
//! every run and machine (everything derives from a fixed seed through BLAKE3).
//!
//! Usage:
//! - `bench-data small DIR COUNT MB` — COUNT files of about MB megabytes in all, in folders of
//!   varying depth (about 40 files a folder, each folder below a random earlier one); sizes
//!   log-normal (σ 1.5) around the mean, 70 % text (compressible), 30 % random bytes, 3 %
//!   copies of an earlier file.
//! - `bench-data tree DIR COUNT` — COUNT empty files, 1000 a folder, 100 folders a parent;
//!   files already there are kept, so a tree grows from 1 M to 3 M files by adding 2 M.
//! - `bench-data random FILE MB` — MB megabytes of incompressible bytes.
//! - `bench-data sparse FILE MB` — a sparse file of MB megabytes (apparent size) holding 32
//!   extents of data (text and random, at most a quarter of it), holes between them.
//! - `bench-data change DIR` — a day of changes, the same on every call on the same tree: of the
//!   files in path order, every 20th touched (new mtime), every 50th (from the 4th) gets 4 KiB of
//!   new bytes in the middle if larger than 8 KiB, every 50th (from the 8th) 4 KiB of text
//!   appended, every 100th (from the 12th) deleted; new files in `new-today/`: 1 % as many as
//!   there are (at least 10) of sizes like the others, and 10 random files of 2 MiB.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rayon::prelude::*;

/// Largest file `small` and `change` make.
const MAX_FILE: u64 = 64 << 20;

/// Deterministic numbers: splitmix64 from a state derived from a stream number.
struct Rng(u64);

impl Rng {
    fn new(stream: u64) -> Rng {
        let mut state = [0; 8];
        state.copy_from_slice(&seeded(stream).as_bytes()[..8]);
        Rng(u64::from_le_bytes(state))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A log-normal size (σ 1.5) with this mean, at most `MAX_FILE`.
    fn size(&mut self, mean: f64) -> u64 {
        let sigma = 1.5;
        let mu = mean.max(1.0).ln() - sigma * sigma / 2.0;
        let (u1, u2) = (1.0 - self.unit(), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        ((mu + sigma * z).exp() as u64).min(MAX_FILE)
    }

    /// A lower-case pseudo-word of 2 to 9 letters.
    fn word(&mut self) -> String {
        let len = 2 + self.below(8);
        (0..len)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }
}

fn seeded(stream: u64) -> blake3::Hash {
    blake3::Hasher::new()
        .update(b"cairn bench data, seed 17")
        .update(&stream.to_le_bytes())
        .finalize()
}

/// Incompressible bytes of one stream.
fn random(stream: u64, len: u64) -> Vec<u8> {
    let mut out = vec![0; len as usize];
    blake3::Hasher::new()
        .update(b"cairn bench random")
        .update(&stream.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Text of one stream: lines of words from a fixed vocabulary (compresses about like prose).
fn text(stream: u64, len: u64) -> Vec<u8> {
    static VOCABULARY: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let words = VOCABULARY.get_or_init(|| {
        let mut rng = Rng::new(u64::MAX);
        (0..2048).map(|_| rng.word()).collect()
    });
    let mut rng = Rng::new(stream);
    let mut out = Vec::with_capacity(len as usize + 16);
    while (out.len() as u64) < len {
        // a few words are frequent, most are rare (roughly as in prose)
        let bound = rng.below(words.len() as u64) + 1;
        let rank = rng.below(bound);
        out.extend_from_slice(words[rank as usize].as_bytes());
        out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len as usize);
    out
}

fn write_new(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-data small DIR COUNT MB | tree DIR COUNT | random FILE MB | sparse FILE MB | change DIR"
    );
    std::process::exit(2)
}

/// One file of the `small` set.
struct Planned {
    path: PathBuf,
    stream: u64,
    size: u64,
    text: bool,
}

fn small(dir: &Path, count: u64, mb: f64) {
    let mean = mb * 1e6 / count.max(1) as f64;
    let mut rng = Rng::new(0);
    let folders = (count / 40).max(1);
    let mut dirs = vec![dir.to_path_buf()];
    for d in 1..folders {
        let parent = &dirs[rng.below(d) as usize];
        let path = parent.join(format!("{}-{d}", rng.word()));
        dirs.push(path);
    }
    for d in &dirs {
        fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    const TEXT: [&str; 7] = ["txt", "md", "json", "rs", "py", "html", "log"];
    const BINARY: [&str; 3] = ["bin", "jpg", "gz"];
    let mut plan: Vec<Planned> = Vec::with_capacity(count as usize);
    for f in 0..count {
        let folder = &dirs[rng.below(folders) as usize];
        let name = rng.word();
        let (stream, size, text) = if f > 0 && rng.below(100) < 3 {
            let of = &plan[rng.below(f) as usize];
            (of.stream, of.size, of.text)
        } else {
            (f, rng.size(mean), rng.below(10) < 7)
        };
        let ext = if text {
            TEXT[rng.below(TEXT.len() as u64) as usize]
        } else {
            BINARY[rng.below(BINARY.len() as u64) as usize]
        };
        plan.push(Planned {
            path: folder.join(format!("{name}-{f}.{ext}")),
            stream,
            size,
            text,
        });
    }
    plan.par_iter().for_each(|p| {
        let bytes = if p.text {
            text(p.stream, p.size)
        } else {
            random(p.stream, p.size)
        };
        write_new(&p.path, &bytes);
    });
    let bytes: u64 = plan.iter().map(|p| p.size).sum();
    println!("{count} files, {bytes} bytes in {folders} folders");
}

fn tree(dir: &Path, count: u64) {
    (0..count.div_ceil(1000))
        .into_par_iter()
        .for_each(|folder| {
            let path = dir.join(format!("{:05}/{:02}", folder / 100, folder % 100));
            fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for file in folder * 1000..((folder + 1) * 1000).min(count) {
                let file = path.join(file.to_string());
                match OpenOptions::new().write(true).create_new(true).open(&file) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => panic!("{}: {e}", file.display()),
                }
            }
        });
    println!("{count} empty files");
}

/// A stream number from a file name, so that files of different names differ.
fn name_stream(path: &Path) -> u64 {
    let hash = blake3::hash(path.file_name().unwrap_or_default().as_encoded_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

fn random_file(path: &Path, mb: f64) {
    let len = (mb * 1e6) as u64;
    let stream = name_stream(path);
    let mut out = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let piece = 1 << 20;
    for (i, start) in (0..len).step_by(piece as usize).enumerate() {
        let bytes = random(stream ^ ((i as u64) << 32), piece.min(len - start));
        out.write_all(&bytes).expect("written");
    }
}

fn sparse(path: &Path, mb: f64) {
    let len = (mb * 1e6) as u64;
    let extents = 32;
    let extent = ((len / extents / 4).min(2 << 20) / 4096 * 4096).max(4096);
    let out = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    out.set_len(len).expect("sized");
    let stream = name_stream(path);
    for i in 0..extents {
        let at = (i * (len / extents)) / 4096 * 4096;
        let size = extent.min(len - at);
        let s = stream ^ (i << 32);
        let bytes = if i % 2 == 0 {
            text(s, size)
        } else {
            random(s, size)
        };
        out.write_all_at(&bytes, at).expect("written");
    }
}

fn files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.expect("readable entry");
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            files(&entry.path(), out);
        } else if kind.is_file() {
            out.push((entry.path(), entry.metadata().expect("metadata").len()));
        }
    }
}

fn change(dir: &Path) {
    let mut all = vec![];
    files(dir, &mut all);
    all.sort();
    let n = all.len() as u64;
    let mean = all.iter().map(|(_, s)| s).sum::<u64>() as f64 / n.max(1) as f64;
    // streams of the changes, apart from those of the data set
    let stream = |i: u64| (1 << 62) | i;
    let now = SystemTime::now();
    let (mut touched, mut edited, mut appended, mut deleted) = (0, 0, 0, 0);
    for (i, (path, size)) in (0u64..).zip(&all) {
        let open = || {
            OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        if i % 20 == 0 {
            open().set_modified(now).expect("mtime set");
            touched += 1;
        } else if i % 50 == 3 && *size > 8192 {
            open()
                .write_all_at(&random(stream(i), 4096), size / 2)
                .expect("written");
            edited += 1;
        } else if i % 50 == 7 {
            let mut f = OpenOptions::new().append(true).open(path).expect("opened");
            f.write_all(&text(stream(i), 4096)).expect("appended");
            appended += 1;
        } else if i % 100 == 11 {
            fs::remove_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            deleted += 1;
        }
    }
    let new = dir.join("new-today");
    fs::create_dir_all(&new).expect("new folder");
    let mut rng = Rng::new(stream(u32::MAX as u64));
    let added = (n / 100).max(10);
    for k in 0..added {
        let size = rng.size(mean);
        write_new(
            &new.join(format!("{}-{k}.txt", rng.word())),
            &text(stream(n + k), size),
        );
    }
    for k in 0..10 {
        write_new(
            &new.join(format!("blob-{k}")),
            &random(stream(n + added + k), 2 << 20),
        );
    }
    println!(
        "{n} files: {touched} touched, {edited} edited in the middle, {appended} appended, \
         {deleted} deleted; {} new",
        added + 10
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = || PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
    match args.first().map(String::as_str) {
        Some("small") => small(&path(), arg(&args, 2), arg(&args, 3)),
        Some("tree") => tree(&path(), arg(&args, 2)),
        Some("random") => random_file(&path(), arg(&args, 2)),
        Some("sparse") => sparse(&path(), arg(&args, 2)),
        Some("change") => change(&path()),
        _ => usage(),
    }
}
