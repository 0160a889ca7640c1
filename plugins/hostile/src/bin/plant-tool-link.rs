//! Hostile upstream of a tool-running stage: leaves links to host programs in its output
//! (`sh` and `touch`, relative links climbing to `/`, as WASI makes no absolute ones), so
//! that the stage reading it could run them as "executables inside one of its inputs"
//! without any grant.

fn main() {
    let root = "../".repeat(16);
    hostile::symlink(&format!("{root}bin/sh"), "/out/sh").unwrap();
    hostile::symlink(&format!("{root}usr/bin/touch"), "/out/touch").unwrap();
    std::fs::create_dir("/out/bin").unwrap();
    hostile::symlink(&format!("../{root}bin/sh"), "/out/bin/sh").unwrap();
    std::fs::write("/out/planted.txt", "links to host programs\n").unwrap();
}
