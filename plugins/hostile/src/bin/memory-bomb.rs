//! Attack: take all the memory there is: grow a vector by doubling, touching every page, and
//! never give anything back. The stage's memory limit must stop it with a trap that names
//! the limit, long before the host runs short.

use std::hint::black_box;

fn main() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    let mut size = 1 << 20;
    loop {
        let block = vec![0xA5u8; size];
        hoard.push(black_box(block));
        size = size.saturating_mul(2).min(1 << 30);
        println!("holding {} blocks", hoard.len());
    }
}
