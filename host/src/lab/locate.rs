//! Where things are in a TOML lab, read from its spanned syntax tree.
//!
//! toml reports a syntax or type error by position only; [`key_at`] turns the position
//! into the dotted key a user can look for (`stages.sum.outputs`). Warnings and problems
//! found after parsing know their key; [`line_of`] finds its line.

use toml::de::{DeTable, DeValue};

/// The 1-based line of byte `offset` in `text`.
pub(super) fn line(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key of the innermost value at byte `offset` of `text`, as path segments; an array
/// element is its array's segment with the index appended (`outputs[1]`). A place that is
/// no value (a key given twice) is named as the key written there, in the table whose
/// header comes last before it.
pub(super) fn key_at(root: &DeTable, text: &str, offset: usize) -> Vec<String> {
    let mut path = Vec::new();
    if innermost(root, offset, &mut path) {
        return path;
    }
    let mut header = None;
    enclosing_header(root, text, offset, &mut Vec::new(), &mut header);
    let mut path = header.map(|(_, path)| path).unwrap_or_default();
    let written = &text[offset.min(text.len())..];
    let bare = written
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .map_or(written, |end| &written[..end]);
    if !bare.is_empty() {
        path.push(bare.to_string());
    }
    path
}

/// Pushes onto `path` the key of the innermost value of `table` holding `offset`.
fn innermost(table: &DeTable, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        // A table's own span is its header or braces; its entries lie elsewhere.
        let found = within(value.get_ref(), offset, path)
            || contains(&value.span(), offset)
            || contains(&key.span(), offset);
        if found {
            return true;
        }
        path.pop();
    }
    false
}

/// Extends `path` into `value` (a table or an array) down to the value holding `offset`.
fn within(value: &DeValue, offset: usize, path: &mut Vec<String>) -> bool {
    match value {
        DeValue::Table(table) => innermost(table, offset, path),
        DeValue::Array(array) => {
            let at = path.len() - 1;
            let name = path[at].clone();
            for (index, element) in array.iter().enumerate() {
                path[at] = format!("{name}[{index}]");
                if within(element.get_ref(), offset, path) || contains(&element.span(), offset) {
                    return true;
                }
            }
            path[at] = name;
            false
        }
        _ => false,
    }
}

/// Finds the `[header]` table that a place at `offset` outside any value is in: the one
/// whose header or one of whose keys comes last before it. (Its header alone would not
/// do: when a header is repeated, toml keeps the later one.)
fn enclosing_header(
    table: &DeTable,
    text: &str,
    offset: usize,
    path: &mut Vec<String>,
    best: &mut Option<(usize, Vec<String>)>,
) {
    for (key, value) in table.iter() {
        let DeValue::Table(inner) = value.get_ref() else {
            continue;
        };
        path.push(key.get_ref().to_string());
        let header = value.span().start;
        if text.get(header..).is_some_and(|t| t.starts_with('[')) {
            let last = inner
                .keys()
                .map(|k| k.span().start)
                .chain([header])
                .filter(|start| *start <= offset)
                .max();
            if let Some(last) = last
                && best.as_ref().is_none_or(|(b, _)| last > *b)
            {
                *best = Some((last, path.clone()));
            }
        }
        enclosing_header(inner, text, offset, path, best);
        path.pop();
    }
}

/// Whether `span` holds `offset`; an error at the very end of a value (an array never
/// closed) belongs to it too.
fn contains(span: &std::ops::Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset <= span.end
}

/// The line of key `path` in `text` (parsed as `root`), if it is there.
pub(super) fn line_of(root: &DeTable, text: &str, path: &[String]) -> Option<usize> {
    let (last, parents) = path.split_last()?;
    let mut table = root;
    for name in parents {
        match table.get(name.as_str()).map(|v| v.get_ref()) {
            Some(DeValue::Table(inner)) => table = inner,
            _ => return None,
        }
    }
    let (key, _) = table.get_key_value(last.as_str())?;
    Some(line(text, key.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "[lab]\nname = \"x\"\n\n[stages.sum]\nplugin = \"a\"\noutputs = [\n  \"a\",\n  1,\n]\nparams = { n = 1 }\nplugin = \"b\"\n";

    fn key(text: &str, needle: &str) -> String {
        let (root, _) = DeTable::parse_recoverable(text);
        key_at(root.get_ref(), text, text.rfind(needle).unwrap()).join(".")
    }

    #[test]
    fn an_offset_is_named_by_its_key() {
        assert_eq!(key(LAB, "\"x\""), "lab.name");
        assert_eq!(key(LAB, "\"a\"\n"), "stages.sum.plugin");
        assert_eq!(key(LAB, "1,"), "stages.sum.outputs[1]");
        assert_eq!(key(LAB, "n = 1"), "stages.sum.params.n");
        assert_eq!(key(LAB, "[stages"), "stages.sum");
        // The second `plugin` is a duplicate: it is in no value.
        assert_eq!(key(LAB, "plugin = \"b\""), "stages.sum.plugin");
    }

    #[test]
    fn a_key_is_found_by_its_path() {
        let (root, _) = DeTable::parse_recoverable(LAB);
        let path = |p: &str| p.split('.').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            line_of(root.get_ref(), LAB, &path("stages.sum.outputs")),
            Some(6)
        );
        assert_eq!(line_of(root.get_ref(), LAB, &path("lab.name")), Some(2));
        assert_eq!(
            line_of(root.get_ref(), LAB, &path("stages.sum.tools")),
            None
        );
    }
}
