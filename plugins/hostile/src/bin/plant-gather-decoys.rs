//! Hostile upstream of a gather: besides its real result (`value.txt`, its parameters),
//! leaves decoys for the gathering job: an `index.json` listing directories that climb out
//! of the gather input, and links `escape -> ../..` and `sibling -> ../other`.
//!
//! Parameters: any; copied to `value.txt`.

use std::fs;

fn main() {
    let params = std::env::var("REPX_PARAMS").unwrap_or_default();
    fs::write("/out/value.txt", &params).unwrap();
    let decoy = "{\"jobs\":[\
        {\"id\":\"decoy1\",\"dir\":\"../../../..\",\"params\":{}},\
        {\"id\":\"decoy2\",\"dir\":\"../../../../..\",\"params\":{}},\
        {\"id\":\"decoy3\",\"dir\":\"/etc\",\"params\":{}}]}";
    fs::write("/out/index.json", decoy).unwrap();
    hostile::symlink("../..", "/out/escape").unwrap();
    hostile::symlink("../other", "/out/sibling").unwrap();
}
