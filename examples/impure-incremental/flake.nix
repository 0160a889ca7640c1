{
  description = "RepX's impure incremental build example, as a lab directory that Nix builds";

  # No inputs: the lab is written with the repository's own nix/lib.nix, offline.
  inputs = { };

  # Run from this directory, whose checkout the lab builds in (its project directory):
  #   nix run --impure .                                    # build the lab, run it
  #   nix build .#lab-impure --impure && repx run build --lab ./result
  # (Nix 2.8 also needs --extra-experimental-features 'nix-command flakes'.) --impure lets
  # the lab name this directory, $PWD: the build stage runs make in src/ here, in place.
  outputs = { self }:
    let
      system = "x86_64-linux";
      repx = import ../../nix/lib.nix;
      inherit (repx) mkStage mkPipeline mkRun mkLab;

      project = builtins.getEnv "PWD";

      build = mkStage {
        name = "build";
        plugin = "builtin:make";
        mode = "impure";
        inputs = { src = "path:src"; };
        tools = [ "make" "cc" ];
        sources = [ "src/**" ];
        params = { target = "mybinary"; };
        outputs = [ "bin/mybinary" ];
      };
      run = mkStage {
        name = "run";
        plugin = "builtin:exec";
        inputs = { bin = build; };
        params = { program = "bin/mybinary"; stdout = "run.log"; };
        outputs = [ "run.log" ];
      };
      main = mkPipeline { name = "main"; stages = [ build run ]; };
      lab = mkLab {
        name = "impure-incremental";
        inherit project;
        runs = [ (mkRun { name = "build"; pipelines = [ main ]; }) ];
      };

      # The lab directory: lab.json (its plugins are built into repx), and bin/repx-lab,
      # which runs it with the `repx` on PATH. Built with the sandbox's /bin/sh (busybox,
      # as scripts/nix-setup sets it up).
      labDir =
        if project == "" then
          throw "build the lab with --impure: it names the directory you run Nix in ($PWD) as its project"
        else
          derivation {
            name = "lab-impure";
            inherit system;
            builder = "/bin/sh";
            labJson = builtins.toFile "lab.json" (builtins.toJSON lab);
            args = [
              "-c"
              ''
                mkdir -p $out/bin
                cp $labJson $out/lab.json
                printf '#!/bin/sh\nexec repx run build --lab %s "$@"\n' "$out" > $out/bin/repx-lab
                chmod +x $out/bin/repx-lab
              ''
            ];
          };
    in
    {
      packages.${system} = {
        lab-impure = labDir;
        default = labDir;
      };
      apps.${system}.default = {
        type = "app";
        program = "${labDir}/bin/repx-lab";
      };
    };
}
