//! Content-defined chunking with FastCDC (2020), streaming from any reader.

use std::io::Read;

use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};
use serde::{Deserialize, Serialize};

/// Chunker parameters, fixed per repository in its config so that every writer cuts the same
/// data at the same places (and so deduplicates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk, in bytes (except a file's last).
    pub min_size: u32,
    /// Target average chunk size in bytes.
    pub avg_size: u32,
    /// Largest chunk in bytes.
    pub max_size: u32,
    /// Secret seed of the gear table, so chunk boundaries do not reveal known contents.
    pub gear_seed: u64,
}

impl ChunkerParams {
    /// 512 KiB / 1 MiB / 8 MiB with a fresh random seed.
    pub fn new_default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
            gear_seed: u64::from_le_bytes(crate::format::crypto::random_bytes()),
        }
    }

    /// Checks the sizes against FastCDC's limits.
    pub fn validate(&self) -> Result<(), String> {
        let ok = (64..=67_108_864).contains(&self.min_size)
            && (256..=268_435_456).contains(&self.avg_size)
            && (1024..=1_073_741_824).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size;
        ok.then_some(()).ok_or_else(|| {
            format!(
                "chunker sizes {}/{}/{} are outside FastCDC's limits",
                self.min_size, self.avg_size, self.max_size
            )
        })
    }

    /// Splits everything `source` yields into chunks, holding at most `max_size` bytes at a time.
    /// `size_hint` is the expected length: sources no larger than one maximal chunk are read
    /// whole and cut in place, which spares the streaming chunker's `max_size` buffer per file
    /// (the cost that dominates backups of many small files). Both paths cut identically.
    pub fn chunks<'a, R: Read + 'a>(
        &self,
        mut source: R,
        size_hint: u64,
    ) -> Box<dyn Iterator<Item = std::io::Result<Vec<u8>>> + 'a> {
        let max = self.max_size as u64;
        if size_hint <= max {
            let mut buf = Vec::with_capacity(size_hint as usize);
            if let Err(e) = (&mut source).take(max + 1).read_to_end(&mut buf) {
                return Box::new(std::iter::once(Err(e)));
            }
            if buf.len() as u64 <= max {
                return Box::new(self.cut(&buf).into_iter().map(Ok));
            }
            // the source grew past one chunk since it was measured: stream the rest
            return Box::new(self.stream(std::io::Cursor::new(buf).chain(source)));
        }
        Box::new(self.stream(source))
    }

    /// Cuts an in-memory buffer.
    fn cut(&self, data: &[u8]) -> Vec<Vec<u8>> {
        FastCDC::with_level_and_seed(
            data,
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
            Normalization::Level1,
            self.gear_seed,
        )
        .map(|c| data[c.offset..c.offset + c.length].to_vec())
        .collect()
    }

    fn stream<R: Read>(
        &self,
        source: R,
    ) -> impl Iterator<Item = std::io::Result<Vec<u8>>> + use<R> {
        StreamCDC::with_level_and_seed(
            source,
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
            Normalization::Level1,
            self.gear_seed,
        )
        .map(|c| c.map(|c| c.data).map_err(std::io::Error::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small(seed: u64) -> ChunkerParams {
        ChunkerParams {
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
            gear_seed: seed,
        }
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_the_input(data in proptest::collection::vec(any::<u8>(), 0..20_000), seed: u64) {
            let p = small(seed);
            let chunks: Vec<Vec<u8>> = p.chunks(&data[..], data.len() as u64).map(Result::unwrap).collect();
            prop_assert_eq!(&chunks.concat(), &data);
            for c in &chunks {
                prop_assert!(c.len() <= 1024);
            }
        }

        #[test]
        fn in_memory_and_streaming_cuts_agree(data in proptest::collection::vec(any::<u8>(), 0..1024), seed: u64, hint in 0u64..3000) {
            // whatever the size hint (even a wrong one), the chunks are those of streaming
            let p = small(seed);
            let streamed: Vec<Vec<u8>> = p.stream(&data[..]).map(Result::unwrap).collect();
            let hinted: Vec<Vec<u8>> = p.chunks(&data[..], hint).map(Result::unwrap).collect();
            prop_assert_eq!(&p.cut(&data), &streamed);
            prop_assert_eq!(hinted, streamed);
        }
    }

    #[test]
    fn an_insertion_changes_few_chunks() {
        let data: Vec<u8> = (0u32..200_000)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let p = small(7);
        let before: std::collections::HashSet<Vec<u8>> =
            p.chunks(&data[..], 0).map(Result::unwrap).collect();
        let mut edited = data.clone();
        edited.splice(100_000..100_000, b"inserted".iter().copied());
        let after: Vec<Vec<u8>> = p
            .chunks(&edited[..], u64::MAX)
            .map(Result::unwrap)
            .collect();
        let changed = after.iter().filter(|c| !before.contains(*c)).count();
        assert!(changed <= 3, "{changed} of {} chunks changed", after.len());
    }

    #[test]
    fn defaults_are_valid_and_bad_sizes_are_refused() {
        assert!(ChunkerParams::new_default().validate().is_ok());
        let mut p = ChunkerParams::new_default();
        p.min_size = p.max_size + 1;
        assert!(p.validate().is_err());
    }
}
