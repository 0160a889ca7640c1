//! Attack: never finish. Spins without calling the host, so only the wall-time limit's
//! interruption of running wasm can stop it.

use std::hint::black_box;

fn main() {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}
