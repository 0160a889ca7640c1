//! Attack: have a granted tool (`mkfifo`, sandboxed in pure mode) make a FIFO in the
//! job's `/tmp`, then open it for reading: no one writes it, so the open waits in the
//! kernel, where no wasm runs that the time limit or an interrupt could stop.
//!
//! The host must refuse the open, or wake it at the deadline; either way the job fails.
//! Should the open return at all, it says how in `/out/opened.txt` and exits 1.

use repx_guest::Tool;

fn main() {
    repx_guest::run(|_| {
        Tool::new("mkfifo").arg("/tmp/fifo").cwd("/tmp").run()?;
        std::fs::write("/out/opening", "")?;
        let opened = std::fs::File::open("/tmp/fifo");
        std::fs::write("/out/opened.txt", format!("/tmp/fifo: {opened:?}\n"))?;
        Err(format!("the open of /tmp/fifo returned: {opened:?}").into())
    })
}
