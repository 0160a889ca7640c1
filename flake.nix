{
  description = "RepX: build and experiment runner whose stages are WebAssembly plugins";

  # No inputs: the library is plain Nix, so the flake evaluates offline.
  inputs = { };

  outputs = { self }: {
    # mkStage, mkPipeline, mkRun, mkLab and gather: labs in Nix (see nix/README.md).
    lib = import ./nix/lib.nix;
  };
}
