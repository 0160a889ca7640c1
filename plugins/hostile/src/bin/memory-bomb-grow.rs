//! Attack: grow linear memory directly with `memory.grow`, a page at a time and then a
//! gigabyte at once, bypassing the allocator; when growth fails, write past what was
//! granted. The memory limit must stop growth with a trap naming it.

fn main() {
    let mut pages = 0usize;
    loop {
        let previous = core::arch::wasm32::memory_grow(0, 16_384);
        if previous == usize::MAX {
            // Refused without a trap: the plugin was told no. Say so and stop.
            eprintln!("memory.grow refused after {pages} pages");
            std::process::exit(3);
        }
        pages += 16_384;
    }
}
