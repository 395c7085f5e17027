//! Content-defined chunking with FastCDC (2020), streaming from any reader.

use std::borrow::Cow;
use std::io::Read;

use fastcdc::v2020::{
    AVERAGE_MAX, AVERAGE_MIN, FastCDC, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
    Normalization, cut_gear, get_gear_with_seed, select_masks,
};
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

    /// Checks the sizes against FastCDC 2020's limits (larger averages have no mask: the
    /// chunker would panic).
    pub fn validate(&self) -> Result<(), String> {
        let within = |size: u32, min: usize, max: usize| (min..=max).contains(&(size as usize));
        let ok = within(self.min_size, MINIMUM_MIN, MINIMUM_MAX)
            && within(self.avg_size, AVERAGE_MIN, AVERAGE_MAX)
            && within(self.max_size, MAXIMUM_MIN, MAXIMUM_MAX)
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

    fn stream<R: Read>(&self, source: R) -> Stream<R> {
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let (mask_s, mask_l) = select_masks(avg, Normalization::Level1);
        let (gear, gear_ls) = get_gear_with_seed(self.gear_seed);
        Stream {
            source,
            buf: vec![0; max],
            start: 0,
            end: 0,
            eof: false,
            min,
            avg,
            max,
            masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
            gear,
            gear_ls,
        }
    }
}

/// Cuts what a reader yields, holding at most `max_size` bytes, exactly where FastCDC cuts the
/// whole input in memory. Unlike `fastcdc`'s `StreamCDC`, which moves everything after a chunk
/// to the front of its buffer after each chunk (about 7 MiB moved per 1 MiB chunk at the default
/// sizes, a twentieth of a first backup's time), it cuts in place while the cut is certain, and
/// moves what is left only when too little of it remains.
struct Stream<R> {
    source: R,
    /// Holds the bytes read and not yet cut at `start..end`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    min: usize,
    avg: usize,
    max: usize,
    /// FastCDC's small and large masks, and both shifted left by one.
    masks: [u64; 4],
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl<R: Read> Stream<R> {
    /// Moves the bytes not yet cut to the front, then reads until the buffer is full or the
    /// source ends.
    fn refill(&mut self) -> std::io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while !self.eof && self.end < self.buf.len() {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk's length, reading more first if needed; 0 at the end of the source.
    fn next_cut(&mut self) -> std::io::Result<usize> {
        loop {
            let held = self.end - self.start;
            // a cut is final with `max` bytes in view or the source's end; before that, a cut
            // found inside what is held is final too, as FastCDC decides at each byte from the
            // bytes before it and its distance from the chunk's start alone (a streaming test
            // holds this against cuts of the whole input). Below twice `avg`, a chunk would
            // often run past what is held and be looked for twice: read first.
            let certain = self.eof || held >= self.max;
            if !certain && held < (2 * self.avg).min(self.max) {
                self.refill()?;
                continue;
            }
            let [mask_s, mask_l, mask_s_ls, mask_l_ls] = self.masks;
            let (_, n) = cut_gear(
                &self.buf[self.start..self.end],
                self.min,
                self.avg,
                self.max,
                mask_s,
                mask_l,
                mask_s_ls,
                mask_l_ls,
                &self.gear,
                &self.gear_ls,
            );
            if certain || n < held {
                return Ok(n);
            }
            self.refill()?;
        }
    }
}

impl<R: Read> Iterator for Stream<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_cut() {
            Ok(0) => None,
            Ok(n) => {
                let chunk = self.buf[self.start..self.start + n].to_vec();
                self.start += n;
                Some(Ok(chunk))
            }
            Err(e) => {
                // what was read is lost with the error: end here
                self.eof = true;
                self.start = self.end;
                Some(Err(e))
            }
        }
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

    /// Yields its bytes in reads of the given sizes, in turn; a size of 0 is a read
    /// interrupted by a signal.
    struct Trickle<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        reads: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let size = self.sizes[self.reads % self.sizes.len()];
            self.reads += 1;
            if size == 0 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Random bytes with runs of one byte in between (no cut inside a long run: chunks of
    /// `max_size`).
    fn runs_and_noise() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec((any::<u8>(), 0usize..3000, any::<bool>()), 0..30).prop_map(
            |parts| {
                let mut data = vec![];
                let mut x = 0x9e37_79b9_u32;
                for (byte, len, run) in parts {
                    for _ in 0..len {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        data.push(if run { byte } else { x as u8 });
                    }
                }
                data
            },
        )
    }

    proptest! {
        #[test]
        fn streaming_cuts_where_the_whole_input_in_memory_is_cut(
            data in runs_and_noise(),
            sizes in proptest::collection::vec(0usize..2500, 2..8)
                .prop_filter("some read yields bytes", |s| s.iter().any(|&n| n > 0)),
            (min_size, avg_size, max_size) in prop_oneof![
                Just((64, 256, 1024)),
                Just((64, 512, 1024)),   // twice the average is the maximum
                Just((300, 700, 1024)),  // more than half of it, and not powers of two
                Just((256, 256, 1024)),  // min == avg
                Just((1024, 1024, 1024)),
                Just((100, 1000, 5000)),
            ],
            seed: u64,
        ) {
            // many buffers' worth, read in pieces of any size, with interrupted reads: the
            // same chunks as FastCDC over the whole input
            let p = ChunkerParams { min_size, avg_size, max_size, gear_seed: seed };
            prop_assert!(p.validate().is_ok());
            let source = Trickle { data: &data, sizes, reads: 0 };
            let streamed: Vec<Vec<u8>> = p.stream(source).map(Result::unwrap).collect();
            prop_assert_eq!(streamed, p.cut(&data));
        }
    }

    #[test]
    fn at_the_default_sizes_streaming_cuts_as_fastcdcs_own_streaming_chunker() {
        // what repositories written before this chunker hold: StreamCDC's cuts of a file
        // read in pieces, over 64 MiB of noise around 12 MiB of zeros (a chunk of the maximum
        // size)
        let p = ChunkerParams::new_default();
        let mut data = vec![0u8; 64 << 20];
        let mut x = p.gear_seed | 1;
        for (i, byte) in data.iter_mut().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !(20..32).contains(&(i >> 20)) {
                *byte = x as u8;
            }
        }
        let source = || Trickle {
            data: &data,
            // (no interrupted read: StreamCDC gives those up as errors)
            sizes: vec![65_536, 1 << 20, 4097],
            reads: 0,
        };
        let theirs: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::with_level_and_seed(
            source(),
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            Normalization::Level1,
            p.gear_seed,
        )
        .map(|c| c.unwrap().data)
        .collect();
        let ours: Vec<Vec<u8>> = p.stream(source()).map(Result::unwrap).collect();
        assert!(theirs.len() > 30, "{} chunks", theirs.len());
        assert!(theirs.iter().any(|c| c.len() == p.max_size as usize));
        assert!(ours == theirs, "the cuts differ");
    }

    #[test]
    fn a_read_error_ends_the_chunks_with_it() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk gone"));
                }
                let n = buf.len().min(self.0).min(300);
                buf[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let chunks: Vec<std::io::Result<Vec<u8>>> = small(1).stream(Failing(5000)).collect();
        let (last, before) = chunks.split_last().unwrap();
        assert_eq!(last.as_ref().unwrap_err().to_string(), "disk gone");
        // a run of one byte has no cut: chunks of max_size until the error
        assert_eq!(before.len(), 4);
        assert!(before.iter().all(|c| c.as_ref().unwrap().len() == 1024));
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
        // FastCDC 2020 has no mask for so large an average: it would panic
        let mut p = ChunkerParams::new_default();
        (p.avg_size, p.max_size) = (32 << 20, 64 << 20);
        assert!(p.validate().is_err());
    }
}
