//! "Did you mean" hints for misspelt names, and the keys a table takes to suggest from.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The closest of `candidates` to `name`, when one is close enough to be a misspelling.
pub(super) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The closest of `candidates` to `name`, phrased as a hint, when one is close enough.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// The field names of struct `T` as its `Deserialize` declares them: the keys a table of
/// that shape takes, kept in one place, the struct. Empty for a type that is no struct.
pub(super) fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    // A derived `Deserialize` hands its field names to `deserialize_struct`; this
    // deserializer keeps them and stops there.
    struct Probe<'a>(&'a mut &'static [&'static str]);

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
            *self.0 = fields;
            Err(de::Error::custom("only the fields were wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("gnerate", ["generate", "sum"]),
            " (did you mean `generate`?)"
        );
        assert_eq!(did_you_mean("xyz", ["generate", "sum"]), "");
    }

    #[test]
    fn fields_are_those_of_the_struct() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Table {
            plugin: String,
            #[serde(default)]
            outputs: Vec<String>,
        }
        assert_eq!(fields::<Table>(), ["plugin", "outputs"]);
        assert!(fields::<std::collections::BTreeMap<String, u32>>().is_empty());
    }
}
