//! The record log, `records.jsonl`: one [`Record`] per line, appended, never edited in
//! place (only rewritten whole, by rename, by `repx gc` and `repx verify --repair`).
//!
//! Invariants:
//! - The file is whole lines, each ending in `\n`, then at most one torn tail without one,
//!   which is no record. An append writes whole lines at the end, under `records.lock`
//!   (several processes append: the workers of a SLURM run), after cutting a torn tail
//!   that a crash left; when the write or its flush fails (a full disk), the file is cut
//!   back to where it was. So a failed append leaves the log as it was, and the next one is
//!   a line of its own, never glued to half a line and lost with it.
//! - A whole line that does not parse is never skipped in silence: its line number is kept
//!   ([`RecordLog::unparsable`]) for the CLI to report, `repx verify` lists it and
//!   `repx verify --repair` rewrites the log without it.
//! - The last record of an id wins.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Record;
use super::table::{self, Found};

/// The record log's name in the store.
pub(super) const FILE: &str = "records.jsonl";
/// Taken around each append, by every process that appends.
pub(super) const APPEND_LOCK: &str = "records.lock";

/// How far the log has been read.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    /// The end of the last whole line read.
    offset: u64,
    /// The number of whole lines read.
    lines: u64,
}

pub(super) struct RecordLog {
    path: PathBuf,
    /// Open for reading and appending; `None` for a store opened only to look at it.
    file: Option<Mutex<File>>,
    /// `records.lock`, when this process appends.
    append_lock: Option<File>,
    read: Mutex<Position>,
    /// The line numbers (from 1) of whole lines that are no record.
    unparsable: Mutex<Vec<u64>>,
}

impl RecordLog {
    /// The log in `root`, opened for appending when `writer` (creating it and its lock),
    /// else only for reading; nothing is read yet.
    pub(super) fn open(root: &Path, writer: bool) -> io::Result<RecordLog> {
        let path = root.join(FILE);
        let (file, append_lock) = if writer {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)?;
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(root.join(APPEND_LOCK))?;
            (Some(Mutex::new(file)), Some(lock))
        } else {
            (None, None)
        };
        Ok(RecordLog {
            path,
            file,
            append_lock,
            read: Mutex::default(),
            unparsable: Mutex::default(),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole lines appended since the last call; a log that became shorter
    /// (rewritten) is read again from its start. Each read is then [`check`]ed, and the
    /// check [`tally`](RecordLog::tally)ed, in the order read.
    pub(super) fn read_new(&self) -> io::Result<Vec<u8>> {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < read.offset {
            *read = Position::default();
            self.unparsable
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        let mut reader = file;
        reader.seek(SeekFrom::Start(read.offset))?;
        let mut text = Vec::with_capacity(usize::try_from(len - read.offset).unwrap_or(0) + 1);
        reader.read_to_end(&mut text)?;
        // A line still being written (or torn by a crash) is not a record yet.
        let whole = text
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |end| end + 1);
        text.truncate(whole);
        read.offset += whole as u64;
        Ok(text)
    }

    /// Counts `lines` lines of the last read, `unparsable` among them (numbered from the
    /// first of them), as an index of the log found them without a [`check`].
    pub(super) fn tally_known(&self, lines: u64, unparsable: &[u64]) {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let mut known = self.unparsable.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(unparsable.iter().map(|line| read.lines + line));
        read.lines += lines;
    }

    /// Counts the lines a [`check`] of the last read found, those that are no record among
    /// them; returns the records, in the log's order.
    pub(super) fn tally(&self, lines: Vec<Option<Found>>) -> Vec<Found> {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let mut unparsable = self.unparsable.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = Vec::with_capacity(lines.len());
        for line in lines {
            read.lines += 1;
            match line {
                Some(line) => found.push(line),
                None => unparsable.push(read.lines),
            }
        }
        found
    }

    /// The line numbers (from 1) of the whole lines read so far that are no record.
    pub(super) fn unparsable(&self) -> Vec<u64> {
        self.unparsable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Appends `lines` (whole lines) and flushes them, or leaves the log as it was.
    pub(super) fn append(&self, lines: &[u8]) -> io::Result<()> {
        let file = self.file.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the store is open read-only",
            )
        })?;
        let file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = &self.append_lock {
            lock.lock()?;
        }
        let appended = append_whole(&file, lines);
        if let Some(lock) = &self.append_lock {
            let _ = lock.unlock();
        }
        appended
    }

    /// Cuts a torn tail off the log, so that what follows starts a line of its own.
    pub(super) fn cut_torn_tail(&self) -> io::Result<()> {
        match &self.file {
            Some(file) => {
                cut_to_whole_lines(&file.lock().unwrap_or_else(|e| e.into_inner())).map(|_| ())
            }
            None => Ok(()),
        }
    }

    /// Replaces the log with `records`, one per line, by writing `tmp` and renaming it over
    /// the log; appends go to the new file.
    pub(super) fn rewrite<'r>(
        &self,
        records: impl Iterator<Item = &'r Record>,
        tmp: &Path,
    ) -> io::Result<()> {
        let mut text = Vec::new();
        for record in records {
            serde_json::to_writer(&mut text, record).expect("records serialise");
            text.push(b'\n');
        }
        let mut file = File::create(tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        let mut log = self
            .file
            .as_ref()
            .map(|f| f.lock().unwrap_or_else(|e| e.into_inner()));
        std::fs::rename(tmp, &self.path)?;
        if let Some(log) = log.as_mut() {
            **log = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&self.path)?;
        }
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = Position {
            offset: text.len() as u64,
            lines: text.iter().filter(|b| **b == b'\n').count() as u64,
        };
        self.unparsable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }
}

/// From this many bytes of records on, a check reads them on several threads.
pub(super) const PARSE_APART_FROM: usize = 1 << 20;

/// Each whole line of `text` (whole lines) checked to be a record, in order: `None` for
/// one that is none. A large text is checked in parts at once, each part whole lines.
pub(super) fn check(text: &[u8]) -> Vec<Option<Found>> {
    let threads = match text.len() >= PARSE_APART_FROM {
        true => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        false => 1,
    };
    let parts = split_lines(text, threads);
    let checked: Vec<Vec<Option<Found>>> = std::thread::scope(|scope| {
        let base = text.as_ptr() as usize;
        let mut parts = parts.into_iter();
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| scope.spawn(move || check_lines(part, part.as_ptr() as usize - base)))
            .collect();
        let mut checked = vec![check_lines(first, 0)];
        checked.extend(others.into_iter().map(|h| h.join().unwrap_or_default()));
        checked
    });
    checked.into_iter().flatten().collect()
}

/// `text`, whole lines, cut into up to `parts` runs of whole lines of about equal size.
fn split_lines(text: &[u8], parts: usize) -> Vec<&[u8]> {
    let mut split = Vec::with_capacity(parts);
    let mut rest = text;
    for left in (1..=parts.max(1)).rev() {
        if left == 1 || rest.is_empty() {
            split.push(rest);
            break;
        }
        let at = rest.len() / left;
        let end = rest[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| at + i + 1);
        let (part, after) = rest.split_at(end);
        split.push(part);
        rest = after;
    }
    split
}

/// Each whole line of `text`, which starts at `offset` of the text read, checked to be a
/// record; `None` for one that is none.
fn check_lines(text: &[u8], offset: usize) -> Vec<Option<Found>> {
    let mut start = offset;
    text.split_inclusive(|b| *b == b'\n')
        .map(|line| {
            let at = start;
            start += line.len();
            table::check(line).map(|(id, seal)| Found {
                id,
                start: at,
                end: start,
                seal,
            })
        })
        .collect()
}

/// Appends `lines` to `file` (open for appending) and flushes them; on failure cuts the file
/// back to its length before, so that no part of `lines` stays.
fn append_whole(file: &File, lines: &[u8]) -> io::Result<()> {
    let end = cut_to_whole_lines(file)?;
    let mut writer = file;
    let written = writer.write_all(lines).and_then(|()| file.sync_data());
    if written.is_err() {
        // Shrinking needs no space. Should it fail too, the next append cuts the tail first.
        let _ = file.set_len(end).and_then(|()| file.sync_data());
    }
    written
}

/// Cuts whatever follows the last `\n` of `file`; returns the length left. One read of the
/// last byte when the file ends with a whole line, as it nearly always does.
fn cut_to_whole_lines(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut last = [0u8];
    if len == 0 || (file.read_at(&mut last, len - 1)? == 1 && last[0] == b'\n') {
        return Ok(len);
    }
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    let whole = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    file.set_len(whole)?;
    file.sync_all()?;
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record::for_test(id)
    }

    fn line(id: &str) -> Vec<u8> {
        let mut line = serde_json::to_vec(&record(id)).unwrap();
        line.push(b'\n');
        line
    }

    fn read_all(log: &RecordLog) -> Vec<String> {
        let text = log.read_new().unwrap();
        log.tally(check(&text))
            .into_iter()
            .map(|f| {
                let record: Record = serde_json::from_slice(&text[f.start..f.end]).unwrap();
                assert_eq!(record.id, *f.id);
                record.id
            })
            .collect()
    }

    #[test]
    fn lines_are_split_into_runs_of_whole_lines() {
        let text = b"a\nbb\nccc\nd\n";
        for parts in 1..=6 {
            let split = split_lines(text, parts);
            assert!(split.len() <= parts);
            assert_eq!(split.concat(), text, "{parts} parts");
            assert!(split.iter().all(|p| p.is_empty() || p.ends_with(b"\n")));
        }
        assert_eq!(split_lines(b"", 3), [b""]);
    }

    #[test]
    fn a_torn_tail_is_cut_before_an_append_and_bad_lines_are_counted() {
        let dir = std::env::temp_dir().join(format!("repx-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = line("a");
        text.extend_from_slice(b"{\"id\":\"glued\"\n");
        text.extend_from_slice(&line("b"));
        text.extend_from_slice(br#"{"id":"torn","sta"#);
        std::fs::write(dir.join(FILE), &text).unwrap();

        let log = RecordLog::open(&dir, true).unwrap();
        assert_eq!(read_all(&log), ["a", "b"]);
        assert_eq!(log.unparsable(), [2]);
        log.append(&line("c")).unwrap();
        assert_eq!(read_all(&log), ["c"], "c is a line of its own");
        let reader = RecordLog::open(&dir, false).unwrap();
        assert_eq!(read_all(&reader), ["a", "b", "c"]);
        assert!(
            reader.append(&line("d")).is_err(),
            "a reader does not append"
        );

        let kept = [record("b")];
        log.rewrite(kept.iter(), &dir.join("tmp-records")).unwrap();
        assert!(log.unparsable().is_empty());
        log.append(&line("e")).unwrap();
        assert_eq!(read_all(&log), ["e"]);
        let again = RecordLog::open(&dir, false).unwrap();
        assert_eq!(read_all(&again), ["b", "e"]);
        assert!(again.unparsable().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
