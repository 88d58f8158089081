#!/usr/bin/env bash
# What listing every operation costs: `cutover repair` with and without `-i --log FILE`,
# next to `rsync -a` with and without `-i --log-file=FILE`, on a fresh empty target each run.
# usage: benches/itemize.sh
# env:   BENCH_DIR=/tmp/bench-data  CUTOVER=target/release/cutover  FILES=20000  RUNS=5
#
# The four commands run interleaved, RUNS times each; the target is removed (untimed) before
# every run. Prints the median wall time of each and the ratio with/without for both tools.
set -euo pipefail
export LC_ALL=C

[[ -n ${CUTOVER:-} && $CUTOVER != /* ]] && CUTOVER="$PWD/$CUTOVER"
cd "$(dirname "$0")/.."
CUTOVER=${CUTOVER:-$PWD/target/release/cutover}
BENCH_DIR=${BENCH_DIR:-/tmp/bench-data}
FILES=${FILES:-20000}
RUNS=${RUNS:-5}
ROOT=$BENCH_DIR/itemize-$FILES
SRC=$ROOT/src
DST=$ROOT/dst
STATE=$ROOT/state

command -v rsync >/dev/null || { echo "itemize.sh: rsync not found (apt-get install -y rsync)" >&2; exit 2; }
[[ -x $CUTOVER ]] || { echo "itemize.sh: build first: cargo build --release" >&2; exit 2; }

if [[ ! -e $ROOT/src.done ]]; then
  rm -rf "$ROOT" && mkdir -p "$SRC"
  python3 - "$SRC" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 200))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 4096)))
EOF
  touch "$ROOT/src.done"
fi
cat "$SRC"/*/* >/dev/null   # warm

names=(cutover cutover-i-log rsync rsync-i-log)
declare -A times
run() {
  local name=$1
  rm -rf "$DST" "$STATE"
  case $name in cutover-i-log) rm -f "$ROOT/cutover.log" ;; rsync-i-log) rm -f "$ROOT/rsync.log" ;; esac
  mkdir -p "$STATE"
  local start=$EPOCHREALTIME
  case $name in
    cutover) "$CUTOVER" repair -q --state "$STATE" "$SRC" "$DST" ;;
    cutover-i-log) "$CUTOVER" repair -i --log "$ROOT/cutover.log" --state "$STATE" "$SRC" "$DST" >"$ROOT/cutover-i.out" ;;
    rsync) rsync -a "$SRC/" "$DST/" ;;
    rsync-i-log) rsync -a -i --log-file="$ROOT/rsync.log" "$SRC/" "$DST/" >"$ROOT/rsync-i.out" ;;
  esac
  local end=$EPOCHREALTIME
  times[$name]+="$(python3 -c "print($end - $start)") "
}

for ((r = 0; r < RUNS; r++)); do
  for name in "${names[@]}"; do run "$name"; done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "files: $FILES  runs: $RUNS  load: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A med
for name in "${names[@]}"; do
  med[$name]=$(echo "${times[$name]}" | median)
  printf '%-14s median %.3f s\n' "$name" "${med[$name]}"
done
python3 -c "print('ratio cutover -i --log / cutover: %.2f' % (${med[cutover-i-log]} / ${med[cutover]}))"
python3 -c "print('ratio rsync -i --log-file / rsync: %.2f' % (${med[rsync-i-log]} / ${med[rsync]}))"
echo "lines: cutover log $(wc -l <"$ROOT/cutover.log"), cutover -i $(wc -l <"$ROOT/cutover-i.out"), rsync -i $(wc -l <"$ROOT/rsync-i.out")"
