//! Example stage: sums the value column of input `data` (`/in/data/data.csv`) into
//! `/out/sum.txt`.
//!
//! No parameters.

fn main() {
    repx_guest::run(|ctx| {
        let rows = xy::read_csv(&ctx.input("data")?.join("data.csv"))?;
        let sum: f64 = rows.iter().map(|&(_, value)| value).sum();
        std::fs::write(ctx.out().join("sum.txt"), format!("{sum}\n"))?;
        Ok(())
    })
}
