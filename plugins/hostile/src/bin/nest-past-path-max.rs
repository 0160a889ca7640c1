//! Attack: leave a tree whose paths are longer than `PATH_MAX` (4,096 bytes) in `/out` and
//! in the scratch `/tmp`: 40 nested directories of 200-byte names, a file at the bottom.
//! No path given to the host is long: the directories are made with one-letter names,
//! short paths, then renamed from the deepest up. A store that removes trees by full path
//! could then clear neither the job's staging nor `tmp/`, and would refuse every later
//! command. Exits 0: the output is the attack.

const DEPTH: usize = 40;

fn nest(root: &str) {
    let mut path = root.to_string();
    for _ in 0..DEPTH {
        path.push_str("/d");
        std::fs::create_dir(&path).unwrap();
    }
    std::fs::write(format!("{path}/bottom.txt"), "deep\n").unwrap();
    let long = "n".repeat(200);
    for depth in (1..=DEPTH).rev() {
        let parent = format!("{root}{}", "/d".repeat(depth - 1));
        std::fs::rename(format!("{parent}/d"), format!("{parent}/{long}")).unwrap();
    }
}

fn main() {
    nest("/out");
    nest("/tmp");
    std::fs::write("/out/result.txt", "nested past PATH_MAX\n").unwrap();
}
