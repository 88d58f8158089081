#!/usr/bin/env python3
"""Deterministic benchmark data generator for benches/compare.sh.

usage: gen.py SCENARIO OUTDIR [FILES]

  big     OUTDIR/f0..f3: 4 x 256 MiB random bytes
  small   60,000 files of 1-16 KiB random bytes in 4,200 directories
  diff    OUTDIR/src and OUTDIR/dst (~1.2 GiB each): 20,000 files of
          0.1-40 KB plus 12 x 64 MiB; dst is a copy of src with one byte
          changed in 200 files (198 small + 2 big)
  memory  FILES (default 1,000,000) files of 0-100 bytes, 100 per directory

Same seed -> same bytes. Every entry gets the same fixed mtime, so the
two diff trees differ only in content.
"""
import os
import random
import sys

SEED = 20260101
MTIME = 1767225600  # 2026-01-01T00:00:00Z
BLOCK = 8 << 20
KIB, MIB = 1024, 1024 * 1024


def write(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.utime(path, (MTIME, MTIME))


def write_random(path, size, rng):
    """Large file of fresh random bytes, written in 8 MiB blocks."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size
        while left:
            view = memoryview(rng.randbytes(min(BLOCK, left)))
            left -= len(view)
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.utime(path, (MTIME, MTIME))


class Pool:
    """One random buffer; small files are slices at random offsets."""

    def __init__(self, rng, size=4 * MIB):
        self.rng, self.buf = rng, memoryview(rng.randbytes(size))

    def take(self, n):
        off = self.rng.randrange(len(self.buf) - n)
        return self.buf[off:off + n]


def leaf_dirs(root, top, sub):
    """top*sub leaf dirs under top parents: root/tNN/dNNN."""
    dirs = []
    for t in range(top):
        for s in range(sub):
            d = os.path.join(root, f"t{t:03d}", f"d{s:03d}")
            os.makedirs(d, exist_ok=True)
            dirs.append(d)
    return dirs


def fix_dir_mtimes(root):
    for d, _, _ in os.walk(root):
        os.utime(d, (MTIME, MTIME))


def gen_big(out, rng):
    os.makedirs(out)
    for i in range(4):
        write_random(os.path.join(out, f"f{i}"), 256 * MIB, rng)


def gen_small(out, rng):
    pool = Pool(rng)
    dirs = leaf_dirs(out, 60, 69)  # 60 parents + 4,140 leaves = 4,200 dirs
    for i in range(60_000):
        d = dirs[rng.randrange(len(dirs))]
        write(os.path.join(d, f"{i:05d}.bin"), pool.take(rng.randint(1 * KIB, 16 * KIB)))
    fix_dir_mtimes(out)


def gen_diff(out, rng):
    pool = Pool(rng)
    src, dst = os.path.join(out, "src"), os.path.join(out, "dst")
    sdirs = leaf_dirs(src, 20, 25)
    leaf_dirs(dst, 20, 25)
    os.makedirs(os.path.join(src, "big"))
    os.makedirs(os.path.join(dst, "big"))
    small = [os.path.relpath(os.path.join(sdirs[i % len(sdirs)], f"{i:05d}.dat"), src)
             for i in range(20_000)]
    big = [os.path.join("big", f"blob{i:02d}") for i in range(12)]
    changed = set(rng.sample(small, 198)) | set(rng.sample(big, 2))

    def flip(data, rel):
        if rel not in changed:
            return data
        data = bytearray(data)
        data[rng.randrange(len(data))] ^= 0xFF
        return data

    for rel in small:
        data = pool.take(rng.randint(100, 40_000))
        write(os.path.join(src, rel), data)
        write(os.path.join(dst, rel), flip(data, rel))
    for rel in big:
        # Write src, then copy it block by block into dst, flipping one
        # byte of one block for the changed files.
        write_random(os.path.join(src, rel), 64 * MIB, rng)
        target_block = rng.randrange(64 * MIB // BLOCK) if rel in changed else -1
        with open(os.path.join(src, rel), "rb") as f:
            fd = os.open(os.path.join(dst, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for n in range(64 * MIB // BLOCK):
                block = f.read(BLOCK)
                if n == target_block:
                    block = bytearray(block)
                    block[rng.randrange(BLOCK)] ^= 0xFF
                os.write(fd, block)
            os.close(fd)
        os.utime(os.path.join(dst, rel), (MTIME, MTIME))
    with open(os.path.join(out, "changed.txt"), "w") as f:
        f.write("".join(f"{rel}\n" for rel in sorted(changed)))
    fix_dir_mtimes(src)
    fix_dir_mtimes(dst)


def gen_memory(out, rng, files):
    pool = Pool(rng, 1 * MIB)
    ndirs = max(1, files // 100)
    top = max(1, int(ndirs ** 0.5))
    dirs = leaf_dirs(out, top, -(-ndirs // top))
    for i in range(files):
        write(os.path.join(dirs[i // 100 % len(dirs)], f"{i:07d}"), pool.take(rng.randint(0, 100)))
    fix_dir_mtimes(out)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    scenario, out = sys.argv[1], sys.argv[2]
    rng = random.Random(f"{SEED}-{scenario}")
    if os.path.exists(out):
        sys.exit(f"gen.py: {out} exists; remove it first")
    if scenario == "big":
        gen_big(out, rng)
    elif scenario == "small":
        gen_small(out, rng)
    elif scenario == "diff":
        gen_diff(out, rng)
    elif scenario == "memory":
        gen_memory(out, rng, int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000)
    else:
        sys.exit(f"gen.py: unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
