# Labs in Nix: functions that build the lab model of `repx.toml` as an attribute set.
#
#   generate = mkStage { name = "generate"; plugin = ./plugins/generate.wasm;
#                        params = { n = 100; }; outputs = [ "data.csv" ]; };
#   sum      = mkStage { name = "sum"; plugin = ./plugins/sum.wasm;
#                        inputs = { data = generate; }; outputs = [ "sum.txt" ]; };
#   main     = mkPipeline { name = "main"; stages = [ generate sum ]; };
#   simple   = mkRun { name = "simple"; pipelines = [ main ]; params = { n = [ 10 100 ]; }; };
#   in mkLab { name = "simple"; runs = [ simple ]; }
#
# What mkLab returns, as JSON (`nix-instantiate --eval --strict --json lab.nix`), has the
# tables of repx.toml: `lab`, `stages`, `pipelines`, `runs` and `slurm`. repx reads it and
# validates it with the same checks as repx.toml; the checks here only catch early, with
# the stage's name, what Nix alone can tell (a missing plugin, a value of the wrong kind).
#
# Stages, pipelines and runs are values: a pipeline lists the stages it runs, an input or
# a run may name its upstream by value or by name (a string). mkLab collects every stage
# and pipeline that its runs reach, so a lab lists only its runs.
#
# This file is one expression with no imports: `repx` passes its own copy of it to a
# lab.nix that is a function `{ repx, ... }:`, and the flake exposes it as `lib`.
let
  inherit (builtins)
    all
    any
    attrNames
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    fromJSON
    genericClosure
    isAttrs
    isFloat
    isFunction
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    removeAttrs
    toJSON
    toString
    typeOf
    ;

  fail = fn: name: message: throw "repx.${fn} `${name}`: ${message}";

  # Attributes left unset (null) or empty are the defaults of repx.toml: drop them.
  present = attrs: removeAttrs attrs (filter (k: elem attrs.${k} [ null [ ] { } ]) (attrNames attrs));

  is = type: value: isAttrs value && (value._type or null) == type;

  describe = value:
    if isAttrs value && value ? _type then "a ${value._type} value" else "a ${typeOf value}";

  # A stage, pipeline or run given by value or by name; its name.
  nameOf = type: fn: owner: what: value:
    if isString value then value
    else if is type value then value.name
    else fail fn owner "${what} is ${describe value}; give a ${type} value (what ${
      if type == "repx.stage" then "mkStage" else if type == "repx.pipeline" then "mkPipeline" else "mkRun"
    } returns) or its name";

  # Nix writes floats to JSON with six significant digits (and 1.0 as 1): refuse a float
  # that would reach repx as another number than the one written.
  exact = fn: owner: key: value:
    if isFloat value then
      (if fromJSON (toJSON value) == value then value
       else fail fn owner "parameter `${key}` has more digits than Nix writes to JSON (six significant: ${toJSON value}); write it with at most six significant digits, or as a string")
    else if isList value then map (exact fn owner key) value
    else if isAttrs value then mapAttrs (k: exact fn owner "${key}.${k}") value
    else if isFunction value then fail fn owner "parameter `${key}` is a function"
    else value;

  strings = fn: owner: key: list:
    if isList list && all isString list then list
    else fail fn owner "`${key}` must be a list of strings, not ${describe list}";

  attrset = fn: owner: key: value:
    if isAttrs value && !(value ? _type) then value
    else fail fn owner "`${key}` must be an attribute set, not ${describe value}";

  # Every distinct value of `type` by name; two different definitions under one name fail.
  byName = fn: type: values:
    foldl'
      (acc: value:
        let
          strip = v: removeAttrs v [ "_upstream" "_stages" "_pipelines" ];
        in
        if acc ? ${value.name} && strip acc.${value.name} != strip value then
          fail fn value.name "two different ${type}s have this name; give each its own name"
        else acc // { ${value.name} = value; })
      { }
      values;

  # mkStage { name; plugin; ... }: one stage. Every attribute but `name` and `plugin` is
  # optional, with the meaning of the same key in [stages.NAME] of repx.toml.
  #   plugin   a .wasm file, as a path (./plugins/sum.wasm) or a string relative to the lab
  #            file ("plugins/sum.wasm"), or "builtin:make"
  #   inputs   { NAME = stage; }, { NAME = gather stage; } (every job of a swept stage),
  #            or the strings of repx.toml: "STAGE", "STAGE[*]", "path:DIR"
  mkStage =
    { name
    , plugin ? null
    , sha256 ? null
    , mode ? null
    , inputs ? { }
    , params ? { }
    , outputs ? [ ]
    , tools ? [ ]
    , sources ? [ ]
    , limits ? { }
    , resources ? { }
    , retries ? null
    , escalate ? { }
    }:
    let
      f = fail "mkStage" name;
      input = key: value:
        if isPath value then
          f "input `${key}` is the Nix path ${toString value}; write a project directory as the string \"path:DIR\", relative to the lab file"
        else if is "repx.gather" value then "${nameOf "repx.stage" "mkStage" name "input `${key}`" value.stage}[*]"
        else nameOf "repx.stage" "mkStage" name "input `${key}`" value;
      upstream = value:
        if is "repx.stage" value then [ value ]
        else if is "repx.gather" value && is "repx.stage" value.stage then [ value.stage ]
        else [ ];
    in
    if !isString name then throw "repx.mkStage: `name` must be a string, not ${describe name}"
    else if plugin == null then
      f "has no `plugin`: give a .wasm file (./plugins/${name}.wasm, or a string relative to the lab file) or \"builtin:make\""
    else if !(isString plugin || isPath plugin) then
      f "`plugin` must be a path or a string, not ${describe plugin}"
    else if mode != null && !(elem mode [ "pure" "impure" "hermetic" ]) then
      f "unknown mode `${toString mode}`: use \"pure\", \"impure\" or \"hermetic\""
    else
      present
        {
          _type = "repx.stage";
          inherit name sha256 mode retries;
          # A path stays where it is (no copy into the Nix store): the plugin is read from
          # the project directory like a relative string, and needs no pin.
          plugin = toString plugin;
          inputs = mapAttrs input (attrset "mkStage" name "inputs" inputs);
          params = mapAttrs (exact "mkStage" name) (attrset "mkStage" name "params" params);
          outputs = strings "mkStage" name "outputs" outputs;
          tools = strings "mkStage" name "tools" tools;
          sources = strings "mkStage" name "sources" sources;
          limits = attrset "mkStage" name "limits" limits;
          resources = attrset "mkStage" name "resources" resources;
          escalate = attrset "mkStage" name "escalate" escalate;
        } // {
        _upstream = concatMap upstream (builtins.attrValues inputs);
      };

  # gather stage: an input of every job of a swept stage (`STAGE[*]` in repx.toml).
  gather = stage: { _type = "repx.gather"; inherit stage; };

  # mkPipeline { name; stages = [ generate sum plot ]; }: stages by value or by name.
  mkPipeline = { name, stages }:
    if !isString name then throw "repx.mkPipeline: `name` must be a string, not ${describe name}"
    else if !isList stages then fail "mkPipeline" name "`stages` must be a list of stages, not ${describe stages}"
    else {
      _type = "repx.pipeline";
      inherit name;
      stages = map (nameOf "repx.stage" "mkPipeline" name "a stage") stages;
      _stages = filter (is "repx.stage") stages;
    };

  # mkRun { name; pipelines = [ main ]; params = { seed = [ 1 2 3 ]; }; zip = [ [ "a" "b" ] ]; }
  # A list in params is a sweep axis; zip groups advance together.
  mkRun = { name, pipelines, params ? { }, zip ? [ ] }:
    if !isString name then throw "repx.mkRun: `name` must be a string, not ${describe name}"
    else if !isList pipelines then fail "mkRun" name "`pipelines` must be a list of pipelines, not ${describe pipelines}"
    else if !(isList zip && all (g: isList g && all isString g) zip) then
      fail "mkRun" name "`zip` must be a list of lists of parameter names"
    else
      present
        {
          _type = "repx.run";
          inherit name zip;
          pipelines = map (nameOf "repx.pipeline" "mkRun" name "a pipeline") pipelines;
          params = mapAttrs (exact "mkRun" name) (attrset "mkRun" name "params" params);
        } // {
        _pipelines = filter (is "repx.pipeline") pipelines;
      };

  # mkLab { name; runs = [ simple ]; }: the lab, with every stage and pipeline its runs
  # reach. `pipelines` and `stages` add ones no run reaches (or that are named by string
  # only); `slurm` is the [slurm] table; `project` the project directory, for a lab built
  # into the Nix store (a string: an absolute path).
  mkLab = { name ? null, runs ? [ ], pipelines ? [ ], stages ? [ ], slurm ? null, project ? null }:
    let
      check = what: type: list:
        if isList list && all (is type) list then list
        else throw "repx.mkLab: `${what}` must be a list of ${type} values (what mk${
          if type == "repx.run" then "Run" else if type == "repx.pipeline" then "Pipeline" else "Stage"
        } returns)";
      runList = check "runs" "repx.run" runs;
      pipelineList = check "pipelines" "repx.pipeline" pipelines ++ concatMap (r: r._pipelines) runList;
      direct = check "stages" "repx.stage" stages ++ concatMap (p: p._stages) pipelineList;
      # Stages reached through inputs too; genericClosure ends on cycles (repx names them).
      reached = map (item: item.stage) (genericClosure {
        startSet = map (stage: { key = stage.name; inherit stage; }) direct;
        operator = item: map (stage: { key = stage.name; inherit stage; }) item.stage._upstream;
      });
      allStages = byName "mkLab" "stage" (direct ++ concatMap (s: s._upstream) reached);
      model = _: value: removeAttrs value [ "_type" "name" "_upstream" "_stages" "_pipelines" ];
    in
    if name != null && !isString name then throw "repx.mkLab: `name` must be a string, not ${describe name}"
    else if project != null && !isString project then
      throw "repx.mkLab: `project` must be a string (an absolute path), not ${describe project}"
    else
      present {
        lab = present { inherit name project; };
        stages = mapAttrs model allStages;
        pipelines = mapAttrs model (byName "mkLab" "pipeline" pipelineList);
        runs = mapAttrs model (byName "mkLab" "run" runList);
        slurm = if slurm == null then null else attrset "mkLab" (if name == null then "lab" else name) "slurm" slurm;
      };
in
{
  inherit mkStage mkPipeline mkRun mkLab gather;
}
