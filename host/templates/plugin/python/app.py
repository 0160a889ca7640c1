"""{name}: a RepX stage in Python.

It sees its inputs read-only at /in/<name>, writes its output to /out, may use /tmp, and
gets its parameters from the lab (params = { ... }).

Parameters:
- n (int, default 10): how many squares to write.
"""

import json

import repx


def main(ctx: repx.Context) -> None:
    n = ctx.param("n", int, 10)

    # Inputs are directories, read-only.
    data = ctx.input("data") / "data.txt"
    offset = sum(int(line) for line in data.read_text().split())

    rows = ["i,square"]
    total = 0
    for i in range(n):
        square = i * i + offset
        rows.append(f"{i},{square}")
        total += square
        # Shown in `repx run`'s progress bars.
        repx.progress(i + 1, n)
    (ctx.out / "squares.csv").write_text("\n".join(rows) + "\n")
    # The numbers in metrics.json become columns of `repx results`.
    (ctx.out / "metrics.json").write_text(json.dumps({"sum": total}) + "\n")

    # A host command the stage was granted (tools = ["wc"]); a refusal is an error value.
    try:
        status = repx.run_tool("wc", ["-l", str(data)], stdout_file="/out/lines.txt")
        repx.log(repx.INFO, f"wc exited with {status}")
    except repx.ToolRefused as refused:
        repx.log(repx.WARN, f"wc refused: {refused}")


Run = repx.command(main)
