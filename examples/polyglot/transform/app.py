"""transform: standardises the samples of /in/samples/samples.csv (mean 0, standard
deviation `scale`) into /out/scaled.csv, with columns i, x and z."""

import csv
import statistics

import repx


def main(ctx: repx.Context) -> None:
    scale = ctx.param("scale", float, 1.0)
    with open(ctx.input("samples") / "samples.csv", newline="") as f:
        rows = [(int(r["i"]), int(r["x"])) for r in csv.DictReader(f)]
    xs = [x for _, x in rows]
    mean = statistics.fmean(xs)
    deviation = statistics.pstdev(xs) or 1.0
    with open(ctx.out / "scaled.csv", "w", newline="") as f:
        f.write("i,x,z\n")
        for i, x in rows:
            f.write(f"{i},{x},{scale * (x - mean) / deviation:.4f}\n")
    repx.log(repx.INFO, f"{len(rows)} samples, mean {mean:.2f}")


Run = repx.command(main)
