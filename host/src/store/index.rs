//! `records.index`: what a check of `records.jsonl` found (see [`super::table::check`]),
//! kept beside it, so that a run does not read every record of a large log again. A
//! no-op run of 10,000 jobs otherwise spends most of its time reading JSON it read last
//! time.
//!
//! Invariants:
//! - `records.jsonl` stays the truth; the index is a hint. It names the prefix of the log
//!   it covers by its length and its BLAKE3, and it is used only when the log's prefix of
//!   that length hashes to that, and the index's own bytes to its trailing checksum;
//!   otherwise, or when it is missing, it is ignored and the log is checked line by line.
//!   So a log rewritten by `repx gc`, edited by hand or cut by a crash is never read
//!   through a stale index, and a torn or damaged index costs one full check.
//! - What the index holds for its prefix is exactly what a check of those bytes finds:
//!   the count of lines, the lines that are no record, and each record's id, place and
//!   seal ([`Found`]), in the log's order.
//! - Only the process holding the store's lock writes it, whole, by rename, and only when
//!   it covers less than the log; readers never write it.
//!
//! Layout (integers little-endian): `MAGIC`, the covered length (u64) and its BLAKE3 (32
//! bytes), the count of lines (u64), the lines that are no record (a u64 count, then each),
//! the records (a u64 count, then each: start and end (u64), id, `out_mtime_ns` and
//! `sealed_ns` (a byte 0 or 1, then an i64), the stamps (a u64 count, then each: path,
//! size (u64), modification and change times (i64), inode (u64))), then the BLAKE3 of all
//! of it. A string is its length (u64), then its bytes.

use std::path::Path;

use super::Stamp;
use super::table::{Found, Kept};

/// The index's name in the store.
pub(super) const FILE: &str = "records.index";

const MAGIC: &[u8] = b"repx records.index 1\n";

/// What a check of the first `covered` bytes of the log found.
#[derive(Debug, PartialEq)]
pub(super) struct Index {
    pub covered: usize,
    pub lines: u64,
    pub unparsable: Vec<u64>,
    pub records: Vec<Found>,
}

/// The index in `root`, if it covers a prefix of `text` (the log, whole lines, read from
/// its start) as it is now.
pub(super) fn read(root: &Path, text: &[u8]) -> Option<Index> {
    let bytes = std::fs::read(root.join(FILE)).ok()?;
    decode(&bytes, text)
}

/// Writes the index of `index` (a check of `text`'s first `index.covered` bytes) into
/// `root`, by way of `tmp`.
pub(super) fn write(root: &Path, tmp: &Path, text: &[u8], index: &Index) -> std::io::Result<()> {
    std::fs::write(tmp, encode(text, index))?;
    std::fs::rename(tmp, root.join(FILE))
}

fn encode(text: &[u8], index: &Index) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + index.records.len() * 160);
    out.extend_from_slice(MAGIC);
    let covered = &text[..index.covered];
    put(&mut out, covered.len() as u64);
    out.extend_from_slice(blake3::hash(covered).as_bytes());
    put(&mut out, index.lines);
    put(&mut out, index.unparsable.len() as u64);
    for line in &index.unparsable {
        put(&mut out, *line);
    }
    put(&mut out, index.records.len() as u64);
    for found in &index.records {
        put(&mut out, found.start as u64);
        put(&mut out, found.end as u64);
        put_str(&mut out, &found.id);
        for time in [found.seal.out_mtime_ns, found.seal.sealed_ns] {
            out.push(u8::from(time.is_some()));
            put(&mut out, time.unwrap_or(0) as u64);
        }
        put(&mut out, found.seal.stamps.len() as u64);
        for Stamp(path, size, mtime, ctime, inode) in &found.seal.stamps {
            put_str(&mut out, path);
            put(&mut out, *size);
            put(&mut out, *mtime as u64);
            put(&mut out, *ctime as u64);
            put(&mut out, *inode);
        }
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

fn put(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn decode(bytes: &[u8], text: &[u8]) -> Option<Index> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut at = Cursor(body.strip_prefix(MAGIC)?);
    let covered = usize::try_from(at.u64()?).ok()?;
    let prefix = text.get(..covered)?;
    if at.take(32)? != blake3::hash(prefix).as_bytes() {
        return None;
    }
    let lines = at.u64()?;
    let unparsable = (0..at.count()?)
        .map(|_| at.u64())
        .collect::<Option<Vec<u64>>>()?;
    let records = (0..at.count()?)
        .map(|_| {
            let start = usize::try_from(at.u64()?).ok()?;
            let end = usize::try_from(at.u64()?).ok()?;
            if start >= end || end > covered {
                return None;
            }
            let id = at.str()?.into();
            let out_mtime_ns = at.time()?;
            let sealed_ns = at.time()?;
            let stamps = (0..at.count()?)
                .map(|_| {
                    Some(Stamp(
                        at.str()?.to_string(),
                        at.u64()?,
                        at.u64()? as i64,
                        at.u64()? as i64,
                        at.u64()?,
                    ))
                })
                .collect::<Option<Vec<Stamp>>>()?;
            Some(Found {
                id,
                start,
                end,
                seal: Kept {
                    out_mtime_ns,
                    sealed_ns,
                    stamps,
                },
            })
        })
        .collect::<Option<Vec<Found>>>()?;
    at.0.is_empty().then_some(Index {
        covered,
        lines,
        unparsable,
        records,
    })
}

/// The bytes of an index not read yet.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A count of what follows, each at least a byte: no more than the bytes left.
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len()).then_some(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = self.count()?;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn time(&mut self) -> Option<Option<i64>> {
        let some = self.take(1)?[0];
        let time = self.u64()? as i64;
        match some {
            0 => Some(None),
            1 => Some(Some(time)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn checked(text: &[u8]) -> Index {
        let mut records = Vec::new();
        let mut unparsable = Vec::new();
        for (n, line) in super::super::records::check(text).into_iter().enumerate() {
            match line {
                Some(found) => records.push(found),
                None => unparsable.push(n as u64 + 1),
            }
        }
        Index {
            covered: text.len(),
            lines: (records.len() + unparsable.len()) as u64,
            unparsable,
            records,
        }
    }

    fn log() -> Vec<u8> {
        let mut text = Vec::new();
        for id in ["a", "b", "a"] {
            let mut record = super::super::Record::for_test(id);
            record.out_mtime_ns = Some(-3);
            record.stamps = vec![Stamp("ü.json".into(), 1, -2, 3, 4)];
            serde_json::to_writer(&mut text, &record).unwrap();
            text.push(b'\n');
            text.extend_from_slice(b"{not a record\n");
        }
        text
    }

    /// A store large enough to be indexed, opened again and again as its log changes
    /// under the index: what it finds is always what the log says.
    #[test]
    fn a_store_reads_its_log_as_it_is_whatever_its_index_says() {
        use super::super::{Record, Store, Warning};
        let dir = std::env::temp_dir().join(format!("repx-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(super::super::records::FILE);
        let mut text = Vec::new();
        let padding = "x".repeat(600);
        for n in 0..2000 {
            let mut record = Record::for_test(&format!("{n:04}"));
            record.hash = format!("h{n}");
            record.params.insert("pad".into(), padding.clone().into());
            serde_json::to_writer(&mut text, &record).unwrap();
            text.push(b'\n');
            if n == 10 {
                text.extend_from_slice(b"not a record\n");
            }
        }
        assert!(text.len() >= super::super::records::PARSE_APART_FROM);
        std::fs::write(&log, &text).unwrap();
        let unparsable = |store: &Store| {
            store.take_warnings().into_iter().find_map(|w| match w {
                Warning::Unparsable { lines, .. } => Some(lines),
                _ => None,
            })
        };

        for _ in 0..2 {
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.records().len(), 2000);
            assert_eq!(store.record("0005").unwrap().hash, "h5");
            assert_eq!(unparsable(&store), Some(vec![12]));
            assert!(dir.join(FILE).is_file(), "the holder wrote the index");
        }
        let indexed = std::fs::read(dir.join(FILE)).unwrap();

        // Edited in place, to the same length: the index is not used.
        let at = text.windows(4).position(|w| w == b"\"h5\"").unwrap();
        text[at + 2] = b'7';
        std::fs::write(&log, &text).unwrap();
        let reader = Store::open_reader(&dir).unwrap();
        assert_eq!(reader.record("0005").unwrap().hash, "h7");
        drop(reader);
        assert_eq!(
            std::fs::read(dir.join(FILE)).unwrap(),
            indexed,
            "a reader writes none"
        );

        // Appended to, one record again and a line that is none: the index covers what
        // it did, the rest is read.
        let mut again = Record::for_test("0005");
        again.hash = "h9".into();
        let mut line = serde_json::to_vec(&again).unwrap();
        line.extend_from_slice(b"\n{\n");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(&line)
            .unwrap();
        for _ in 0..2 {
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.records().len(), 2000);
            assert_eq!(store.record("0005").unwrap().hash, "h9");
            assert_eq!(store.record("0006").unwrap().hash, "h6");
            assert_eq!(unparsable(&store), Some(vec![12, 2003]));
        }

        // Records this process appended: indexed when it is done with the store.
        let store = Store::open(&dir).unwrap();
        let mut new = Record::for_test("new");
        new.hash = "hn".into();
        store.append([new].iter()).unwrap();
        drop(store);
        let now = std::fs::read(&log).unwrap();
        assert_eq!(read(&dir, &now).map(|i| i.covered), Some(now.len()));
        let store = Store::open_reader(&dir).unwrap();
        assert_eq!(store.record("new").unwrap().hash, "hn");
        assert_eq!(unparsable(&store), Some(vec![12, 2003]));
        drop(store);

        // A damaged index: ignored, and written again.
        std::fs::write(dir.join(FILE), b"damaged").unwrap();
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.record("0005").unwrap().hash, "h9");
        assert_eq!(unparsable(&store), Some(vec![12, 2003]));
        drop(store);
        assert!(read(&dir, &std::fs::read(&log).unwrap()).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_index_reads_back_as_the_check_it_kept_and_only_for_the_bytes_checked() {
        let text = log();
        let index = checked(&text);
        assert_eq!(index.records.len(), 3);
        assert_eq!(index.unparsable, [2, 4, 6]);
        let bytes = encode(&text, &index);
        assert_eq!(decode(&bytes, &text), Some(checked(&text)));

        // Appended to: the index still covers its prefix.
        let mut longer = text.clone();
        longer.extend_from_slice(b"{}\n");
        assert_eq!(decode(&bytes, &longer).map(|i| i.covered), Some(text.len()));
        // The covered bytes changed, even in place and to the same length: ignored.
        let mut edited = text.clone();
        edited[10] ^= 1;
        assert_eq!(decode(&bytes, &edited), None);
        // Shorter than what it covers: ignored.
        assert_eq!(decode(&bytes, &text[..text.len() - 1]), None);
        // Any byte of the index damaged, or the index cut short: ignored.
        for at in [0, MAGIC.len() + 3, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert_eq!(decode(&damaged, &text), None, "byte {at}");
        }
        for len in [0, 31, 32, MAGIC.len() + 40, bytes.len() - 1] {
            assert_eq!(decode(&bytes[..len], &text), None, "{len} bytes");
        }
    }
}
