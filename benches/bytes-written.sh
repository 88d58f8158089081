#!/usr/bin/env bash
# Bytes each tool actually writes into the target tree: cutover vs rsync.
# usage: benches/bytes-written.sh [image|tree ...]   (default: image tree)
# env:   BENCH_DIR=/tmp/bench-data  CUTOVER=target/release/cutover
#        CHUNK_SIZE=    (passed as --chunk-size to cutover; empty = cutover's default, 1M)
#
# Every tool runs on a fresh copy of the prepared target, under
#   strace -ff -y -e trace=<write family> ...
# and the successful return values of the write-family calls whose output fd
# points under the target directory are summed. /proc/PID/io write_bytes of the
# whole process tree is shown next to it as a cross-check. See benches/README.md.
set -euo pipefail
export LC_ALL=C

# Resolve a user-given CUTOVER against the caller's cwd, then work from the repo root.
[[ -n ${CUTOVER:-} && $CUTOVER != /* ]] && CUTOVER="$PWD/$CUTOVER"
cd "$(dirname "$0")/.."
CUTOVER=${CUTOVER:-$PWD/target/release/cutover}
BENCH_DIR=${BENCH_DIR:-/tmp/bench-data}
CHUNK_SIZE=${CHUNK_SIZE:-}
ROOT=$BENCH_DIR/written          # prepared data: ROOT/SCENARIO/{src,dst,changes.txt}
WORK=$ROOT/work/dst              # the fresh copy each tool repairs
OUT=$ROOT/out                    # per-run outputs: stdout, stderr, bytes per path
SYSCALLS=write,pwrite64,pwritev,pwritev2,writev,copy_file_range,sendfile,splice
MAX_IDEAL_RATIO=1.25             # cutover written / ideal must not exceed this

scenarios=(image tree)
(($#)) && scenarios=("$@")
for sc in "${scenarios[@]}"; do
  [[ $sc =~ ^(image|tree)$ ]] || { echo "bytes-written.sh: unknown scenario '$sc' (image tree)" >&2; exit 2; }
done

rows=()       # scenario|tool|target bytes|io write_bytes|reported bytes_copied|trees
failures=0

log() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------- setup

setup_tools() {
  mkdir -p "$OUT" "$(dirname "$WORK")"
  command -v python3 >/dev/null || { log "bytes-written.sh: python3 is required"; exit 2; }
  command -v rsync >/dev/null || { log "bytes-written.sh: rsync not found (apt-get install -y rsync)"; exit 2; }
  if ! command -v strace >/dev/null; then
    log "== installing strace (apt-get install -y strace)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y strace </dev/null ||
      { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y strace </dev/null; }
  fi
  if [[ ! -x $CUTOVER && $CUTOVER == "$PWD/target/release/cutover" ]]; then
    log "== building cutover (cargo build --release)"
    cargo build --release
  fi
  "$CUTOVER" --help >/dev/null 2>&1 || { log "bytes-written.sh: cutover not runnable at $CUTOVER"; exit 2; }
  # Stop only at the traced calls when the kernel and strace allow it: much faster.
  STRACE=(strace -ff -y -s 0 -e "trace=$SYSCALLS")
  if strace --seccomp-bpf -f -e trace=write -o /dev/null true 2>/dev/null; then
    STRACE+=(--seccomp-bpf)
  fi
  # Traces go to tmpfs when possible, so strace's own log writes do not land in
  # write_bytes of the measured process tree (tmpfs does not count there).
  local base=$ROOT
  [[ -d /dev/shm && -w /dev/shm ]] && base=/dev/shm
  TRACE_DIR=$(mktemp -d "$base/cutover-bytes-written.XXXXXX")
  trap 'rm -rf -- "$TRACE_DIR"' EXIT
  CHUNK_ARGS=()
  if [[ -n $CHUNK_SIZE ]]; then CHUNK_ARGS=(--chunk-size "$CHUNK_SIZE"); fi
}

# ---------------------------------------------------------------- data

# generate SCENARIO -- write ROOT/SCENARIO/{src,dst} and changes.txt once (fixed seed).
# changes.txt lists "change PATH OFFSET SIZE" and "missing PATH SIZE" for the
# independent ideal computed by ideal_from_changes.
generate() {
  local sc=$1 dir=$ROOT/$1
  [[ -e $ROOT/$sc.done ]] && return 0
  log "== generating $dir (once)"
  rm -rf -- "$dir"
  python3 - "$sc" "$dir" <<'PY'
import math, os, random, sys

SEED = 20260102
MTIME = 1767225600              # 2026-01-01T00:00:00Z; every entry gets it ...
CHANGED_MTIME = MTIME + 86400   # ... except changed target files, so rsync's quick check sees them
KB, MIB, BLOCK = 1000, 1 << 20, 8 << 20

sc, out = sys.argv[1], sys.argv[2]
rng = random.Random(f"{SEED}-{sc}")
src, dst = os.path.join(out, "src"), os.path.join(out, "dst")
changes = []


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def make_pair(rel, size, flip=None, missing=False):
    """Write SIZE random bytes to src/REL and, unless MISSING, to dst/REL with
    the byte at offset FLIP inverted."""
    sp, dp = os.path.join(src, rel), os.path.join(dst, rel)
    os.makedirs(os.path.dirname(sp), exist_ok=True)
    os.makedirs(os.path.dirname(dp), exist_ok=True)
    sfd = os.open(sp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    dfd = None if missing else os.open(dp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pos = 0
    while pos < size:
        block = rng.randbytes(min(BLOCK, size - pos))
        write_all(sfd, block)
        if dfd is not None:
            if flip is not None and pos <= flip < pos + len(block):
                block = bytearray(block)
                block[flip - pos] ^= 0xFF
            write_all(dfd, block)
        pos += len(block)
    os.close(sfd)
    os.utime(sp, (MTIME, MTIME))
    if dfd is not None:
        os.close(dfd)
        t = CHANGED_MTIME if flip is not None else MTIME
        os.utime(dp, (t, t))
    if missing:
        changes.append(f"missing {rel} {size}")
    elif flip is not None:
        changes.append(f"change {rel} {flip} {size}")


if sc == "image":
    # One 1 GiB file; three single bytes changed at scattered offsets.
    flips = [100 * MIB + 12345, 517 * MIB + 777, 1000 * MIB + 4242]
    size = 1024 * MIB
    sp, dp = os.path.join(src, "image.bin"), os.path.join(dst, "image.bin")
    os.makedirs(src), os.makedirs(dst)
    sfd = os.open(sp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    dfd = os.open(dp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for pos in range(0, size, BLOCK):
        block = rng.randbytes(BLOCK)
        write_all(sfd, block)
        hit = [f - pos for f in flips if pos <= f < pos + BLOCK]
        if hit:
            block = bytearray(block)
            for h in hit:
                block[h] ^= 0xFF
        write_all(dfd, block)
    os.close(sfd), os.close(dfd)
    os.utime(sp, (MTIME, MTIME))
    os.utime(dp, (CHANGED_MTIME, CHANGED_MTIME))
    changes += [f"change image.bin {f} {size}" for f in flips]

elif sc == "tree":
    # 2,000 files of 4 KB - 2 MB (log-uniform, in 40 dirs) plus 4 x 64 MiB.
    # 1% of the files (19 small + 1 big) get one changed byte; 5 small files
    # are missing from the target.
    small = [(f"d{i // 50:02d}/f{i:04d}.bin",
              int(math.exp(rng.uniform(math.log(4 * KB), math.log(2000 * KB)))))
             for i in range(2000)]
    big = [(f"big/big{i}.bin", 64 * MIB) for i in range(4)]
    picks = rng.sample(range(len(small)), 24)
    changed = {small[i][0] for i in picks[:19]} | {big[1][0]}
    missing = {small[i][0] for i in picks[19:]}
    for rel, size in small + big:
        flip = rng.randrange(size) if rel in changed else None
        make_pair(rel, size, flip=flip, missing=rel in missing)

for root in (src, dst):
    for d, _, _ in os.walk(root):
        os.utime(d, (MTIME, MTIME))
with open(os.path.join(out, "changes.txt"), "w") as f:
    f.write("\n".join(sorted(changes)) + "\n")
PY
  date -u +%FT%TZ >"$ROOT/$sc.done"
}

# reset SCENARIO -- fresh copy of the prepared target at WORK, flushed to disk
# so that write_bytes counts every page the tool dirties afterwards.
reset() {
  rm -rf -- "$WORK"
  cp -a --reflink=never "$ROOT/$1/dst" "$WORK"
  sync
}

# ---------------------------------------------------------------- measuring

# sum_target_writes DIR PREFIX -- over the strace logs DIR/trace.*, sum the
# successful return values of write-family calls whose output fd lies under
# PREFIX/. Prints "BYTES CALLS"; writes bytes per path to DIR/paths.
sum_target_writes() {
  local dir=$1 prefix=$2
  : >"$dir/paths"
  cat "$dir"/trace.* | awk -v pre="$prefix/" -v paths="$dir/paths" '
    # with -ff there is no pid column: lines start with the call name
    match($0, /^[a-z0-9_]+\(/) {
      call = substr($0, 1, RLENGTH - 1)
      if (!match($0, / = [0-9]+$/)) next              # failed or unfinished call
      ret = substr($0, RSTART + 3) + 0
      # fd arguments print as N</path> under -y; the output fd is the first
      # one, except for copy_file_range and splice (in_fd, off_in, out_fd, ...)
      want = (call == "copy_file_range" || call == "splice") ? 2 : 1
      rest = $0; path = ""
      for (i = 1; i <= want; i++) {
        if (!match(rest, /[0-9]+<[^>]*>/)) next
        tok = substr(rest, RSTART, RLENGTH); rest = substr(rest, RSTART + RLENGTH)
      }
      path = substr(tok, index(tok, "<") + 1); path = substr(path, 1, length(path) - 1)
      if (substr(path, 1, length(pre)) != pre) next
      total += ret; calls++; per[path] += ret
    }
    END {
      sorter = "sort -rn > \"" paths "\""
      for (p in per) printf "%.0f\t%s\n", per[p], p | sorter
      close(sorter)
      printf "%.0f %.0f\n", total, calls
    }'
}

# measure NAME CMD... -- run CMD under strace; sets M_BYTES (written under WORK),
# M_CALLS, M_IO (write_bytes of the whole process tree) and M_RC. The command's
# stdout/stderr end up in OUT/NAME.{out,err}, bytes per path in OUT/NAME.paths.
measure() {
  local name=$1; shift
  local t=$TRACE_DIR/$name io
  rm -rf -- "$t"; mkdir -p "$t"
  # A child shell reaps strace, so its /proc/$$/io then includes the whole tree.
  io=$(bash -c '
    t=$1; shift
    rc=0; "$@" >"$t/stdout" 2>"$t/stderr" || rc=$?
    echo "$rc $(awk "/^write_bytes/ { print \$2 }" /proc/$$/io)"
  ' _ "$t" "${STRACE[@]}" -o "$t/trace" "$@")
  read -r M_RC M_IO <<<"$io"
  read -r M_BYTES M_CALLS < <(sum_target_writes "$t" "$WORK")
  cp "$t/stdout" "$OUT/$name.out"; cp "$t/stderr" "$OUT/$name.err"; cp "$t/paths" "$OUT/$name.paths"
  rm -rf -- "$t"
}

# verify SCENARIO -- "equal" if WORK has the same entries and contents as src
verify() {
  if diff -r -q --no-dereference "$ROOT/$1/src" "$WORK" >/dev/null 2>&1; then echo equal; else echo FAIL; fi
}

bytes_copied() { python3 -c 'import json, sys
try: print(json.load(open(sys.argv[1]))["bytes_copied"])
except Exception: print("-")' "$1"; }

# ideal_from_diff SCENARIO -- divergent + missing bytes per `cutover diff`; sets CHUNK
ideal_from_diff() {
  local sc=$1 rc=0
  "$CUTOVER" diff "${CHUNK_ARGS[@]}" "$ROOT/$sc/src" "$WORK" --format json >"$OUT/$sc-diff.json" || rc=$?
  ((rc <= 1)) || { log "!! cutover diff failed (exit $rc), see $OUT/$sc-diff.json"; echo "0 0"; return; }
  python3 -c 'import json, sys
d = json.load(open(sys.argv[1])); s = d["summary"]
print(d["chunk_size"], s["divergent_bytes"] + s["missing_bytes"])' "$OUT/$sc-diff.json"
}

# ideal_from_changes SCENARIO CHUNK -- the same, computed from what the generator changed
ideal_from_changes() {
  python3 -c 'import sys
cs = int(sys.argv[2]); chunks = set(); total = 0
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "missing":
        total += int(f[2])
    else:
        start = int(f[2]) // cs * cs
        if (f[1], start) not in chunks:
            chunks.add((f[1], start)); total += min(cs, int(f[3]) - start)
print(total)' "$ROOT/$1/changes.txt" "$2"
}

# run_tool SCENARIO TOOL CMD... -- reset, measure, verify, record a row
run_tool() {
  local sc=$1 tool=$2 name; shift 2
  name=$sc-${tool//[^a-z0-9]/_}
  reset "$sc"
  log "   $tool: $*"
  measure "$name" "$@"
  ((M_RC == 0)) || log "!! $tool exited $M_RC (see $OUT/$name.err)"
  local trees; trees=$(verify "$sc")
  [[ $trees == equal ]] || failures=$((failures + 1))
  rows+=("$sc|$tool|$M_BYTES|$M_IO|$(bytes_copied "$OUT/$name.out")|$trees")
  log "     -> $M_BYTES bytes in $M_CALLS calls under the target, trees $trees"
}

bench() {
  local sc=$1 src=$ROOT/$1/src chunk ideal check
  generate "$sc"
  log "== $sc: $(find "$src" -type f | wc -l) files, $(du -sh --apparent-size "$src" | cut -f1) in src"
  reset "$sc"
  read -r chunk ideal < <(ideal_from_diff "$sc")
  ((chunk > 0)) || { log "bytes-written.sh: no ideal without a working cutover diff"; exit 2; }
  check=$(ideal_from_changes "$sc" "$chunk")
  log "   ideal at chunk $chunk: $ideal bytes (cutover diff), $check bytes (from the generator's changes)"
  [[ $ideal == "$check" ]] || log "!! ideal from cutover diff ($ideal) != ideal from the changes ($check)"
  rows+=("$sc|ideal (divergent chunks x $chunk)|$ideal|-|-|-")

  run_tool "$sc" "cutover repair" "$CUTOVER" repair "${CHUNK_ARGS[@]}" --format json "$src" "$WORK"
  # plan + apply: the plan is written outside the target; both steps are measured.
  reset "$sc"
  log "   cutover plan: $CUTOVER plan $src $WORK -o $OUT/$sc.plan.json"
  measure "$sc-cutover_plan" "$CUTOVER" plan "${CHUNK_ARGS[@]}" "$src" "$WORK" -o "$OUT/$sc.plan.json"
  ((M_RC <= 1)) || log "!! cutover plan exited $M_RC"
  log "     -> $M_BYTES bytes in $M_CALLS calls under the target"
  rows+=("$sc|cutover plan (target untouched)|$M_BYTES|$M_IO|-|-")
  log "   cutover apply: $CUTOVER apply $OUT/$sc.plan.json --format json"
  measure "$sc-cutover_apply" "$CUTOVER" apply "$OUT/$sc.plan.json" --format json
  ((M_RC == 0)) || log "!! cutover apply exited $M_RC"
  local trees; trees=$(verify "$sc")
  [[ $trees == equal ]] || failures=$((failures + 1))
  log "     -> $M_BYTES bytes in $M_CALLS calls under the target, trees $trees"
  rows+=("$sc|cutover apply (after plan)|$M_BYTES|$M_IO|$(bytes_copied "$OUT/$sc-cutover_apply.out")|$trees")

  run_tool "$sc" "rsync -a" rsync -a "$src/" "$WORK/"
  run_tool "$sc" "rsync -a --inplace --no-whole-file" rsync -a --inplace --no-whole-file "$src/" "$WORK/"
  rm -rf -- "$WORK"
}

# ---------------------------------------------------------------- report

print_table() {
  echo
  echo "bytes written into the target (strace: write-family calls on fds under the target)"
  echo "io = /proc/PID/io write_bytes of the whole process tree (page-granular cross-check)"
  echo "reported = bytes_copied from cutover's --format json"
  printf '%-6s %-37s %14s %9s %9s %12s %8s %10s %12s  %s\n' \
    scenario tool target_bytes MiB io_MiB reported /ideal /rsync-a /rsync-inpl trees
  local sc row s tool bytes io rep trees ideal ra ri r_ideal r_a r_i
  for sc in "${scenarios[@]}"; do
    ideal=0 ra=0 ri=0
    for row in "${rows[@]}"; do
      IFS='|' read -r s tool bytes io rep trees <<<"$row"
      [[ $s == "$sc" ]] || continue
      case $tool in
        ideal*) ideal=$bytes ;;
        "rsync -a") ra=$bytes ;;
        "rsync -a --inplace"*) ri=$bytes ;;
      esac
    done
    for row in "${rows[@]}"; do
      IFS='|' read -r s tool bytes io rep trees <<<"$row"
      [[ $s == "$sc" ]] || continue
      r_ideal=- r_a=- r_i=-
      if [[ $tool == "cutover repair" || $tool == "cutover apply"* ]]; then
        r_ideal=$(awk -v b="$bytes" -v i="$ideal" -v m="$MAX_IDEAL_RATIO" \
          'BEGIN { if (i > 0) printf "%.3f%s", b / i, (b / i <= m ? "" : "!"); else print "-" }')
        if [[ $r_ideal == *! ]]; then failures=$((failures + 1)); fi
        r_a=$(awk -v b="$bytes" -v r="$ra" 'BEGIN { if (r > 0) printf "%.4f", b / r; else print "-" }')
        r_i=$(awk -v b="$bytes" -v r="$ri" 'BEGIN { if (r > 0) printf "%.2f", b / r; else print "-" }')
      fi
      printf '%-6s %-37s %14s %9s %9s %12s %8s %10s %12s  %s\n' "$sc" "$tool" "$bytes" \
        "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')" \
        "$(awk -v b="$io" 'BEGIN { if (b ~ /^[0-9]+$/) printf "%.2f", b / 1048576; else print "-" }')" \
        "$rep" "$r_ideal" "$r_a" "$r_i" "$trees"
    done
  done
  echo
  echo "/ideal: cutover bytes / ideal, must be <= $MAX_IDEAL_RATIO ('!' marks a breach)."
  echo "/rsync-a, /rsync-inpl: cutover bytes / bytes the rsync variant wrote (below 1: cutover wrote less)."
  echo "trees: diff -r of src and the repaired copy after that tool (FAIL = not equal)."
}

setup_tools
for sc in "${scenarios[@]}"; do bench "$sc"; done
print_table
if ((failures)); then
  echo "FAIL: $failures check(s) failed (trees not equal or cutover above ${MAX_IDEAL_RATIO}x ideal)"
  exit 1
fi
echo "OK: all trees equal, cutover within ${MAX_IDEAL_RATIO}x of ideal"
