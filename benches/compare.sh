#!/usr/bin/env bash
# Side-by-side wall-clock comparison of cutover against peer tools.
# usage: benches/compare.sh [big|cold|small|cold-small|diff|memory|repair|cold-diff|cold-big ...]
#        (default: big small diff)
# env:   RUNS=5  BENCH_DIR=/tmp/bench-data  CUTOVER=target/release/cutover
#        MEMORY_FILES=1000000
#        BASELINE=path/to/an/older/cutover: also time it, interleaved, and print new/old ratios
#        COLD_JOBS="16 64": the -j values cold-diff tries besides the default
set -euo pipefail
export LC_ALL=C   # '.' as decimal point in $EPOCHREALTIME and printf

# Resolve a user-given CUTOVER against the caller's cwd, then work from the repo root.
[[ -n ${CUTOVER:-} && $CUTOVER != /* ]] && CUTOVER="$PWD/$CUTOVER"
[[ -n ${BASELINE:-} && $BASELINE != /* ]] && BASELINE="$PWD/$BASELINE"
cd "$(dirname "$0")/.."
CUTOVER=${CUTOVER:-$PWD/target/release/cutover}
RUNS=${RUNS:-5}
BENCH_DIR=${BENCH_DIR:-/tmp/bench-data}
MEMORY_FILES=${MEMORY_FILES:-1000000}
export PATH="$HOME/.cargo/bin:$PATH"
scenarios=(big small diff)
(($#)) && scenarios=("$@")
for sc in "${scenarios[@]}"; do
  [[ $sc =~ ^(big|cold|small|cold-small|diff|memory|repair|cold-diff|cold-big)$ ]] || { echo "compare.sh: unknown scenario '$sc' (big cold small cold-small diff memory repair cold-diff cold-big)" >&2; exit 2; }
done
mkdir -p "$BENCH_DIR/out"
results=()   # rows: scenario|cutover median|peer|peer median
last_cm=skipped

need() { command -v "$1" >/dev/null || { echo "compare.sh: '$1' not found ($2)" >&2; exit 2; }; }

have_cutover=1
if [[ ! -x $CUTOVER && $CUTOVER == "$PWD/target/release/cutover" ]]; then
  echo "== building cutover (cargo build --release)"
  cargo build --release || true
fi
if ! "$CUTOVER" --help >/dev/null 2>&1; then
  echo "!! cutover not runnable at $CUTOVER: skipping cutover, timing peers only" >&2
  have_cutover=0
fi

# data NAME [ARGS] -- generate $BENCH_DIR/NAME once (deterministic), reuse afterwards
data() {
  local name=$1; shift
  if [[ ! -e $BENCH_DIR/$name.done ]]; then
    echo "== generating $BENCH_DIR/$name (once)"
    rm -rf -- "${BENCH_DIR:?}/$name"
    local t0=$EPOCHREALTIME
    python3 benches/gen.py "${name%%-*}" "$BENCH_DIR/$name" "$@" || { echo "!! generator failed" >&2; exit 2; }
    date -u +%FT%TZ >"$BENCH_DIR/$name.done"
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "   took %.1f s\n", b - a }'
  fi
}

warm() { find "$@" -type f -print0 | xargs -0 -r cat >/dev/null; }

# evict DIR... -- drop the files' pages from the page cache (POSIX_FADV_DONTNEED; the files are
# clean, so the kernel drops them), so the next read comes from the disk
evict() {
  python3 -c 'import os, sys
for top in sys.argv[1:]:
    for d, _, names in os.walk(top):
        for n in names:
            fd = os.open(os.path.join(d, n), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)' "$@"
}

# timed LABEL CMD...  -- run CMD (a shell string), print seconds; exit 0 or 1 is success
timed() {
  local label=$1 cmd=$2 t0 t1 rc=0
  t0=$EPOCHREALTIME
  bash -c "$cmd" >"$BENCH_DIR/out/$label.out" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  if ((rc > 1)); then
    echo "!! $label failed (exit $rc): $cmd -- see $BENCH_DIR/out/$label.out" >&2
    return 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# compare SCENARIO CUTOVER_CMD PEER_NAME PEER_CMD -- interleave RUNS runs of each; $PREP, when
# set, runs untimed before every run, and $POST, when set, judges the result after every run
compare() {
  local sc=$1 ccmd=$2 pname=$3 pcmd=$4 c_ok=$have_cutover ct=() pt=() bt=() t i
  local bcmd=${BASELINE:+${ccmd//$CUTOVER/$BASELINE}}
  echo "== $sc: cutover: $ccmd"
  echo "   $pname: $pcmd"
  [[ -n $bcmd ]] && echo "   baseline: $bcmd"
  for ((i = 1; i <= RUNS; i++)); do
    local line="   run $i:"
    if ((c_ok)); then
      [[ -n ${PREP:-} ]] && bash -c "$PREP"
      if t=$(timed "$sc-cutover" "$ccmd"); then ct+=("$t"); line+=" cutover ${t}s"; else c_ok=0; fi
      if ((c_ok)) && [[ -n ${POST:-} ]] && ! bash -c "$POST"; then echo "!! $sc: cutover's result failed the check: $POST" >&2; c_ok=0; fi
    fi
    if [[ -n $bcmd ]]; then
      [[ -n ${PREP:-} ]] && bash -c "$PREP"
      t=$(timed "$sc-baseline" "$bcmd") && { bt+=("$t"); line+="  baseline ${t}s"; }
    fi
    [[ -n ${PREP:-} ]] && bash -c "$PREP"
    t=$(timed "$sc-$pname" "$pcmd") || return 1
    [[ -n ${POST:-} ]] && ! bash -c "$POST" && echo "!! $sc: $pname's result failed the check" >&2
    pt+=("$t"); line+="  $pname ${t}s"
    echo "$line"
  done
  local cm=skipped pm
  ((${#ct[@]})) && cm=$(printf '%s\n' "${ct[@]}" | median)
  pm=$(printf '%s\n' "${pt[@]}" | median)
  results+=("$sc|$cm|$pname|$pm")
  ((${#bt[@]})) && results+=("$sc|$cm|baseline|$(printf '%s\n' "${bt[@]}" | median)")
  last_cm=$cm
}

# once SCENARIO PEER_NAME PEER_CMD -- one peer run (for slow peers), vs the last cutover median
once() {
  local t
  echo "   $2 (1 run): $3"
  t=$(timed "$1-$2" "$3") || return 1
  echo "   run 1: $2 ${t}s"
  results+=("$1|$last_cm|$2|$t")
}

bench_big() {
  need b3sum "cargo install b3sum --locked"
  data big
  local d=$BENCH_DIR/big
  warm "$d"
  compare big "'$CUTOVER' scan '$d'" b3sum "b3sum '$d'/*"
}

# The big files read from the disk each run: the page cache is emptied of them before every run.
bench_cold() {
  need b3sum "cargo install b3sum --locked"
  need python3 "apt-get install -y python3"
  data big
  local d=$BENCH_DIR/big
  sync
  PREP="$(declare -f evict); evict '$d'" compare cold "'$CUTOVER' scan '$d'" b3sum "b3sum '$d'/*"
}

bench_small() {
  need b3sum "cargo install b3sum --locked"
  data small
  local d=$BENCH_DIR/small
  warm "$d"
  compare small "'$CUTOVER' scan '$d'" "find+b3sum" \
    "find '$d' -type f -print0 | xargs -0 -P2 -n 2000 b3sum"
}

# The small files read from the disk each run, as from a slow filer: each read waits, so both
# tools run 32 reads at once (cutover -j 32, xargs -P 32).
bench_cold-small() {
  need b3sum "cargo install b3sum --locked"
  need python3 "apt-get install -y python3"
  data small
  local d=$BENCH_DIR/small
  sync
  PREP="$(declare -f evict); evict '$d'" compare cold-small "'$CUTOVER' -j 32 scan '$d'" "find+b3sum-P32" \
    "find '$d' -type f -print0 | xargs -0 -P32 -n 200 b3sum"
}

bench_diff() {
  need rsync "apt-get install -y rsync"
  data diff
  local s=$BENCH_DIR/diff/src d=$BENCH_DIR/diff/dst
  warm "$s" "$d"
  compare diff "'$CUTOVER' diff '$s' '$d'" rsync "rsync -rcn --delete -i '$s/' '$d/'"
  if command -v rclone >/dev/null; then
    once diff rclone "rclone check --checksum '$s' '$d'"
  else
    echo "   rclone not found: skipped (apt-get install -y rclone)"
  fi
}

# Two releases of the Linux kernel source, from Debian's linux-source packages (public data,
# ~84k and ~92k files): repairing a copy of 6.1 into 6.12 adds, removes and changes tens of
# thousands of files, as a real migration re-sync does.
linux_trees() {
  local d=$BENCH_DIR/linux v
  [[ -e $d.done ]] && return 0
  echo "== fetching linux-source-6.1 and linux-source-6.12 from Debian (once)"
  rm -rf -- "$d" && mkdir -p "$d/deb"
  (cd "$d/deb" && apt-get download linux-source-6.1 linux-source-6.12) || { echo "!! apt-get download failed" >&2; exit 2; }
  for v in 6.1 6.12; do
    dpkg-deb --fsys-tarfile "$d"/deb/linux-source-"$v"_*.deb | tar -xO "./usr/src/linux-source-$v.tar.xz" | tar -xJ -C "$d"
    mv "$d/linux-source-$v" "$d/$v"
  done
  rm -rf -- "$d/deb"
  date -u +%FT%TZ >"$d.done"
}

# repair: make a copy of 6.1 equal to 6.12. Before every run of either tool the target is reset
# to a fresh copy of 6.1 and both trees are read into the page cache (warm); after every run the
# target is judged equal by rsync itself (checksums, then metadata), untimed. Also: plan memory.
bench_repair() {
  need rsync "apt-get install -y rsync"
  [[ -x /usr/bin/time ]] || { echo "compare.sh: /usr/bin/time not found (apt-get install -y time)" >&2; exit 2; }
  linux_trees
  local s=$BENCH_DIR/linux/6.12 old=$BENCH_DIR/linux/6.1 t=$BENCH_DIR/linux/target
  local reset="rm -rf '$t' && cp -a '$old' '$t' && $(declare -f warm); warm '$s' '$t'"
  local check="test -z \"\$(rsync -rlpcn --delete -i '$s/' '$t/')\" && test -z \"\$(rsync -naHS --specials --devices -i --delete '$s/' '$t/')\""
  PREP=$reset POST=$check compare repair "'$CUTOVER' repair -a --delete '$s' '$t'" "rsync-ac" "rsync -ac --delete '$s/' '$t/'"
  if ((have_cutover)); then
    bash -c "$reset"
    /usr/bin/time -f %M -o "$BENCH_DIR/out/plan.rss" "$CUTOVER" plan -a --delete "$s" "$t" -o "$BENCH_DIR/out/linux.plan" >/dev/null 2>&1 || true
    local ops; ops=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["operations"]))' "$BENCH_DIR/out/linux.plan")
    awk -v r="$(tail -n 1 "$BENCH_DIR/out/plan.rss")" -v n="$ops" 'BEGIN {
      printf "   plan: %d operations, peak RSS %.1f MiB = %.0f bytes/operation\n", n, r / 1024, r * 1024 / n }'
  fi
}

# Empties the page cache (dentries and inodes too) before a cold run: as root through
# /proc/sys/vm/drop_caches, otherwise file by file (POSIX_FADV_DONTNEED, data only).
cold_prep() {
  if [[ -w /proc/sys/vm/drop_caches ]]; then
    echo "sync; echo 3 > /proc/sys/vm/drop_caches"
  else
    echo "!! not root: dropping the files' data only (directories and inodes stay cached)" >&2
    echo "$(declare -f evict); evict $*"
  fi
}

# interleave SCENARIO LABEL=CMD... -- RUNS rounds of every command in turn, $PREP before each;
# prints each median and every ratio to the first command
interleave() {
  local sc=$1; shift
  local -a labels=() cmds=() i k
  for k in "$@"; do labels+=("${k%%=*}"); cmds+=("${k#*=}"); done
  declare -A times=()
  echo "== $sc (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
  for k in "${!labels[@]}"; do echo "   ${labels[k]}: ${cmds[k]}"; done
  for ((i = 1; i <= RUNS; i++)); do
    local line="   run $i:" t
    for k in "${!labels[@]}"; do
      [[ -n ${PREP:-} ]] && bash -c "$PREP"
      t=$(timed "$sc-${labels[k]}" "${cmds[k]}") || continue
      times[$k]+="$t "; line+=" ${labels[k]} ${t}s"
    done
    echo "$line"
  done
  echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  local first; first=$(printf '%s\n' ${times[0]} | median)
  for k in "${!labels[@]}"; do
    local m; m=$(printf '%s\n' ${times[$k]} | median)
    results+=("$sc|$first|${labels[k]}|$m")
    printf '   %-22s median %8.3f s   first/this %6.3f\n' "${labels[k]}" "$m" "$(awk -v a="$first" -v b="$m" 'BEGIN { print a / b }')"
  done
}

# cold-diff: `cutover diff` of two real source trees (Linux 6.1 and 6.12, ~80k and ~87k files)
# read from the storage: the page cache is emptied before every run of every command. cutover
# with its default flags is timed against cutover -j N (each N of COLD_JOBS) and rsync -rcn.
bench_cold-diff() {
  need rsync "apt-get install -y rsync"
  linux_trees
  local a=$BENCH_DIR/linux/6.1 b=$BENCH_DIR/linux/6.12 j
  local -a runs=("default=$CUTOVER diff '$a' '$b'")
  for j in ${COLD_JOBS:-16 64}; do runs+=("j$j=$CUTOVER -j $j diff '$a' '$b'"); done
  [[ -n ${BASELINE:-} ]] && runs+=("baseline=$BASELINE diff '$a' '$b'")
  runs+=("rsync=rsync -rcn --delete '$a/' '$b/'")
  PREP=$(cold_prep "$a" "$b") interleave cold-diff "${runs[@]}"
}

# cold-big: four 1 GiB files of random bytes read from the storage, by `cutover scan` and by
# dd with O_DIRECT (the device's sequential rate, one file after the other), and by fio when
# installed (O_DIRECT, 32 reads of 1 MiB in flight).
bench_cold-big() {
  local d=$BENCH_DIR/coldbig i
  if [[ ! -e $d.done ]]; then
    echo "== generating $d: 4 x 1 GiB of random bytes (once)"
    mkdir -p "$d" && for i in 0 1 2 3; do head -c 1G /dev/urandom >"$d/f$i"; done && sync && date >"$d.done"
  fi
  local -a runs=("scan=$CUTOVER scan '$d'"
    "dd-direct=for f in '$d'/f*; do dd if=\$f of=/dev/null bs=1M iflag=direct status=none; done")
  command -v fio >/dev/null && runs+=("fio-qd32=fio --name=seq --rw=read --bs=1M --direct=1 --ioengine=libaio --iodepth=32 --filename=$d/f0:$d/f1:$d/f2:$d/f3 --output=/dev/null")
  [[ -n ${BASELINE:-} ]] && runs+=("baseline=$BASELINE scan '$d'")
  PREP=$(cold_prep "$d") interleave cold-big "${runs[@]}"
  echo "   (4 GiB each run: MB/s = 4295 / seconds)"
}

bench_memory() {
  if [[ ! -x /usr/bin/time ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y time </dev/null ||
      { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y time </dev/null; }
  fi
  local name=memory-$MEMORY_FILES m=$BENCH_DIR/memory-$MEMORY_FILES.manifest
  data "$name" "$MEMORY_FILES"
  echo "== memory: $MEMORY_FILES files: cutover scan DIR -o $m"
  if ((!have_cutover)); then echo "   skipped: no cutover binary"; return 0; fi
  warm "$BENCH_DIR/$name"
  local t0=$EPOCHREALTIME rss
  /usr/bin/time -f %M -o "$BENCH_DIR/out/memory.rss" "$CUTOVER" scan "$BENCH_DIR/$name" -o "$m" >/dev/null ||
    { echo "!! cutover scan failed" >&2; return 1; }
  local secs; secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  rss=$(tail -n 1 "$BENCH_DIR/out/memory.rss")
  awk -v f="$MEMORY_FILES" -v r="$rss" -v m="$(stat -c %s "$m")" -v s="$secs" 'BEGIN {
    printf "   wall %s s, peak RSS %.1f MiB = %.0f bytes/file, manifest %.1f MiB = %.1f bytes/file\n",
      s, r / 1024, r * 1024 / f, m / 1048576, m / f }'
}

for sc in "${scenarios[@]}"; do "bench_$sc"; done

if ((${#results[@]})); then
  echo
  echo "RUNS=$RUNS, median wall seconds (page cache warm except in cold), $(nproc) CPUs"
  printf '%-8s %10s  %-12s %10s %8s\n' scenario cutover_s peer peer_s ratio
  for row in "${results[@]}"; do
    IFS='|' read -r sc cm pn pm <<<"$row"
    ratio=$(awk -v c="$cm" -v p="$pm" 'BEGIN { if (c ~ /^[0-9.]+$/ && p > 0) printf "%.3f", c / p; else print "-" }')
    printf '%-8s %10s  %-12s %10s %8s\n' "$sc" "$cm" "$pn" "$pm" "$ratio"
  done
fi
