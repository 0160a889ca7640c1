//! Attack through `run-tool`: make links in `/out` that point out of every directory the
//! plugin was given: to `/` and to the lab directory (relative links climbing out of the
//! store, as WASI refuses absolute targets), to the lab's `sentinel.txt`, and, where WASI
//! allows it, by the host's absolute path of the lab (parameter `host_dir`). Then ask for a
//! granted tool (`touch`) to run with its working directory through each directory link,
//! creating `PWNED-tool-cwd`, and for a granted `echo` to send its stdout through the file
//! link and into the directory links. The host checks the guest path it is given; the
//! links decide where that path leads on the host.
//!
//! Each request goes in `/out/result.txt`: `refused` when the host said no, `ran <status>`
//! when it ran the tool. The test then looks for `PWNED-*` files and checks the sentinel.
//!
//! Parameters: `host_dir` (string): the lab directory as the host knows it.

use std::fs;

use repx_guest::Tool;

fn main() {
    repx_guest::run(|ctx| {
        let host = hostile::param("host_dir").unwrap_or_default();
        // On the host, /out is <lab>/.repx/tmp/<job>/out.
        let links = [
            ("esc-root", "../".repeat(16)),
            ("esc-lab", "../../../..".to_string()),
            ("esc-up", "../../../../..".to_string()),
            ("esc-sentinel", "../../../../sentinel.txt".to_string()),
            ("esc-host", host),
        ];
        let mut lines = Vec::new();
        for (name, target) in &links {
            if let Err(e) = hostile::symlink(target, &format!("/out/{name}")) {
                lines.push(format!("could not link /out/{name} -> {target}: {e}"));
            }
        }
        let mut record = |what: String, outcome: repx_guest::Result<i32>| {
            lines.push(match outcome {
                Ok(status) => format!("ran {what}: status {status}"),
                Err(e) => format!("refused {what}: {e}"),
            });
        };
        for dir in [
            "/out/esc-root",
            "/out/esc-lab",
            "/out/esc-up",
            "/out/esc-host",
            "/out/esc-root/tmp",
        ] {
            let tool = Tool::new("touch").arg("PWNED-tool-cwd").cwd(dir);
            record(format!("touch with cwd {dir}"), tool.status());
        }
        for file in [
            "/out/esc-sentinel",
            "/out/esc-lab/PWNED-tool-stdout",
            "/out/esc-up/PWNED-tool-stdout",
            "/out/esc-host/PWNED-tool-stdout",
        ] {
            let tool = Tool::new("echo").arg("PWNED").cwd("/out").stdout_file(file);
            record(format!("echo with stdout to {file}"), tool.status());
        }
        let mut text = lines.join("\n");
        text.push('\n');
        // Links out are left in the output on purpose; the result says what the host did.
        fs::write(ctx.out().join("result.txt"), text)?;
        Ok(())
    })
}
