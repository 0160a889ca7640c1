//! Attack: links that never end (`a -> b -> a`, `self -> self`, `deep -> deep/deep`) left
//! in `/out`, so that whoever walks or hashes the output would spin if it followed them.
//! Reading through them must fail (like wasmtime's own `symlink_loop` test).

use hostile::Attempts;
use std::fs;

fn main() {
    let mut a = Attempts::new();
    for (link, target) in [
        ("/out/a", "b"),
        ("/out/b", "a"),
        ("/out/self", "self"),
        ("/out/deep", "deep/deep"),
        ("/out/dot", "."),
    ] {
        match hostile::symlink(target, link) {
            Ok(()) => a.note(format!("linked {link} -> {target}")),
            Err(e) => a.refused(&format!("link {link} -> {target}"), e),
        }
    }
    for link in ["/out/a", "/out/self", "/out/deep"] {
        a.expect_refused(&format!("read through {link}"), fs::read_to_string(link));
    }
    fs::write(
        "/out/dot/inside.txt",
        "a link to its own directory is harmless\n",
    )
    .map(|()| a.note("wrote /out/dot/inside.txt"))
    .unwrap_or_else(|e| a.note(format!("writing /out/dot/inside.txt: {e}")));
    a.finish()
}
