//! Index segments (`index/<id>`, format §7): which blobs each pack holds, and where each
//! segment stands among the others. The segments in the repository are the index's truth;
//! the repository keeps a local copy of them for look-ups.

use std::collections::HashSet;

use crate::format::id::Id;
use crate::format::pack::{PackedBlob, Reader};

/// Version of the segment plaintext layout without an epoch (written while both are 0).
const SEGMENT_VERSION: u32 = 1;
/// Version of the segment plaintext layout with an epoch (format version 6).
const SEGMENT_VERSION_EPOCHS: u32 = 2;

/// Where a segment stands among the others (format §7): the segments it replaces, and the
/// compaction epoch that retires segments stored again after their deletion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Segments whose content this one includes (written by garbage collection and repair).
    pub supersedes: Vec<Id>,
    /// The compaction epoch it was written in: a writer takes the highest epoch listed, a
    /// compaction one more than the highest it replaces (0 in repositories before version 6).
    pub epoch: u64,
    /// Every segment of a lower epoch is retired (set by the last segment of a compaction).
    pub retires_below: u64,
}

/// The segments of `listed` that readers leave out: superseded by a listed segment, or of an
/// epoch below one that a listed segment retires. One of them may outlive its deletion under
/// an object lock, or be stored again by anyone who can write to the bucket, and may list
/// packs since deleted.
pub fn retired<'a>(listed: impl IntoIterator<Item = (&'a Id, &'a Lineage)>) -> HashSet<Id> {
    let listed: Vec<_> = listed.into_iter().collect();
    let floor = listed
        .iter()
        .map(|(_, l)| l.retires_below)
        .max()
        .unwrap_or(0);
    let mut out: HashSet<Id> = listed
        .iter()
        .flat_map(|(_, l)| l.supersedes.iter().copied())
        .collect();
    out.extend(
        listed
            .iter()
            .filter(|(_, l)| l.epoch < floor)
            .map(|(id, _)| **id),
    );
    out
}

/// One index segment: the blobs of some packs, and its place among the other segments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexSegment {
    /// Each pack with the blobs its header lists.
    pub packs: Vec<(Id, Vec<PackedBlob>)>,
    /// What it replaces, and its epoch.
    pub lineage: Lineage,
}

impl IndexSegment {
    /// Binary plaintext form (sealed by the repository).
    pub fn encode(&self) -> Vec<u8> {
        let Lineage {
            supersedes,
            epoch,
            retires_below,
        } = &self.lineage;
        let epochs = (*epoch, *retires_below) != (0, 0);
        let mut out = Vec::new();
        let version = if epochs {
            SEGMENT_VERSION_EPOCHS
        } else {
            SEGMENT_VERSION
        };
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for (pack, blobs) in &self.packs {
            out.extend_from_slice(&pack.0);
            out.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
            for b in blobs {
                b.encode(&mut out);
            }
        }
        out.extend_from_slice(&(supersedes.len() as u32).to_le_bytes());
        for id in supersedes {
            out.extend_from_slice(&id.0);
        }
        if epochs {
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&retires_below.to_le_bytes());
        }
        out
    }

    /// Parses the plaintext form; `None` if it is malformed (or not in its one encoding).
    pub fn decode(b: &[u8]) -> Option<IndexSegment> {
        let mut r = Reader(b);
        let epochs = match r.u32()? {
            SEGMENT_VERSION => false,
            SEGMENT_VERSION_EPOCHS => true,
            _ => return None,
        };
        let packs = (0..r.u32()?)
            .map(|_| {
                let id = r.id()?;
                let n = r.u32()?;
                Some((id, r.entries(n)?))
            })
            .collect::<Option<Vec<_>>>()?;
        let supersedes = (0..r.u32()?).map(|_| r.id()).collect::<Option<Vec<_>>>()?;
        let (epoch, retires_below) = if epochs {
            let pair = (r.u64()?, r.u64()?);
            (pair != (0, 0)).then_some(pair)?
        } else {
            (0, 0)
        };
        r.0.is_empty().then_some(IndexSegment {
            packs,
            lineage: Lineage {
                supersedes,
                epoch,
                retires_below,
            },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::blob::BlobKind;

    pub(crate) fn entry(n: u8, kind: BlobKind) -> PackedBlob {
        PackedBlob {
            kind,
            id: Id([n; 32]),
            offset: n as u32 * 10,
            length: 10,
            raw_len: 9,
        }
    }

    pub(crate) fn segment() -> IndexSegment {
        IndexSegment {
            packs: vec![
                (
                    Id([1; 32]),
                    vec![entry(1, BlobKind::Data), entry(2, BlobKind::Tree)],
                ),
                (Id([2; 32]), vec![entry(3, BlobKind::Data)]),
            ],
            lineage: Lineage {
                supersedes: vec![Id([9; 32])],
                ..Lineage::default()
            },
        }
    }

    #[test]
    fn segment_round_trip_and_malformed() {
        let s = segment();
        let enc = s.encode();
        assert_eq!(IndexSegment::decode(&enc).unwrap(), s);
        assert!(IndexSegment::decode(&enc[..enc.len() - 1]).is_none());
        let mut longer = enc.clone();
        longer.push(0);
        assert!(IndexSegment::decode(&longer).is_none());
        let mut huge = enc.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(IndexSegment::decode(&huge).is_none());

        // with an epoch: version 2, and version 1 encodings only without one
        let mut epochs = segment();
        epochs.lineage.epoch = 3;
        epochs.lineage.retires_below = 2;
        let enc2 = epochs.encode();
        assert_eq!(enc2[..4], SEGMENT_VERSION_EPOCHS.to_le_bytes());
        assert_eq!(enc2[4..enc2.len() - 16], enc[4..]);
        assert_eq!(IndexSegment::decode(&enc2).unwrap(), epochs);
        let mut zero = enc;
        zero[..4].copy_from_slice(&SEGMENT_VERSION_EPOCHS.to_le_bytes());
        zero.extend_from_slice(&[0; 16]);
        assert!(IndexSegment::decode(&zero).is_none(), "one encoding only");
    }

    #[test]
    fn segments_are_retired_when_superseded_or_of_a_retired_epoch() {
        let lineage = |supersedes: &[u8], epoch, retires_below| Lineage {
            supersedes: supersedes.iter().map(|n| Id([*n; 32])).collect(),
            epoch,
            retires_below,
        };
        let listed = [
            (Id([1; 32]), lineage(&[], 0, 0)),
            (Id([2; 32]), lineage(&[], 1, 0)),
            (Id([3; 32]), lineage(&[4], 2, 1)),
            (Id([5; 32]), lineage(&[], 1, 0)),
            (Id([6; 32]), lineage(&[], 2, 0)),
        ];
        let retired = retired(listed.iter().map(|(id, l)| (id, l)));
        let expected: HashSet<Id> = [Id([1; 32]), Id([4; 32])].into();
        assert_eq!(retired, expected);
    }
}
