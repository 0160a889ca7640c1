//! Two-column numeric data as the example plugins exchange it: a CSV file with a header
//! line and `x,y` rows, and a standalone SVG line chart of one or more such series.

use std::fmt::Write as _;
use std::path::Path;

/// Reads the first two columns of a CSV file with a header line as `(x, y)` pairs.
pub fn read_csv(path: &Path) -> Result<Vec<(f64, f64)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let mut fields = line.split(',').map(|field| field.trim().parse::<f64>());
            match (fields.next(), fields.next()) {
                (Some(Ok(x)), Some(Ok(y))) => Ok((x, y)),
                _ => Err(format!(
                    "{}:{}: expected two numbers, found `{line}`",
                    path.display(),
                    index + 1
                )),
            }
        })
        .collect()
}

/// One line of a chart; labelled series get a legend entry.
pub struct Series {
    pub label: Option<String>,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const MARGIN: f64 = 50.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// A 640×400 SVG document: axes labelled with the data's ranges, one polyline per series.
pub fn line_chart(x_label: &str, y_label: &str, series: &[Series]) -> String {
    let points = series.iter().flat_map(|s| s.points.iter().copied());
    let (x_min, x_max, y_min, y_max) = points.fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(x0, x1, y0, y1), (x, y)| (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
    );
    let (x_min, x_max) = span(x_min, x_max);
    let (y_min, y_max) = span(y_min, y_max);
    let left = MARGIN;
    let right = WIDTH - MARGIN;
    let top = MARGIN / 2.0;
    let bottom = HEIGHT - MARGIN;
    let sx = |x: f64| left + (x - x_min) / (x_max - x_min) * (right - left);
    let sy = |y: f64| bottom - (y - y_min) / (y_max - y_min) * (bottom - top);

    let mut svg = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <g stroke=\"black\">\n\
         <line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\"/>\n\
         <line x1=\"{left}\" y1=\"{bottom}\" x2=\"{left}\" y2=\"{top}\"/>\n\
         </g>\n"
    );
    let text = |svg: &mut String, x: f64, y: f64, anchor: &str, content: &str| {
        let _ = writeln!(
            svg,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{}</text>",
            escape(content)
        );
    };
    text(&mut svg, left, bottom + 16.0, "middle", &short(x_min));
    text(&mut svg, right, bottom + 16.0, "middle", &short(x_max));
    text(
        &mut svg,
        (left + right) / 2.0,
        bottom + 36.0,
        "middle",
        x_label,
    );
    text(&mut svg, left - 6.0, bottom + 4.0, "end", &short(y_min));
    text(&mut svg, left - 6.0, top + 4.0, "end", &short(y_max));
    text(&mut svg, left - 6.0, (top + bottom) / 2.0, "end", y_label);

    for (index, s) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let coords: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.2},{:.2}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            coords.join(" ")
        );
        if let Some(label) = &s.label {
            let y = top + 14.0 * (index as f64 + 1.0);
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\" fill=\"{colour}\">{}</text>",
                right,
                escape(label)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// The range to scale by: empty or flat data still needs a non-zero span.
fn span(min: f64, max: f64) -> (f64, f64) {
    if min < max {
        (min, max)
    } else if min.is_finite() {
        (min - 1.0, min + 1.0)
    } else {
        (0.0, 1.0)
    }
}

/// Axis labels: a few significant digits are enough to read a chart.
fn short(value: f64) -> String {
    format!("{:.3}", value)
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
