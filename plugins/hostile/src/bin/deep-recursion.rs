//! Attack: recurse without end, so a stack overflows. With parameter `frame = "large"`
//! (the default) each frame holds a buffer in linear memory, so the shadow stack Rust keeps
//! there runs out first; with `frame = "small"` the frames live on the wasm call stack
//! only, so the engine's own stack runs out. Either way the host must turn it into a trap
//! that fails the job, not a crash of the runner or a write outside the plugin's memory.
//!
//! Parameters: `frame` (string, `"large"` or `"small"`).

use std::hint::black_box;

#[allow(unconditional_recursion)] // the point of the attack
fn dive_large(depth: u64, buf: &mut [u8; 256]) -> u64 {
    let mut mine = *buf;
    mine[(depth % 256) as usize] = depth as u8;
    black_box(&mut mine);
    dive_large(depth + 1, &mut mine) + u64::from(mine[0])
}

#[allow(unconditional_recursion)] // the point of the attack
#[inline(never)]
fn dive_small(depth: u64) -> u64 {
    black_box(dive_small(black_box(depth + 1))) ^ depth
}

fn main() {
    let result = match hostile::param("frame").as_deref() {
        Some("small") => dive_small(0),
        _ => dive_large(0, black_box(&mut [0u8; 256])),
    };
    println!("{result}");
}
