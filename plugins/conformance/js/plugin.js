// The plugin contract as the JavaScript SDK sees it; see ../README.md.

import { command, exit, log, progress, readDir, runTool, ToolRefused, writeText, exists } from "./repx.js";
import { getEnvironment } from "wasi:cli/environment@0.2.12";

function refused(attempt) {
    try {
        attempt();
    } catch {
        return true;
    }
    return false;
}

export const run = command((ctx) => {
    const outEmpty = readDir("/out").length === 0;
    const random = new Uint8Array(8);
    crypto.getRandomValues(random);
    const report = {
        out_empty_at_start: outEmpty,
        inputs: exists("/in") ? readDir("/in") : [],
        input_write_refused:
            refused(() => writeText("/in/data/new-file", "x")) && refused(() => writeText("/in/data/a.txt", "x")),
        params: ctx.env.REPX_PARAMS ?? null,
        env_names: getEnvironment().map(([name]) => name).sort(),
        clock_s: Math.floor(Date.now() / 1000),
        random: Array.from(random, (b) => b.toString(16).padStart(2, "0")).join(""),
        tool_granted: runTool("echo", ["granted"], { stdoutFile: "/out/tool.txt" }),
    };
    try {
        report.tool_refused = `ran, status ${runTool("nope")}`;
    } catch (refusal) {
        if (!(refusal instanceof ToolRefused)) throw refusal;
        report.tool_refused = refusal.message;
    }
    writeText("/out/report.json", JSON.stringify(report, null, 2));
    log("warn", "conformance: JavaScript warns");
    progress(1, 2);
    progress(2, 2);
    const code = ctx.param("exit", "integer", 0);
    if (code) exit(code);
});
