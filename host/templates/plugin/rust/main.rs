//! `{name}`: a RepX stage.
//!
//! It sees its inputs read-only at `/in/<name>`, writes its output to `/out`, may use
//! `/tmp`, and gets its parameters from the lab (`params = { … }`) as JSON.
//!
//! Parameters:
//! - `n` (int, default 10): how many squares to write.

use repx_guest::{Level, Tool};
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    #[serde(default = "default_n")]
    n: u64,
}

fn default_n() -> u64 {
    10
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        // Inputs are directories, read-only.
        let data = ctx.input("data")?.join("data.txt");
        let offset: u64 = std::fs::read_to_string(&data)?
            .lines()
            .filter_map(|line| line.trim().parse::<u64>().ok())
            .sum();
        let mut csv = String::from("i,square\n");
        let mut sum = 0;
        for i in 0..p.n {
            let square = i * i + offset;
            csv.push_str(&format!("{i},{square}\n"));
            sum += square;
            // Shown in `repx run`'s progress bars.
            repx_guest::progress(i + 1, p.n);
        }
        std::fs::write(ctx.out().join("squares.csv"), csv)?;
        // The numbers in metrics.json become columns of `repx results`.
        std::fs::write(ctx.out().join("metrics.json"), format!("{{\"sum\": {sum}}}\n"))?;
        // A host command the stage was granted (`tools = ["wc"]`); a refusal is an error value.
        let counted = Tool::new("wc")
            .arg("-l")
            .arg(data.display().to_string())
            .stdout_file("/out/lines.txt")
            .status();
        match counted {
            Ok(status) => repx_guest::log(Level::Info, &format!("wc exited with {status}")),
            Err(refused) => repx_guest::log(Level::Warn, &format!("wc refused: {refused}")),
        }
        Ok(())
    })
}
