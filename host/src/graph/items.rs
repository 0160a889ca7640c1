//! A fan-out's list: the file a job wrote, a JSON array of objects, one per item.
//!
//! It is read where the job left it, never through a link (the job chose every entry of
//! its output, links included), and refused whole when anything is wrong with it: not a
//! regular file, larger than [`MAX_BYTES`], not JSON, not an array, an item that is no
//! object, or more items than the fan-out's stage takes. The messages say what is wrong
//! and how many items there are; the caller names the job and the file.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use serde_json::Value;

use super::Item;

/// The most bytes a list may have: a hundred thousand items of some hundred bytes each,
/// with room to spare, and never the whole memory of the host.
pub const MAX_BYTES: u64 = 256 << 20;

/// The items of the list `file` in the output directory `out`, when there are at most
/// `max_items`.
pub fn read(out: &Path, file: &Path, max_items: usize) -> Result<Vec<Item>, String> {
    let bytes = read_beneath(out, file)?;
    parse(&bytes, max_items)
}

/// The items of a list's bytes, when there are at most `max_items`.
pub fn parse(bytes: &[u8], max_items: usize) -> Result<Vec<Item>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "is not JSON ({e}): write a JSON array of objects, one per item, like [{{\"name\": \"a\"}}]"
        )
    })?;
    let Value::Array(list) = value else {
        return Err(format!(
            "is {}, not an array of objects: write one object per item, like [{{\"name\": \"a\"}}]",
            kind(&value)
        ));
    };
    if list.len() > max_items {
        return Err(format!(
            "has {} items, more than the {max_items} its fan-out takes (`max_items` of the stage with `foreach`): raise it, or split in fewer items",
            list.len()
        ));
    }
    list.into_iter()
        .enumerate()
        .map(|(at, item)| match item {
            Value::Object(fields) => Ok(fields),
            other => Err(format!(
                "has item {at} (from 0) that is {}, not an object: each item is an object of fields, like {{\"name\": \"a\"}}",
                kind(&other)
            )),
        })
        .collect()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The bytes of `file` under `dir`, refusing a link anywhere on the way.
fn read_beneath(dir: &Path, file: &Path) -> Result<Vec<u8>, String> {
    let mut path = dir.to_path_buf();
    for component in file.components() {
        let Component::Normal(name) = component else {
            return Err("is not a plain relative path".into());
        };
        path.push(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "is reached through a link ({}); a list is a regular file in the output",
                    path.strip_prefix(dir).unwrap_or(&path).display()
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("is missing: the job must write it".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| e.to_string())?;
    let meta = opened.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > MAX_BYTES {
        return Err(format!(
            "has {} bytes, more than a list may have ({MAX_BYTES})",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    opened
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_an_array_of_objects_within_its_bound() {
        assert_eq!(parse(br#"[{"a": 1}, {}]"#, 2).unwrap().len(), 2);
        assert_eq!(parse(b"[]", 1).unwrap().len(), 0);
        let err = |bytes: &[u8], max| parse(bytes, max).unwrap_err();
        assert!(err(b"{}", 5).contains("is an object, not an array"));
        assert!(err(br#"[{}, 3]"#, 5).contains("has item 1 (from 0) that is a number"));
        assert!(err(b"[{}, {}, {}]", 2).contains("has 3 items, more than the 2"));
        assert!(err(b"[{", 5).contains("is not JSON"));
    }

    #[test]
    fn a_list_is_read_through_no_link() {
        let dir = std::env::temp_dir().join(format!("repx-items-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/list.json"), b"[{\"a\": 1}]").unwrap();
        std::os::unix::fs::symlink("sub/list.json", dir.join("link.json")).unwrap();
        std::os::unix::fs::symlink("sub", dir.join("linked")).unwrap();
        assert_eq!(read(&dir, Path::new("sub/list.json"), 9).unwrap().len(), 1);
        assert!(
            read(&dir, Path::new("link.json"), 9)
                .unwrap_err()
                .contains("link")
        );
        assert!(
            read(&dir, Path::new("linked/list.json"), 9)
                .unwrap_err()
                .contains("link")
        );
        assert!(
            read(&dir, Path::new("none.json"), 9)
                .unwrap_err()
                .contains("missing")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
