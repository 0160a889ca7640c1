//! "Did you mean" hints for misspelt names.

/// The closest of `candidates` to `name`, phrased as a hint, when one is close enough.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("gnerate", ["generate", "sum"]),
            " (did you mean `generate`?)"
        );
        assert_eq!(did_you_mean("xyz", ["generate", "sum"]), "");
    }
}
