#!/usr/bin/env bash
# Memory of plan and apply, as peak RSS (/usr/bin/time -f %M), the page cache warm.
# usage: benches/plan-memory.sh [linux] [synthetic]        (default: both)
# env:   RUNS=3  BENCH_DIR=/tmp/bench-data  CUTOVER=target/release/cutover
#        SIZES="100000 1000000"  (files of the synthetic pairs)
#
# linux:     the Linux 6.1 -> 6.12 pair of compare.sh (fetched there: `benches/compare.sh repair`
#            or this script fetches it the same way). Both trees are scanned to manifests once;
#            then, RUNS times interleaved, `diff NEW OLD` and `plan --delete NEW OLD -o FILE` on
#            the manifests, and the same on the directories. What planning costs per operation
#            is (median plan RSS - median diff RSS) / operations: both hold the two manifests
#            and the diff report, plan also what it keeps of the operations.
# synthetic: for each N in SIZES, N files of 0-100 bytes (benches/gen.py memory, 100 per
#            directory) missing from an empty target: peak RSS of `diff SRC DST`,
#            `plan SRC DST -o FILE` and `apply FILE`, and the same per operation, to show
#            what grows with the plan and what does not. The target is verified equal with
#            `rsync -rlpcn --delete` after the apply (untimed).
set -euo pipefail
export LC_ALL=C
[[ -n ${CUTOVER:-} && $CUTOVER != /* ]] && CUTOVER="$PWD/$CUTOVER"
cd "$(dirname "$0")/.."
CUTOVER=${CUTOVER:-$PWD/target/release/cutover}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/bench-data}
SIZES=${SIZES:-100000 1000000}
OUT=$BENCH_DIR/out/plan-memory
mkdir -p "$OUT"
scenarios=(linux synthetic)
(($#)) && scenarios=("$@")
[[ -x /usr/bin/time ]] || { echo "plan-memory.sh: /usr/bin/time not found (apt-get install -y time)" >&2; exit 2; }
[[ -x $CUTOVER ]] || { echo "plan-memory.sh: no cutover at $CUTOVER (cargo build --release)" >&2; exit 2; }

# rss LABEL CMD... -- run CMD, print its peak RSS in KiB; exit 0 or 1 is success
rss() {
  local label=$1 rc=0; shift
  /usr/bin/time -f %M -o "$OUT/$label.rss" "$@" >"$OUT/$label.out" 2>&1 || rc=$?
  ((rc <= 1)) || { echo "!! $label failed (exit $rc): $* -- see $OUT/$label.out" >&2; exit 2; }
  tail -n 1 "$OUT/$label.rss"
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
operations() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["totals"]["operations"])' "$1"; }
warm() { find "$@" -type f -print0 | xargs -0 -r cat >/dev/null; }

bench_linux() {
  local d=$BENCH_DIR/linux
  [[ -e $d.done ]] || bash benches/compare.sh repair >/dev/null   # fetches the trees once
  local new=$d/6.12 old=$d/6.1
  [[ -s $OUT/linux-new.manifest ]] || "$CUTOVER" scan "$new" -o "$OUT/linux-new.manifest"
  [[ -s $OUT/linux-old.manifest ]] || "$CUTOVER" scan "$old" -o "$OUT/linux-old.manifest"
  warm "$new" "$old"
  local kind src dst flags
  # -a adds a `meta` operation for every file whose mtime differs (most of them here): the
  # operations plan keeps in memory until the end.
  for kind in manifests manifests-a directories-a; do
    case $kind in
      manifests*) src=$OUT/linux-new.manifest dst=$OUT/linux-old.manifest ;;
      *) src=$new dst=$old ;;
    esac
    flags=(); [[ $kind == *-a ]] && flags=(-a)
    local diffs=() plans=() i
    for ((i = 0; i < RUNS; i++)); do
      diffs+=("$(rss linux-diff "$CUTOVER" diff "${flags[@]}" "$src" "$dst")")
      plans+=("$(rss linux-plan "$CUTOVER" plan "${flags[@]}" --delete "$src" "$dst" -o "$OUT/linux.plan")")
    done
    local dm pm ops
    dm=$(printf '%s\n' "${diffs[@]}" | median)
    pm=$(printf '%s\n' "${plans[@]}" | median)
    ops=$(operations "$OUT/linux.plan")
    awk -v k="$kind" -v d="$dm" -v p="$pm" -v n="$ops" 'BEGIN {
      printf "linux %-12s %6d operations: diff %.1f MiB, plan %.1f MiB: (plan - diff) / operations = %.0f B\n",
        k, n, d / 1024, p / 1024, (p - d) * 1024 / n }'
  done
}

bench_synthetic() {
  local n
  for n in $SIZES; do
    local src=$BENCH_DIR/memory-$n dst=$OUT/target-$n plan=$OUT/synthetic-$n.plan
    if [[ ! -e $src.done ]]; then
      echo "== generating $src (once)"
      rm -rf -- "$src" && python3 benches/gen.py memory "$src" "$n" && date -u +%FT%TZ >"$src.done"
    fi
    rm -rf -- "$dst" && mkdir "$dst"
    warm "$src"
    local d p a ops t0 t1
    d=$(rss "diff-$n" "$CUTOVER" diff "$src" "$dst")
    p=$(rss "plan-$n" "$CUTOVER" plan "$src" "$dst" -o "$plan")
    ops=$(operations "$plan")
    t0=$EPOCHREALTIME
    a=$(rss "apply-$n" "$CUTOVER" apply "$plan" --state "$OUT/state")
    t1=$EPOCHREALTIME
    if [[ -n $(rsync -rlpcn --delete -i "$src/" "$dst/") ]]; then
      echo "!! the target of $n files is not equal to its source after apply" >&2; exit 2
    fi
    awk -v n="$n" -v o="$ops" -v d="$d" -v p="$p" -v a="$a" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" 'BEGIN {
      printf "synthetic %8d files, %8d operations: peak RSS diff %.1f MiB, plan %.1f MiB ((plan - diff) / op %.0f B), apply %.1f MiB (%.0f B/op, %.0f s)\n",
        n, o, d / 1024, p / 1024, (p - d) * 1024 / o, a / 1024, a * 1024 / o, s }'
    rm -rf -- "$dst" "$plan"
  done
}

echo "load: $(uptime)"
for sc in "${scenarios[@]}"; do "bench_$sc"; done
