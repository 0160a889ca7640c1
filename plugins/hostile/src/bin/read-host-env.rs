//! Attack: learn about the host from the environment and arguments: every variable that is
//! not one of the four `REPX_*` the contract names is a leak, as is any variable whose value
//! looks like a host path or holds the test's secret (parameter `secret`), and any
//! argument besides the stage name.
//!
//! Parameters: `secret` (string): a value the test put in the host's environment.

use hostile::{Attempts, param};

const CONTRACT: [&str; 4] = ["REPX_JOB_ID", "REPX_MODE", "REPX_PARAMS", "REPX_STAGE"];

fn main() {
    let mut a = Attempts::new();
    let secret = param("secret").unwrap_or_else(|| "no secret given".into());
    let vars: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    for (key, value) in &vars {
        if !CONTRACT.contains(&key.as_str()) {
            a.escaped(&format!("read host variable {key}"), value);
        } else if key != "REPX_PARAMS" && value.contains(&secret) {
            a.escaped(&format!("find the secret in {key}"), value);
        }
    }
    for key in [
        "HOME",
        "PATH",
        "USER",
        "PWD",
        "REPX_SECRET",
        "REPX_CACHE_DIR",
        "CARGO",
    ] {
        a.expect_refused(&format!("getenv {key}"), std::env::var(key));
    }
    let args: Vec<String> = std::env::args().collect();
    if args.len() > 1 {
        a.escaped("read host arguments", format!("{args:?}"));
    } else {
        a.refused("read host arguments", format!("only {args:?}"));
    }
    match std::env::current_dir() {
        Ok(dir) if dir.as_os_str() != "/" => a.escaped("learn the host cwd", dir.display()),
        other => a.refused("learn the host cwd", format!("{other:?}")),
    }
    a.finish()
}
