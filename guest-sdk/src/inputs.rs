//! Which inputs the host gave the stage, for naming them when the stage asks for another.
//!
//! The host lists a stage's inputs at `/in`, one entry per name, each mounted at
//! `/in/<name>`; a stage without inputs has no `/in`.

/// The names of the stage's inputs, sorted; a gather input's per-job directories are
/// inside it, not inputs of their own.
pub(crate) fn names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/in")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
