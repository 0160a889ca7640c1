//! Test plugin: writes `/work/written-by-plugin.txt`, so tests can check that only impure
//! mode grants the project directory. No parameters.
//!
//! In impure mode the write must succeed and `/out/ok.txt` says `ok`. In other modes
//! `/out/ok.txt` records what the plugin saw: `work_present=<bool>` and
//! `work_write=<ok|refused>`, one per line.

use std::fs;
use std::path::Path;

use repx_guest::Mode;

fn main() {
    repx_guest::run(|ctx| {
        let work = Path::new("/work");
        let written = fs::write(work.join("written-by-plugin.txt"), "hello from plugin");
        let ok = if ctx.mode() == Mode::Impure {
            written.map_err(|e| format!("writing /work/written-by-plugin.txt: {e}"))?;
            "ok\n".to_string()
        } else {
            format!(
                "work_present={}\nwork_write={}\n",
                work.exists(),
                if written.is_ok() { "ok" } else { "refused" }
            )
        };
        fs::write(ctx.out().join("ok.txt"), ok)?;
        Ok(())
    })
}
