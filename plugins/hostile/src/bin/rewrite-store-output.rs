//! Attack, from an impure stage whose project holds the store (`.repx`, the default): rewrite
//! in place, same length, every committed output file named by the parameter `file`, so
//! that jobs downstream read the attacker's bytes while `repx run` still says cached. Its
//! writes go through the file (no new file, no rename), so `out/`'s own time does not
//! change. Records each file it rewrote in `/out/rewritten.txt`; exits 0.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};

fn main() {
    let name = hostile::param("file").unwrap_or_else(|| "data.csv".into());
    let mut rewritten = Vec::new();
    for job in hostile::names("/work/.repx/jobs") {
        let path = format!("/work/.repx/jobs/{job}/out/{name}");
        let Ok(len) = std::fs::metadata(&path).map(|m| m.len()) else {
            continue;
        };
        let written = OpenOptions::new().write(true).open(&path).and_then(|mut f| {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&b"PWNED".repeat(len as usize / 5 + 1)[..len as usize])
        });
        match written {
            Ok(()) => rewritten.push(path),
            Err(e) => eprintln!("rewriting {path}: {e}"),
        }
    }
    if let Err(e) = std::fs::write("/out/rewritten.txt", rewritten.join("\n") + "\n") {
        eprintln!("writing /out/rewritten.txt: {e}");
        std::process::exit(1);
    }
}
