"""The plugin contract as the Python SDK sees it; see ../README.md."""

import json
import os
import sys
import time

import repx


def refused(attempt) -> bool:
    try:
        attempt()
    except OSError:
        return True
    return False


def main(ctx: repx.Context) -> None:
    if ctx.param("raise", bool, False):
        raise ValueError("conformance: Python raised")
    out_empty = not os.listdir("/out")
    report = {
        "out_empty_at_start": out_empty,
        "inputs": sorted(os.listdir("/in")),
        "input_write_refused": refused(lambda: open("/in/data/new-file", "w"))
        and refused(lambda: open("/in/data/a.txt", "r+")),
        "params": os.environ.get("REPX_PARAMS"),
        "env_names": sorted(os.environ),
        "clock_s": int(time.time()),
        "random": os.urandom(8).hex(),
        "tool_granted": repx.run_tool("echo", ["granted"], stdout_file="/out/tool.txt"),
    }
    try:
        report["tool_refused"] = f"ran, status {repx.run_tool('nope')}"
    except repx.ToolRefused as refusal:
        report["tool_refused"] = str(refusal)
    (ctx.out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    repx.log(repx.WARN, "conformance: Python warns")
    repx.progress(1, 2)
    repx.progress(2, 2)
    sys.exit(ctx.param("exit", int, 0))


Run = repx.command(main)
