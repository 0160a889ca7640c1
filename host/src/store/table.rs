//! The records a store knows, by id: each one read from the log is kept as its line of
//! `records.jsonl`, with what it says of its sealed output, until something asks for the
//! whole record; only then is the line read into a [`Record`].
//!
//! A no-op run of a large sweep asks each job's record only whether its output is as
//! sealed ([`Records::seal`]): that needs no read of the line, so that a store's records
//! cost one map entry each, not a record's dozen allocations (and their freeing at exit).
//!
//! Invariants:
//! - Which line is a record is decided when it is read ([`check`]), by [`Checked`], which
//!   accepts exactly the lines that read as a [`Record`] (every field of the same type,
//!   the same required and optional ones, strings checked as UTF-8), so that a line that
//!   is no record is counted as such at once and never shadows an earlier record of its id.
//!   What [`super::index`] keeps of a check stands in for it only for the very bytes checked.
//! - The text of a line is never changed once kept: reading it again gives what was checked.
//! - The last record of an id wins, whether read from the log or added by a commit.

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::{AttemptRecord, Record, Stamp, Usage};
use crate::lab::Mode;

/// The records of a store, by id.
#[derive(Default)]
pub(super) struct Records {
    /// Texts read from the log, each whole lines.
    texts: Vec<Vec<u8>>,
    by_id: HashMap<Box<str>, Slot>,
}

enum Slot {
    /// A line of `texts[text]`, checked to be a record.
    Line {
        text: usize,
        start: usize,
        end: usize,
        seal: Kept,
    },
    /// A record this process committed.
    Made(Box<Record>),
}

/// A line of a text read from the log (`start..end`), checked to be a record of `id`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Found {
    pub id: Box<str>,
    pub start: usize,
    pub end: usize,
    pub seal: Kept,
}

/// What a record says of its sealed output, but its hash (see [`Record::stamps`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Kept {
    pub out_mtime_ns: Option<i64>,
    pub sealed_ns: Option<i64>,
    pub stamps: Vec<Stamp>,
}

/// What a record says of its sealed output, borrowed from what the table keeps of it.
pub(super) struct Seal<'a> {
    pub out_mtime_ns: Option<i64>,
    pub sealed_ns: Option<i64>,
    pub stamps: &'a [Stamp],
}

impl Records {
    /// With room for about `records` records.
    pub(super) fn with_capacity(records: usize) -> Records {
        Records {
            texts: Vec::new(),
            by_id: HashMap::with_capacity(records),
        }
    }

    /// Keeps `text` and the records `found` in it, in the log's order; returns their ids.
    pub(super) fn absorb(&mut self, text: Vec<u8>, found: Vec<Found>) -> Vec<Box<str>> {
        let index = self.texts.len();
        let mut ids = Vec::new();
        for Found {
            id,
            start,
            end,
            seal,
        } in found
        {
            let slot = Slot::Line {
                text: index,
                start,
                end,
                seal,
            };
            ids.push(id.clone());
            self.by_id.insert(id, slot);
        }
        self.texts.push(text);
        ids
    }

    pub(super) fn insert(&mut self, record: Record) {
        self.by_id
            .insert(record.id.as_str().into(), Slot::Made(Box::new(record)));
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(|id| &**id)
    }

    /// Forgets every record whose id `keep` refuses.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.by_id.retain(|id, _| keep(id));
    }

    /// The record of `id`, read from its line if it was not read yet.
    pub(super) fn get(&self, id: &str) -> Option<Record> {
        match self.by_id.get(id)? {
            Slot::Line {
                text, start, end, ..
            } => serde_json::from_slice(&self.texts[*text][*start..*end]).ok(),
            Slot::Made(record) => Some(Record::clone(record)),
        }
    }

    /// The hash of `id`'s output, read from its line if it was not read yet.
    pub(super) fn hash(&self, id: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Hash {
            hash: String,
        }
        match self.by_id.get(id)? {
            Slot::Line {
                text, start, end, ..
            } => serde_json::from_slice::<Hash>(&self.texts[*text][*start..*end])
                .ok()
                .map(|h| h.hash),
            Slot::Made(record) => Some(record.hash.clone()),
        }
    }

    /// Every record, in no particular order.
    pub(super) fn all(&self) -> Vec<Record> {
        self.ids().filter_map(|id| self.get(id)).collect()
    }

    /// What the record of `id` says of its sealed output, without reading its line.
    pub(super) fn seal(&self, id: &str) -> Option<Seal<'_>> {
        match self.by_id.get(id)? {
            Slot::Line { seal, .. } => Some(Seal {
                out_mtime_ns: seal.out_mtime_ns,
                sealed_ns: seal.sealed_ns,
                stamps: &seal.stamps,
            }),
            Slot::Made(record) => Some(Seal::of(record)),
        }
    }
}

impl<'a> Seal<'a> {
    /// What `record` says of its sealed output.
    pub(super) fn of(record: &'a Record) -> Seal<'a> {
        Seal {
            out_mtime_ns: record.out_mtime_ns,
            sealed_ns: record.sealed_ns,
            stamps: &record.stamps,
        }
    }
}

/// The record a whole line (`\n` included) of the log holds, if it holds one: its id and
/// what it says of its sealed output.
pub(super) fn check(line: &[u8]) -> Option<(Box<str>, Kept)> {
    serde_json::from_slice::<Checked>(line).ok().map(|checked| {
        let seal = Kept {
            out_mtime_ns: checked.out_mtime_ns,
            sealed_ns: checked.sealed_ns,
            stamps: checked.stamps,
        };
        (checked.id.0.into(), seal)
    })
}

/// A line read as [`Record`] reads it, field by field, each of the same type, with nothing
/// copied that need not be (see the module's invariants). Changing [`Record`] changes this.
#[derive(Deserialize)]
#[allow(dead_code)] // Read to be checked; only the id is kept.
struct Checked<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    stage: Text<'a>,
    mode: Mode,
    params: MapOf<serde_json::Value>,
    #[serde(borrow)]
    hash: Text<'a>,
    #[serde(default, borrow)]
    fingerprint: Option<Text<'a>>,
    finished_ms: u64,
    duration_ms: u64,
    #[serde(default, borrow)]
    nix: Option<Text<'a>>,
    #[serde(default)]
    out_mtime_ns: Option<i64>,
    #[serde(default)]
    stamps: Vec<Stamp>,
    #[serde(default)]
    sealed_ns: Option<i64>,
    #[serde(default, borrow)]
    inputs: Option<Text<'a>>,
    #[serde(default, borrow)]
    plugin: Option<Text<'a>>,
    #[serde(default, borrow)]
    tools: Option<MapOf<Text<'a>>>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    attempts: Vec<AttemptRecord>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// A JSON string, borrowed from the line when it has no escape.
struct Text<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(Text(std::borrow::Cow::Owned(s)))
            }
        }
        d.deserialize_string(V(std::marker::PhantomData))
    }
}

/// A map of strings to `V`, read as `serde_json::Map<String, V>` or
/// `BTreeMap<String, V>` reads it, and not kept: keys borrowed from the line when they
/// can be, values as `V` reads them (a `serde_json::Value` checks its strings as UTF-8,
/// as the record's are, and holds numbers and short values without allocating).
struct MapOf<V>(std::marker::PhantomData<V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for MapOf<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Each<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Each<V> {
            type Value = MapOf<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<Text<'de>, V>()?.is_some() {}
                Ok(MapOf(std::marker::PhantomData))
            }
        }
        d.deserialize_map(Each(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut record = Record::for_test("abc");
        record.params.insert("i".into(), serde_json::json!(3));
        record
            .params
            .insert("s".into(), serde_json::json!("a \"b\" é"));
        record.hash = "h".into();
        record.fingerprint = Some("f".into());
        record.nix = Some("/nix/store/x".into());
        record.out_mtime_ns = Some(5);
        record.stamps = vec![Stamp("result.json".into(), 1, 2, 3, 4)];
        record.sealed_ns = Some(6);
        record.inputs = Some("in".into());
        record.plugin = Some("p".into());
        record.tools = Some([("sh".to_string(), "d".to_string())].into());
        record.attempt = Some(2);
        record.usage = Some(Usage::default());
        record
    }

    /// Each line, and whether it reads as a `Record`; `check` must agree on every one.
    fn lines() -> Vec<String> {
        let full = serde_json::to_string(&record()).unwrap();
        let least = r#"{"id":"a","stage":"s","mode":"pure","params":{},"hash":"","finished_ms":0,"duration_ms":0}"#;
        let mut lines = vec![full.clone(), least.to_string()];
        // Every required field missing in turn, every field of the wrong type in turn.
        let value: serde_json::Value = serde_json::from_str(&full).unwrap();
        let fields: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        for field in &fields {
            let mut without = value.clone();
            without.as_object_mut().unwrap().remove(field);
            lines.push(without.to_string());
            for wrong in [
                serde_json::json!(null),
                serde_json::json!(1),
                serde_json::json!(-1),
                serde_json::json!("x"),
                serde_json::json!([1]),
                serde_json::json!({"k": 1}),
                serde_json::json!([["p", 1, 2, 3]]),
                serde_json::json!([["p", 1, 2, 3, 4, 5]]),
                serde_json::json!({"k": "v"}),
                serde_json::json!(1.5),
            ] {
                let mut changed = value.clone();
                changed[field.as_str()] = wrong;
                lines.push(changed.to_string());
            }
        }
        lines.extend(
            [
                r#"{"id":"a\u00e9","stage":"s","mode":"pure","params":{"k\n":"\ud800"},"hash":"","finished_ms":0,"duration_ms":0}"#,
                r#"{"id":"a","id":"b","stage":"s","mode":"pure","params":{},"hash":"","finished_ms":0,"duration_ms":0}"#,
                r#"{"id":"a","stage":"s","mode":"odd","params":{},"hash":"","finished_ms":0,"duration_ms":0}"#,
                r#"{"id":"a","stage":"s","mode":"pure","params":{},"hash":"","finished_ms":0,"duration_ms":0,"new":[1,{}]}"#,
                r#"{"id":"a","stage":"s","mode":"pure","params":{},"hash":"","finished_ms":0,"duration_ms":0} x"#,
                r#"{"id":"a","stage":"s""#,
                "[]",
                "",
            ]
            .map(String::from),
        );
        lines
    }

    #[test]
    fn a_line_is_checked_a_record_exactly_when_it_reads_as_one() {
        let mut both = 0;
        for line in lines() {
            let line = format!("{line}\n");
            let record = serde_json::from_str::<Record>(&line).ok();
            let checked = check(line.as_bytes());
            assert_eq!(
                record.as_ref().map(|r| (
                    r.id.as_str(),
                    Kept {
                        out_mtime_ns: r.out_mtime_ns,
                        sealed_ns: r.sealed_ns,
                        stamps: r.stamps.clone(),
                    }
                )),
                checked.as_ref().map(|(id, kept)| (&**id, kept.clone())),
                "{line}"
            );
            both += usize::from(record.is_some());
        }
        assert!(both > 10, "some lines are records: {both}");
        // Invalid UTF-8 in a string the record reads is no record.
        let line = b"{\"id\":\"a\",\"stage\":\"s\",\"mode\":\"pure\",\"params\":{\"k\":\"\xff\"},\"hash\":\"\",\"finished_ms\":0,\"duration_ms\":0}\n";
        assert!(serde_json::from_slice::<Record>(line).is_err());
        assert!(check(line).is_none());
    }

    #[test]
    fn a_kept_line_reads_as_its_record_and_its_seal() {
        let record = record();
        let mut text = b"junk\n".to_vec();
        let start = text.len();
        serde_json::to_writer(&mut text, &record).unwrap();
        text.push(b'\n');
        let end = text.len();
        let (id, seal) = check(&text[start..end]).unwrap();
        let mut records = Records::default();
        let ids = records.absorb(
            text,
            vec![Found {
                id,
                start,
                end,
                seal,
            }],
        );
        assert_eq!(ids, ["abc".into()]);
        assert_eq!(records.get("abc"), Some(record.clone()));
        assert_eq!(records.hash("abc").as_deref(), Some("h"));
        let seal = records.seal("abc").unwrap();
        assert_eq!((seal.out_mtime_ns, seal.sealed_ns), (Some(5), Some(6)));
        assert_eq!(seal.stamps, record.stamps);
        let mut made = record.clone();
        made.hash = "other".into();
        made.sealed_ns = Some(7);
        records.insert(made.clone());
        assert_eq!(records.get("abc"), Some(made));
        assert_eq!(records.hash("abc").as_deref(), Some("other"));
        assert_eq!(records.seal("abc").unwrap().sealed_ns, Some(7));
        assert!(records.get("none").is_none());
    }
}
