#!/usr/bin/env bash
# Hermetic per-job cost against Nix's own, in one run of this script:
#   trivial     N trivial derivations (`/bin/sh -c 'echo … > $out'`), one `nix-build` each,
#               as repx builds hermetic jobs: Nix's own cost per derivation;
#   trivial-1   the same N derivations' kind in one `nix-build`, for Nix's batched cost;
#   hermetic    `repx run --hermetic -j 1` of N jobs of the bench-trivial plugin: a
#               derivation each, built by the static repx in the Nix sandbox (evaluation,
#               sandbox, plugin compilation, copy into repx's store);
#   nix-valid   the same run again without repx's store: Nix finds every derivation valid;
#   pure        the same N jobs in pure mode, in-process, for scale.
# Every derivation is new to the store (a nonce in its parameters), so Nix builds it.
#
#   benches/hermetic.sh          # 20 jobs
#   N=50 benches/hermetic.sh
#
# Needs: Nix set up (scripts/nix-setup), target/release/repx (`cargo build --release -p
# repx`), the static repx (`cargo build --release --target x86_64-unknown-linux-musl -p
# repx`), the bench plugins (`scripts/build-plugins`). Nothing is left behind but Nix store
# paths, which `nix-collect-garbage` removes.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
n=${N:-20}
repx=${REPX:-$repo/target/release/repx}
builder=$repo/target/x86_64-unknown-linux-musl/release/repx
plugin=$repo/plugins/target/wasm32-wasip2/release/bench-trivial.wasm
for need in "$repx" "$builder" "$plugin"; do
    if [[ ! -e $need ]]; then
        echo "hermetic.sh: $need is missing: see the header of this script" >&2
        exit 2
    fi
done
work=$(mktemp -d "${TMPDIR:-/tmp}/repx-hermetic-bench.XXXXXX")
cleanup() {
    chmod -R u+w "$work" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
nonce=$(date +%s%N)
now() { date +%s%N; }
per_job() { awk -v ns="$1" -v n="$n" 'BEGIN { printf "%.1f", ns / n / 1e6 }'; }

# Nix alone: one nix-build per trivial derivation.
start=$(now)
for i in $(seq 1 "$n"); do
    nix-build --no-out-link -E "derivation {
      name = \"trivial-$nonce-$i\"; system = builtins.currentSystem; builder = \"/bin/sh\";
      args = [ \"-c\" \"echo $i > \$out\" ]; }" >/dev/null 2>&1
done
trivial=$(( $(now) - start ))

# Nix alone, batched: N more derivations in one nix-build.
start=$(now)
nix-build --no-out-link -E "builtins.genList (i: derivation {
  name = \"trivial-batch-$nonce-\${toString i}\"; system = builtins.currentSystem;
  builder = \"/bin/sh\"; args = [ \"-c\" \"echo \${toString i} > \$out\" ]; }) $n" >/dev/null 2>&1
batched=$(( $(now) - start ))

mkdir -p "$work/lab/plugins"
cp "$plugin" "$work/lab/plugins/"
seeds=$(seq -s ', ' "$nonce" $(( nonce + n - 1 )))
cat > "$work/lab/repx.toml" <<TOML
[stages.job]
plugin = "plugins/bench-trivial.wasm"
params = { seed = 0 }

[pipelines.p]
stages = ["job"]

[runs.r]
pipelines = ["p"]
params = { seed = [$seeds] }
TOML
run() { REPX_NIX_BUILDER=$builder "$repx" run --lab "$work/lab" -j 1 "$@" 2>"$work/log" || { cat "$work/log" >&2; exit 1; }; }

start=$(now)
run --hermetic
hermetic=$(( $(now) - start ))
built=$(grep -c '^   ran' "$work/log" || true)

rm -rf "$work/lab/.repx"
start=$(now)
run --hermetic
valid=$(( $(now) - start ))

chmod -R u+w "$work/lab/.repx" && rm -rf "$work/lab/.repx"
start=$(now)
run --pure
pure=$(( $(now) - start ))

echo "hermetic bench: $n jobs, ms per job (each figure one run of this script)"
printf '  %-10s %8s ms\n' trivial "$(per_job $trivial)" trivial-1 "$(per_job $batched)" \
    hermetic "$(per_job $hermetic)" nix-valid "$(per_job $valid)" pure "$(per_job $pure)"
awk -v h="$hermetic" -v t="$trivial" -v v="$valid" 'BEGIN {
    printf "  hermetic / trivial = %.2f; nix-valid / trivial = %.2f\n", h / t, v / t }'
[[ $built -eq $n ]] || { echo "hermetic.sh: expected $n jobs to run, saw $built" >&2; exit 1; }
