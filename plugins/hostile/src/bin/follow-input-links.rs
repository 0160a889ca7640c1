//! Attack from downstream: follow every link an upstream job left in its output (each
//! input, walked without following links), reading, listing and appending through it, so
//! that a link planted upstream to `/etc/passwd` or to another job's output would hand over
//! what it points to. Links that stay inside their own input are allowed and only noted.

use hostile::{Attempts, names};
use std::fs;

fn main() {
    let mut a = Attempts::new();
    let mut links = Vec::new();
    let mut stack: Vec<String> = hostile::inputs();
    while let Some(dir) = stack.pop() {
        for name in names(&dir) {
            let path = format!("{dir}/{name}");
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => links.push(path),
                Ok(m) if m.is_dir() => stack.push(path),
                _ => {}
            }
        }
    }
    links.sort();
    if links.is_empty() {
        a.escaped(
            "find a planted link",
            "none: were the links copied as files?",
        );
    }
    for link in &links {
        let target = fs::read_link(link)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        // A relative link that stays inside the input is no escape.
        let depth = link.matches('/').count() - 3;
        let climbs = target.split('/').filter(|p| *p == "..").count();
        if !target.starts_with('/') && climbs <= depth {
            a.note(format!("{link} -> {target} stays inside its input"));
            continue;
        }
        a.expect_refused(
            &format!("read through {link} -> {target}"),
            fs::read(link).map(|b| b.len()),
        );
        a.expect_refused(
            &format!("list through {link} -> {target}"),
            fs::read_dir(link).map(|d| d.count()),
        );
        a.expect_refused(
            &format!("append through {link} -> {target}"),
            fs::OpenOptions::new().append(true).open(link),
        );
    }
    a.finish()
}
