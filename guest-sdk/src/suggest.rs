//! "Did you mean" for the names a lab gives a stage (inputs, parameters), and the
//! parameter names a stage's params struct takes.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The closest of `candidates` to `name`, when few enough edits apart to be a misspelling.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let most = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edits(name, c), c))
        .filter(|(edits, _)| *edits <= most)
        .min_by_key(|(edits, _)| *edits)
        .map(|(_, c)| c)
}

/// The Levenshtein distance between `a` and `b`.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The field names of struct `T` as its `Deserialize` declares them; `None` for a type
/// that is no struct (a map takes any key).
pub(crate) fn fields<'de, T: Deserialize<'de>>() -> Option<&'static [&'static str]> {
    // A derived `Deserialize` hands its field names to `deserialize_struct`; this
    // deserializer keeps them and stops there.
    struct Probe<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = Some(fields);
            Err(de::Error::custom("only the fields were wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields = None;
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("dta", ["data", "src"]), Some("data"));
        assert_eq!(closest("nn", ["n", "seed"]), Some("n"));
        assert_eq!(closest("seed", ["n"]), None);
        assert_eq!(edits("kitten", "sitting"), 3);
    }

    #[test]
    fn fields_are_those_of_a_struct_only() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Params {
            n: u32,
            #[serde(default)]
            seed: u64,
        }
        assert_eq!(fields::<Params>(), Some(&["n", "seed"][..]));
        assert_eq!(fields::<std::collections::BTreeMap<String, u32>>(), None);
    }
}
