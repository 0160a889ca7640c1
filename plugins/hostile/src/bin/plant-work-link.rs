//! Attack (set-up half): an impure stage plants a link in the project directory where the
//! CLI will later write a file of its own, e.g. `main-report.html -> ../outside/victim.txt`,
//! hoping that `repx report` writes through it to a file outside the project.
//!
//! Parameters: `link` (a name in `/work`) and `target` (where the link leads). Exits 1 when
//! the link cannot be made, so a test never passes for want of the attack.

use hostile::param;

fn main() {
    let (Some(link), Some(target)) = (param("link"), param("target")) else {
        eprintln!("parameters `link` and `target` are required");
        std::process::exit(2);
    };
    let link = format!("/work/{link}");
    let _ = std::fs::remove_file(&link);
    if let Err(e) = hostile::symlink(&target, &link) {
        eprintln!("cannot link {link} -> {target}: {e}");
        std::process::exit(1);
    }
    std::fs::write("/out/result.txt", format!("note linked {link} -> {target}\n")).unwrap();
}
