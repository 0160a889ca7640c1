// format: the scaled samples of /in/scaled/scaled.csv as a bar chart, /out/chart.svg.

import { command } from "./repx.js";

const escape = (text) =>
    text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

export const run = command((ctx) => {
    const title = ctx.param("title", "string", "samples");
    const rows = ctx
        .readText(`${ctx.input("scaled")}/scaled.csv`)
        .trim()
        .split("\n")
        .slice(1)
        .map((line) => Number(line.split(",")[2]));
    const width = 20 * rows.length + 40;
    const bars = rows.map((z, i) => {
        const height = Math.abs(z) * 40;
        const y = z >= 0 ? 120 - height : 120;
        return `<rect x="${20 + 20 * i}" y="${y.toFixed(1)}" width="16" height="${height.toFixed(1)}"/>`;
    });
    const svg = [
        `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="260">`,
        `<title>${escape(title)}</title>`,
        `<text x="20" y="16">${escape(title)}</text>`,
        `<line x1="20" y1="120" x2="${width - 20}" y2="120" stroke="black"/>`,
        ...bars,
        "</svg>",
    ];
    ctx.writeText(`${ctx.out}/chart.svg`, svg.join("\n") + "\n");
});
