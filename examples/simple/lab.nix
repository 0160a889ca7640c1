# The simple example in Nix: the same lab as repx.toml, so the same job ids and outputs.
#   scripts/build-plugins && repx run --lab examples/simple/lab.nix
# repx calls this function with its own copy of the library (nix/lib.nix); the default
# is for evaluating the file by hand: nix-instantiate --eval --strict --json lab.nix
{ repx ? import ../../nix/lib.nix }:
let
  inherit (repx) mkStage mkPipeline mkRun mkLab;

  generate = mkStage {
    name = "generate";
    plugin = "plugins/generate.wasm";
    params = { n = 100; };
    outputs = [ "data.csv" ];
  };

  sum = mkStage {
    name = "sum";
    plugin = "plugins/sum.wasm";
    inputs = { data = generate; };
    outputs = [ "sum.txt" ];
  };

  plot = mkStage {
    name = "plot";
    plugin = "plugins/plot.wasm";
    inputs = { data = generate; };
    outputs = [ "plot.svg" ];
  };

  main = mkPipeline { name = "main"; stages = [ generate sum plot ]; };

  simple = mkRun { name = "simple"; pipelines = [ main ]; };
in
mkLab { name = "simple"; runs = [ simple ]; }
