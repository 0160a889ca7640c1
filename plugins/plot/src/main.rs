//! Example stage: plots the value column of input `data` (`/in/data/data.csv`) as
//! `/out/plot.svg`.
//!
//! No parameters.

use xy::Series;

fn main() {
    repx_guest::run(|ctx| {
        let points = xy::read_csv(&ctx.input("data")?.join("data.csv"))?;
        repx_guest::progress(1, 2);
        let series = [Series {
            label: None,
            points,
        }];
        std::fs::write(
            ctx.out().join("plot.svg"),
            xy::line_chart("i", "value", &series),
        )?;
        repx_guest::progress(2, 2);
        Ok(())
    })
}
