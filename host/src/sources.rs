//! Fingerprints of the project files an impure stage declares in `sources`.
//!
//! An impure stage re-runs only when this fingerprint, its parameters or its tools
//! changed. It is taken after each run too, so files the build itself writes (`.o`
//! files beside the sources) are part of what "unchanged" means next time.

use std::path::Path;

use globset::{Glob, GlobSetBuilder};
use walkdir::WalkDir;

/// The fingerprint of the files under `project` matching `globs`: paths and contents.
pub fn fingerprint(project: &Path, globs: &[String]) -> std::io::Result<String> {
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        set.add(Glob::new(glob).map_err(std::io::Error::other)?);
    }
    let set = set.build().map_err(std::io::Error::other)?;
    let mut hasher = blake3::Hasher::new();
    let walk = WalkDir::new(project)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        // The store is never a source, and neither is version control.
        .filter_entry(|e| e.file_name() != crate::store::DEFAULT_DIR && e.file_name() != ".git");
    for entry in walk {
        let entry = entry.map_err(std::io::Error::from)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(project).unwrap_or(entry.path());
        if !set.is_match(relative) {
            continue;
        }
        let bytes = std::fs::read(entry.path())?;
        let name = relative.to_string_lossy();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(blake3::hash(&bytes).as_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_matching_files_only() {
        let dir = std::env::temp_dir().join(format!("repx-sources-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/a.c"), "int a;").unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let globs = vec!["src/**".to_string()];
        let first = fingerprint(&dir, &globs).unwrap();
        std::fs::write(dir.join("notes.txt"), "y").unwrap();
        assert_eq!(first, fingerprint(&dir, &globs).unwrap());
        std::fs::write(dir.join("src/a.c"), "int b;").unwrap();
        assert_ne!(first, fingerprint(&dir, &globs).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
