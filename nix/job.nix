# Hermetic jobs as derivations: what `repx run --hermetic` builds.
#
# `jobs` is a JSON file of job specs written by repx: a job and the hermetic jobs
# upstream of it. Each becomes one derivation whose builder is a statically linked repx
# (`builder`, a store path) that runs the job's plugin under the pure-mode contract.
# An input is either an upstream job of the same file (`job`), so upstream jobs are
# upstream derivations, or a store path repx added by content (`path`). Each plugin is
# compiled once, by a derivation of its own that every job of it shares.
{ builder, jobs }:
let
  specs = builtins.fromJSON (builtins.readFile jobs);

  isBuiltin = p: builtins.substring 0 8 p == "builtin:";
  pluginOf = spec: if isBuiltin spec.plugin then spec.plugin else builtins.storePath spec.plugin;

  # The plugin compiled for the builder's engine: it depends on the plugin and the
  # builder only, so the jobs of a stage share it.
  compiled = spec: derivation {
    name = "repx-compiled-${builtins.substring 0 12 spec.plugin_digest}";
    system = builtins.currentSystem;
    builder = builtins.storePath builder;
    args = [ "compile-plugin" ];
    plugin = pluginOf spec;
    digest = spec.plugin_digest;
  };

  dir = d:
    if d ? job then d // { path = "${derivations."j-${d.job}".out}"; }
    else d // { path = builtins.storePath d.path; };

  input = i:
    if i ? dir then { dir = dir i.dir; }
    else { gather = map dir i.gather; };

  derivationOf = spec: derivation {
    inherit (spec) name;
    system = builtins.currentSystem;
    builder = builtins.storePath builder;
    args = [ "exec-job" ];
    outputs = [ "out" "log" ];
    # A gather of many jobs makes a spec larger than an environment variable may be.
    passAsFile = [ "job" ];
    job = builtins.toJSON (spec // {
      plugin = pluginOf spec;
      compiled = "${compiled spec}";
      inputs = builtins.mapAttrs (_: input) spec.inputs;
      tools = map (t: t // { path = builtins.storePath t.path; }) spec.tools;
    });
  };

  derivations = builtins.listToAttrs (map (spec: {
    name = "j-${spec.id}";
    value = derivationOf spec;
  }) specs);
in
derivations
