#!/usr/bin/env bash
# Peak memory of the streamed manifest stages (issue 9, "Bounded memory"):
#   diff  of two synthetic manifests of 1M and 10M entries that differ in a few files
#   scan  of a 1M-file tree (benches/gen.py memory) writing its manifest
# Each is measured with /usr/bin/time -v (maximum resident set size) and timed; with BEFORE set to
# another cutover binary (e.g. one built from an earlier commit), the same commands run with it,
# interleaved, for the before/after ratio.
#
# usage: benches/memory-stream.sh [diff] [scan]          (default: diff scan)
# env:   RUNS=3  BENCH_DIR=/tmp/bench-data  CUTOVER=target/release/cutover  BEFORE=
#        SIZES="1000000 10000000"  CHANGED=10  SCAN_FILES=1000000  BEFORE_MAX=1000000
#        (BEFORE runs only up to BEFORE_MAX entries: the whole-manifest diff needs ~0.3 KB each)
set -euo pipefail
export LC_ALL=C
[[ -n ${CUTOVER:-} && $CUTOVER != /* ]] && CUTOVER="$PWD/$CUTOVER"
[[ -n ${BEFORE:-} && $BEFORE != /* ]] && BEFORE="$PWD/$BEFORE"
cd "$(dirname "$0")/.."
CUTOVER=${CUTOVER:-$PWD/target/release/cutover}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/bench-data}
SIZES=${SIZES:-"1000000 10000000"}
CHANGED=${CHANGED:-10}
SCAN_FILES=${SCAN_FILES:-1000000}
BEFORE_MAX=${BEFORE_MAX:-1000000}
scenarios=(diff scan)
(($#)) && scenarios=("$@")
[[ -x /usr/bin/time ]] || { echo "memory-stream.sh: /usr/bin/time not found (apt-get install -y time)" >&2; exit 2; }
cargo build --release --bin cutover --example synth-manifest >&2
SYNTH=$PWD/target/release/examples/synth-manifest
mkdir -p "$BENCH_DIR/out"
echo "load: $(uptime)"

# measure LABEL CMD... -- one run: prints "seconds peak_kib" (exit 0 or 1 is success)
measure() {
  local label=$1; shift
  local log=$BENCH_DIR/out/$label.time rc=0
  /usr/bin/time -v -o "$log" "$@" >"$BENCH_DIR/out/$label.out" 2>"$BENCH_DIR/out/$label.err" || rc=$?
  if ((rc > 1)); then echo "!! $label failed (exit $rc): $* -- see $BENCH_DIR/out/$label.err" >&2; return 1; fi
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i] }
              /Maximum resident set size/ { k = $2 } END { printf "%.2f %d\n", s, k }' "$log"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# runs NAME ENTRIES LIMIT CMD... -- RUNS interleaved runs of cutover (and BEFORE, when ENTRIES <=
# LIMIT), each after $PREP (untimed) when set; prints a table row
runs() {
  local name=$1 entries=$2 limit=$3; shift 3
  local at=() am=() bt=() bm=() r i
  for ((i = 1; i <= RUNS; i++)); do
    [[ -n ${PREP:-} ]] && bash -c "$PREP"
    r=$(measure "$name-after" "$CUTOVER" "$@") || return 1
    at+=("${r% *}"); am+=("${r#* }")
    if [[ -n ${BEFORE:-} ]] && ((entries <= limit)); then
      [[ -n ${PREP:-} ]] && bash -c "$PREP"
      r=$(measure "$name-before" "$BEFORE" "$@") || return 1
      bt+=("${r% *}"); bm+=("${r#* }")
    fi
  done
  local t m
  t=$(printf '%s\n' "${at[@]}" | median); m=$(printf '%s\n' "${am[@]}" | median)
  local row
  row=$(awk -v n="$name" -v e="$entries" -v t="$t" -v m="$m" \
    'BEGIN { printf "| %s | %d | %.2f s | %.1f MiB | %.1f B |", n, e, t, m / 1024, m * 1024 / e }')
  if ((${#bt[@]})); then
    local t0 m0
    t0=$(printf '%s\n' "${bt[@]}" | median); m0=$(printf '%s\n' "${bm[@]}" | median)
    row+=$(awk -v t="$t0" -v m="$m0" -v t1="$t" -v m1="$m" \
      'BEGIN { printf " %.2f s | %.1f MiB | time %.2f, memory %.3f |", t, m / 1024, t1 / t, m1 / m }')
  else
    row+=" | | |"
  fi
  rows+=("$row")
}

rows=()
for sc in "${scenarios[@]}"; do
  case $sc in
    diff)
      for n in $SIZES; do
        a=$BENCH_DIR/synth-$n-a.manifest b=$BENCH_DIR/synth-$n-b.manifest
        [[ -e $a ]] || { echo "== writing $a" >&2; "$SYNTH" "$a" "$n"; }
        [[ -e $b ]] || { echo "== writing $b ($CHANGED files changed)" >&2; "$SYNTH" "$b" "$n" "$CHANGED"; }
        echo "== diff of two $n-entry manifests ($(du -h "$a" | cut -f1) each)" >&2
        runs "diff" "$n" "$BEFORE_MAX" diff -q "$a" "$b"
      done
      ;;
    scan)
      d=$BENCH_DIR/memory-$SCAN_FILES
      if [[ ! -e $d.done ]]; then
        echo "== generating $d (once; slow)" >&2
        rm -rf -- "$d"; python3 benches/gen.py memory "$d" "$SCAN_FILES"; date -u +%FT%TZ >"$d.done"
      fi
      m=$BENCH_DIR/out/scan-$SCAN_FILES.manifest
      echo "== scan of $SCAN_FILES files writing a manifest (the tree warmed before every run)" >&2
      PREP="find '$d' -type f -print0 | xargs -0 -r cat >/dev/null" runs "scan -o" 1 "$SCAN_FILES" scan "$d" -o "$m"
      # The entry count, for the per-entry figure, from the manifest's header line.
      entries=$(head -n 2 "$m" | tail -n 1 | python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["entries"])')
      rows[-1]=$(awk -v row="${rows[-1]}" -v e="$entries" 'BEGIN { n = split(row, c, "|"); printf "| scan -o | %d |%s|%s| %.1f B |", e, c[4], c[5], c[5] * 1048576 / e; for (i = 7; i < n; i++) printf "%s|", c[i] }')
      ;;
    *) echo "memory-stream.sh: unknown scenario '$sc' (diff scan)" >&2; exit 2 ;;
  esac
done
echo
echo "| command | entries | time | peak RSS | RSS per entry | before: time | before: peak RSS | after / before |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo "load: $(uptime)"
