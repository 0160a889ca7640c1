# The param-sweep example in Nix: the same lab as repx.toml, so the same job ids.
#   scripts/build-plugins && repx run --lab examples/param-sweep/lab.nix
# repx calls this function with its own copy of the library (nix/lib.nix); the default
# is for importing it by hand: nix-instantiate --eval --strict --json -E 'import ./lab.nix { }'
{ repx ? import ../../nix/lib.nix }:
let
  inherit (repx) mkStage mkPipeline mkRun mkLab gather;

  # One job per (slope, intercept) point of the run.
  point = mkStage {
    name = "point";
    plugin = ./plugins/sweep-point.wasm;
    params = { slope = 1.0; intercept = 0.0; };
    outputs = [ "points.csv" "plot.svg" "metrics.json" ];
  };

  # One job reading every point's output (`point[*]` in repx.toml).
  combine = mkStage {
    name = "combine";
    plugin = ./plugins/sweep-gather.wasm;
    inputs = { points = gather point; };
    outputs = [ "combined.csv" "combined.svg" ];
  };

  sweep = mkPipeline { name = "sweep"; stages = [ point combine ]; };
in
mkLab {
  name = "param-sweep";
  runs = [
    (mkRun {
      name = "sweep";
      pipelines = [ sweep ];
      params = { slope = [ 1 2 5 ]; intercept = [ 0 10 ]; };
    })
  ];
}
