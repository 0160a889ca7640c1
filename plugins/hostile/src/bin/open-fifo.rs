//! Attack: block in the host where no wasm runs, so that neither the time limit nor an
//! interrupt can stop the job: open, for reading, the FIFO at parameter `path` (default
//! `/work/pipe`, in the project of an impure job), which no one writes; the open waits in
//! the kernel for a writer. It leaves `/out/opening` just before, so a test can tell it
//! is there.
//!
//! The host must refuse the open, or wake it at the deadline; either way the job fails.
//! Should the open return at all, it says how in `/out/opened.txt` and exits 1.

fn main() {
    let path = hostile::param("path").unwrap_or_else(|| "/work/pipe".to_string());
    std::fs::write("/out/opening", "").unwrap();
    let opened = std::fs::File::open(&path);
    std::fs::write("/out/opened.txt", format!("{path}: {opened:?}\n")).unwrap();
    eprintln!("the open of {path} returned: {opened:?}");
    std::process::exit(1);
}
