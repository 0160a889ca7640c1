#!/usr/bin/env bash
# Case (g) of the benchmarks: the same trivial jobs (each writes a small JSON file) in repx,
# in Snakemake (installed from PyPI into a throwaway virtual environment) and, where
# `nix-build` exists, as Nix derivations; all in one run, on this machine, at -j 2.
#
#   benches/peers.sh            # 1,000 jobs
#   N=200 benches/peers.sh      # fewer
#
# Needs: target/release/repx (`cargo build --release`), the bench plugins
# (`scripts/build-plugins`), python3 with venv, network access to PyPI. REPX=path overrides
# the binary; SNAKEMAKE_VENV=dir reuses (or keeps) a virtual environment with Snakemake
# instead of installing it into the temporary directory. Nothing else is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
n=${N:-1000}
jobs=2
repx=${REPX:-$repo/target/release/repx}
plugin=$repo/plugins/target/wasm32-wasip2/release/bench-trivial.wasm
for need in "$repx" "$plugin"; do
    if [[ ! -e $need ]]; then
        echo "peers.sh: $need is missing: run \`cargo build --release\` and \`scripts/build-plugins\`" >&2
        exit 2
    fi
done
work=$(mktemp -d "${TMPDIR:-/tmp}/repx-peers.XXXXXX")
# Committed outputs are read-only; make them writable to remove them.
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

now() { date +%s.%N; }
# seconds FROM TO
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
values=$(seq -s ', ' 0 $((n - 1)))

declare -A fresh noop
note=()

# --- repx ---------------------------------------------------------------------------------
repx_lab() {
    mkdir -p "$1"
    cp "$plugin" "$1/bench-trivial.wasm"
    cat >"$1/repx.toml" <<TOML
[lab]
name = "peers"

[stages.trivial]
plugin = "bench-trivial.wasm"
params = { i = 0 }
outputs = ["result.json"]

[pipelines.main]
stages = ["trivial"]

[runs.sweep]
pipelines = ["main"]
params = { i = [$values] }
TOML
}
export REPX_CACHE_DIR=$work/repx-cache
# Compiling the plugin once is not per-job cost: warm the compiled-plugin cache on a
# throwaway copy, as any second run of a plugin finds it.
repx_lab "$work/repx-warm"
"$repx" run --lab "$work/repx-warm" -j $jobs >/dev/null 2>&1
repx_lab "$work/repx"
t0=$(now)
"$repx" run --lab "$work/repx" -j $jobs >/dev/null 2>"$work/repx.log" || { tail "$work/repx.log"; exit 1; }
t1=$(now)
"$repx" run --lab "$work/repx" -j $jobs >/dev/null 2>>"$work/repx.log"
t2=$(now)
fresh[repx]=$(seconds "$t0" "$t1")
noop[repx]=$(seconds "$t1" "$t2")
echo "repx:      $n jobs in ${fresh[repx]} s, no-op re-run ${noop[repx]} s" >&2

# --- Snakemake ----------------------------------------------------------------------------
venv=${SNAKEMAKE_VENV:-$work/venv}
if [[ -x $venv/bin/snakemake ]] || { python3 -m venv "$venv" >/dev/null 2>&1 &&
    "$venv/bin/pip" install --quiet --disable-pip-version-check snakemake >"$work/pip.log" 2>&1; }; then
    mkdir -p "$work/snakemake"
    # Snakemake at its fastest: a `shell:` rule (a `run:` rule starts a Python process
    # per job, about 0.8 s each here) and the greedy scheduler (the default ILP one took
    # twice as long for 1,000 jobs).
    cat >"$work/snakemake/Snakefile" <<SMK
rule all:
    input: expand("out/{i}/result.json", i=range($n))

rule trivial:
    output: "out/{i}/result.json"
    shell: "echo '{{\\"i\\": {wildcards.i}}}' > {output}"
SMK
    snakemake=("$venv/bin/snakemake" --cores $jobs --scheduler greedy --quiet all)
    version=$("$venv/bin/snakemake" --version)
    t0=$(now)
    (cd "$work/snakemake" && "${snakemake[@]}" >"$work/smk.log" 2>&1) || { tail "$work/smk.log"; exit 1; }
    t1=$(now)
    (cd "$work/snakemake" && "${snakemake[@]}" >>"$work/smk.log" 2>&1)
    t2=$(now)
    fresh[snakemake]=$(seconds "$t0" "$t1")
    noop[snakemake]=$(seconds "$t1" "$t2")
    note+=("Snakemake $version, a \`shell:\` rule, --scheduler greedy")
    echo "snakemake: $n jobs in ${fresh[snakemake]} s, no-op re-run ${noop[snakemake]} s" >&2
else
    note+=("Snakemake skipped: could not create a venv or install it from PyPI (see pip's log)")
    tail -5 "$work/pip.log" >&2 || true
fi

# --- Nix ----------------------------------------------------------------------------------
if command -v nix-build >/dev/null; then
    mkdir -p "$work/nix"
    # A nonce keeps earlier runs' outputs in /nix/store from answering for these.
    nonce=$(date +%s%N)
    cat >"$work/nix/default.nix" <<NIX
builtins.genList (i: builtins.derivation {
  name = "trivial-\${toString i}";
  system = builtins.currentSystem;
  # Debian's nix maps /bin/sh into the sandbox (sandbox-paths, from busybox).
  builder = "/bin/sh";
  args = [ "-c" "echo '{\"i\": \${toString i}, \"nonce\": $nonce}' > \$out" ];
}) $n
NIX
    t0=$(now)
    if nix-build --no-out-link -j $jobs "$work/nix/default.nix" >"$work/nix.log" 2>&1; then
        t1=$(now)
        nix-build --no-out-link -j $jobs "$work/nix/default.nix" >>"$work/nix.log" 2>&1
        t2=$(now)
        fresh[nix]=$(seconds "$t0" "$t1")
        noop[nix]=$(seconds "$t1" "$t2")
        note+=("$(nix-build --version | head -1), builder /bin/sh")
        echo "nix:       $n derivations in ${fresh[nix]} s, no-op re-run ${noop[nix]} s" >&2
    else
        note+=("Nix failed to build (is /bin/sh in the sandbox? on Debian: apt-get install busybox): $(tail -1 "$work/nix.log")")
    fi
else
    note+=("Nix skipped: nix-build is not installed on this machine")
fi

# --- Report -------------------------------------------------------------------------------
echo
echo "peers, $(date -u +%F), $(nproc) cores, $n trivial jobs at -j $jobs"
printf '%-10s %11s %11s %12s %13s %12s\n' tool "fresh run" "per job" "vs repx" "no-op run" "vs repx"
for tool in repx snakemake nix; do
    [[ -n ${fresh[$tool]:-} ]] || continue
    per_job=$(awk -v t="${fresh[$tool]}" -v n="$n" 'BEGIN { printf "%.3f ms", 1000 * t / n }')
    ratio=$(awk -v t="${fresh[$tool]}" -v r="${fresh[repx]}" 'BEGIN { printf "%.1f×", t / r }')
    noop_ratio=$(awk -v t="${noop[$tool]}" -v r="${noop[repx]}" 'BEGIN { printf "%.1f×", t / r }')
    printf '%-10s %9s s %11s %12s %11s s %12s\n' "$tool" "${fresh[$tool]}" "$per_job" "$ratio" "${noop[$tool]}" "$noop_ratio"
done
echo "(\"vs repx\": the tool's time over repx's; target: ≥ 20× on the fresh run)"
for line in "${note[@]}"; do
    echo "- $line"
done
