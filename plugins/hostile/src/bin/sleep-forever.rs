//! Attack: never finish, without running any wasm: sleep in the host for a day, so that a
//! time limit checked only while wasm runs would never fire. It leaves `/out/asleep` just
//! before, so a test can tell it is in the host's sleep.

fn main() {
    std::fs::write("/out/asleep", "").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(86_400));
    std::fs::write("/out/woke.txt", "slept through the time limit\n").unwrap();
}
