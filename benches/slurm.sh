#!/usr/bin/env bash
# SLURM drain: the same N tiny jobs (each writes a small JSON file) through SLURM, in one
# run of this script:
#   batched   `repx run --scheduler slurm` as it is: jobs packed into few allocations
#             (one job array), each running `repx worker` in-process;
#   per-job   `--batch-size 1 --no-job-arrays --max-submissions N`: one `sbatch` per job,
#             all submitted at once, as the original RepX and Snakemake's SLURM executor do;
#   per-task  (ALL=1 only) `--batch-size 1 --max-submissions N`: one job array of N tasks.
# Each is timed from `repx run` to its exit (every output committed); the committed
# records of the modes are compared.
#
#   benches/slurm.sh            # 1,000 jobs
#   N=200 benches/slurm.sh      # fewer
#
# Needs: SLURM up (scripts/slurm-setup), target/release/repx (`cargo build --release`), the
# bench plugins (`scripts/build-plugins`). REPX=path overrides the binary. The work
# directory must be visible to the SLURM nodes (it is, on the one-node cluster); WORK=dir
# puts it elsewhere. Nothing is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
n=${N:-1000}
repx=${REPX:-$repo/target/release/repx}
plugin=$repo/plugins/target/wasm32-wasip2/release/bench-trivial.wasm
for need in "$repx" "$plugin"; do
    if [[ ! -e $need ]]; then
        echo "slurm.sh: $need is missing: run \`cargo build --release\` and \`scripts/build-plugins\`" >&2
        exit 2
    fi
done
if ! sinfo --noheader --format=%T 2>/dev/null | grep -qE 'idle|mixed|allocated'; then
    echo "slurm.sh: SLURM is not up: run scripts/slurm-setup" >&2
    exit 2
fi
work=$(mktemp -d "${WORK:-${TMPDIR:-/tmp}}/repx-slurm-bench.XXXXXX")
# Committed outputs are read-only; make them writable to remove them. Cancel anything left.
cleanup() {
    for name in $(cat "$work"/names 2>/dev/null); do scancel --name="$name" 2>/dev/null || true; done
    chmod -R u+w "$work" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
values=$(seq -s ', ' 0 $((n - 1)))

lab() {
    mkdir -p "$1"
    cp "$plugin" "$1/bench-trivial.wasm"
    cat >"$1/repx.toml" <<TOML
[lab]
name = "slurm-drain"

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
export REPX_CACHE_DIR=$work/cache
export REPX_CONFIG=$work/no-user-config.toml
# Compiling the plugin once is not per-job cost: warm the compiled-plugin cache locally.
lab "$work/warm"
"$repx" run --lab "$work/warm" >/dev/null 2>&1

declare -A drain subs allocs
modes=(batched per-job)
[[ ${ALL:-} == 1 ]] && modes+=(per-task)
for mode in "${modes[@]}"; do
    case $mode in
    batched) flags=() ;;
    per-job) flags=(--batch-size 1 --no-job-arrays --max-submissions "$n") ;;
    per-task) flags=(--batch-size 1 --max-submissions "$n") ;;
    esac
    lab "$work/$mode"
    echo "slurm.sh: $mode: $n jobs, repx run --scheduler slurm ${flags[*]}" >&2
    t0=$(now)
    "$repx" run --lab "$work/$mode" --scheduler slurm "${flags[@]}" >/dev/null 2>"$work/$mode.log" &
    pid=$!
    # The run's job name, for the cleanup should this script be stopped.
    for _ in $(seq 100); do
        name=$(grep -ho '"name":"[^"]*"' "$work/$mode"/.repx/slurm/*/submissions.jsonl 2>/dev/null | head -1 | cut -d'"' -f4 || true)
        [[ -n $name ]] && { echo "$name" >>"$work/names"; break; }
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    wait $pid || { tail "$work/$mode.log"; exit 1; }
    t1=$(now)
    drain[$mode]=$(seconds "$t0" "$t1")
    line=$(grep '^slurm: ' "$work/$mode.log")
    allocs[$mode]=$(echo "$line" | awk '{ print $2 }')
    subs[$mode]=$(echo "$line" | awk '{ print $5 }')
    grep -q "$n jobs: $n ran" "$work/$mode.log" || { tail "$work/$mode.log"; exit 1; }
    echo "slurm.sh: $mode: ${drain[$mode]} s, ${subs[$mode]} sbatch, ${allocs[$mode]} allocations" >&2
done

# The same records (ids and output hashes) whichever way the jobs went.
records() {
    python3 -c 'import json, sys
print("\n".join(sorted({(r["id"] + " " + r["hash"]) for r in map(json.loads, open(sys.argv[1]))})))' "$1/.repx/records.jsonl"
}
for mode in "${modes[@]}"; do
    if [[ $(records "$work/batched") != "$(records "$work/$mode")" ]]; then
        echo "slurm.sh: $mode committed other outputs than batched" >&2
        exit 1
    fi
done

echo
echo "SLURM drain, $(date -u +%F), $(sinfo --noheader --format='%D node(s), %c CPUs/node' | head -1), $n trivial jobs, $(sbatch --version)"
printf '%-10s %8s %12s %10s %12s\n' mode sbatch allocations drain "per job"
for mode in "${modes[@]}"; do
    per_job=$(awk -v t="${drain[$mode]}" -v n="$n" 'BEGIN { printf "%.1f ms", 1000 * t / n }')
    printf '%-10s %8s %12s %8s s %12s\n' "$mode" "${subs[$mode]}" "${allocs[$mode]}" "${drain[$mode]}" "$per_job"
done
ratio=$(awk -v a="${drain[per-job]}" -v b="${drain[batched]}" 'BEGIN { printf "%.0f", a / b }')
echo "batched drains ${ratio}× faster than one submission per job (target: ≥ 10×)"
