#!/usr/bin/env bash
# Sharded runs: scan throughput with 1, 2 and 4 shards run at once by GNU parallel (plus the
# merge), and the cost of merging the parts of a 1,000,000-entry scan. Medians of RUNS
# interleaved runs; prints the load average, as the machine may be shared.
#
#   cargo build --release && benches/shard.sh            # both
#   benches/shard.sh scan | benches/shard.sh merge
#   RUNS=7 MERGE_ENTRIES=1000000 benches/shard.sh merge
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/cutover}
BENCH_DIR=${BENCH_DIR:-/tmp/bench-data}
RUNS=${RUNS:-5}
MERGE_ENTRIES=${MERGE_ENTRIES:-1000000}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
what=${1:-all}
command -v parallel >/dev/null && parallel --version 2>/dev/null | grep -q 'GNU parallel' ||
  { echo "GNU parallel is needed (Debian: apt-get install parallel)" >&2; exit 2; }

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# timed CMD...: wall seconds of one run
timed() { local t0=$EPOCHREALTIME; "$@" >/dev/null 2>&1; awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }'; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"

if [[ $what == all || $what == scan ]]; then
  if [[ ! -e $BENCH_DIR/small.done ]]; then
    echo "== generating $BENCH_DIR/small (once)"
    python3 benches/gen.py small "$BENCH_DIR/small" && touch "$BENCH_DIR/small.done"
  fi
  tree=$BENCH_DIR/small
  find "$tree" -type f -print0 | xargs -0 cat >/dev/null   # warm: this measures CPU, not the disk
  bytes=$(du -sb "$tree" | cut -f1)
  jobs=$(nproc)
  # N shards at once, each with its share of the CPUs' hashing threads, then the merge.
  sharded() {
    local n=$1 per=$(( jobs / $1 )); (( per < 1 )) && per=1
    parallel -j"$n" "$BIN" -j "$per" scan "$tree" --shard {}/"$n" -o "$OUT/s$n.{}" ::: $(seq 1 "$n")
    "$BIN" merge "$OUT"/s"$n".* -o "$OUT/m$n"
  }
  # The slowest of N shards each run alone, with all the CPUs: what N hosts would take.
  slowest() {
    local n=$1 worst=0 i s
    for i in $(seq 1 "$n"); do
      s=$(timed "$BIN" scan "$tree" --shard "$i/$n" -o "$OUT/alone.$i")
      worst=$(awk -v a="$worst" -v b="$s" 'BEGIN { print (b > a) ? b : a }')
    done
    echo "$worst"
  }
  declare -A t
  for ((r = 0; r < RUNS; r++)); do
    t[1]+="$(timed "$BIN" scan "$tree" -o "$OUT/single") "
    t[2]+="$(timed sharded 2) "
    t[4]+="$(timed sharded 4) "
    t[a2]+="$(slowest 2) "
    t[a4]+="$(slowest 4) "
  done
  one=$(tr ' ' '\n' <<<"${t[1]}" | grep . | median)
  printf '\n%-40s %10s %10s %8s\n' "scan of $tree" "median s" "MB/s" "ratio"
  for n in 1 2 4 a2 a4; do
    m=$(tr ' ' '\n' <<<"${t[$n]}" | grep . | median)
    case $n in
      1) label="1 (plain scan)" ;;
      a*) label="slowest of ${n#a} shards, each alone" ;;
      *) label="$n shards at once here, + merge" ;;
    esac
    awk -v l="$label" -v m="$m" -v b="$bytes" -v o="$one" 'BEGIN { printf "%-40s %10.2f %10.1f %8.2f\n", l, m, b / m / 1e6, m / o }'
  done
  "$BIN" diff "$OUT/single" "$OUT/m4" >/dev/null && echo "(the merge of 4 parts is identical to the plain scan)"
fi

if [[ $what == all || $what == merge ]]; then
  cargo bench --bench shard_parts -- "$OUT/parts" "$MERGE_ENTRIES" 4 >/dev/null 2>&1
  "$BIN" merge "$OUT"/parts/part.* -o "$OUT/full" >/dev/null
  merge=() read=()
  for ((r = 0; r < RUNS; r++)); do
    merge+=("$(timed "$BIN" merge "$OUT"/parts/part.1 "$OUT"/parts/part.2 "$OUT"/parts/part.3 "$OUT"/parts/part.4 -o "$OUT/full")")
    read+=("$(timed "$BIN" diff "$OUT/full" "$OUT/full")")
  done
  rss=$( { /usr/bin/time -f %M "$BIN" merge "$OUT"/parts/part.* -o "$OUT/full" >/dev/null; } 2>&1 | tail -1)
  m=$(printf '%s\n' "${merge[@]}" | median); d=$(printf '%s\n' "${read[@]}" | median)
  entries=$(head -c 2000 "$OUT/full" | sed -n 2p | grep -o '"entries":[0-9]*' | cut -d: -f2)
  printf '\nmerge of 4 parts into %s entries: median %.2f s, peak RSS %s KiB\n' "$entries" "$m" "$rss"
  printf 'peer: cutover diff FULL FULL (reads the whole manifest twice): median %.2f s; ratio merge/peer %.2f\n' "$d" \
    "$(awk -v a="$m" -v b="$d" 'BEGIN { print a / b }')"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
