// {name}: a RepX stage in JavaScript.
//
// It sees its inputs read-only at /in/<name>, writes its output to /out, may use /tmp, and
// gets its parameters from the lab (params = { ... }).
//
// Parameters:
// - n (integer, default 10): how many squares to write.

import { command, log, progress, runTool, ToolRefused } from "./repx.js";

export const run = command((ctx) => {
    const n = ctx.param("n", "integer", 10);

    // Inputs are directories, read-only.
    const data = `${ctx.input("data")}/data.txt`;
    const offset = ctx
        .readText(data)
        .split(/\s+/)
        .filter((word) => word !== "")
        .reduce((sum, word) => sum + Number(word), 0);

    const rows = ["i,square"];
    let total = 0;
    for (let i = 0; i < n; i++) {
        const square = i * i + offset;
        rows.push(`${i},${square}`);
        total += square;
        // Shown in `repx run`'s progress bars.
        progress(i + 1, n);
    }
    ctx.writeText(`${ctx.out}/squares.csv`, rows.join("\n") + "\n");
    // The numbers in metrics.json become columns of `repx results`.
    ctx.writeText(`${ctx.out}/metrics.json`, JSON.stringify({ sum: total }) + "\n");

    // A host command the stage was granted (tools = ["wc"]); a refusal is an error value.
    try {
        const status = runTool("wc", ["-l", data], { stdoutFile: "/out/lines.txt" });
        log("info", `wc exited with ${status}`);
    } catch (refused) {
        if (!(refused instanceof ToolRefused)) throw refused;
        log("warn", `wc refused: ${refused.message}`);
    }
});
