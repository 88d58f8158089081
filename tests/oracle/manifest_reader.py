#!/usr/bin/env python3
"""Independent reader for cutover-manifest/1, written from docs/manifest.md only.

Usage: python3 manifest_reader.py FILE

Prints one line per entry:
    KIND<TAB>SIZE<TAB>MODE_OCTAL<TAB>DIGEST_HEX_OR_-<TAB>PATH
followed, for a device whose number is recorded, by <TAB>rdev=MAJOR:MINOR and, for a
hard link, by <TAB>link=FIRST_PATH (escaped as PATH is);
then `root <hex>` (or `root -` when the root has no digest). Exit 0 if the
manifest verifies, exit 2 with a message on stderr naming the problem if not.

PATH is printed with bytes that are not valid UTF-8, control characters and
backslash escaped as \\xNN (so tab/newline in a name cannot break the columns).
The root directory's path is printed as the empty string.

Standard library only: BLAKE3 (hash and derive_key modes, and the parent-node
merging the manifest's chunk hashes need) is implemented here in pure Python from
the BLAKE3 specification. It is slow (about 50 KB/s), which is fine for the
small manifests the tests feed it.
"""

import json
import struct
import sys

MAGIC = b"cutover-manifest/1\n"
MAGIC_PREFIX = b"cutover-manifest/"
HEADER_MAX = 1 << 20
DIR_CONTEXT = "cutover 2026-11-24 directory node v1"
MAX_LEN = 65536
KIND_NAMES = ["file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev"]
F_DIGEST, F_UNREADABLE, F_UNSTABLE, F_XATTRS, F_NOT_ENTERED, F_HOLDS_EXCLUDED = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
F_HARD_LINK = 0x40
NODE_RDEV, NODE_HARD_LINK = 0x40, 0x80
ZERO32 = bytes(32)
METADATA_NAMES = {"mode", "mtime", "owner", "xattr", "hardlinks", "rdev", "stamp"}


class ManifestError(Exception):
    pass


from blake3_pure import blake3, derive_key, merge_cvs  # noqa: E402
from strict_json import _no_dup_keys  # noqa: E402

# ---------------------------------------------------------------- reading helpers
class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def corrupt(self, msg, at=None):
        return ManifestError("corrupt manifest at byte %d: %s" % (self.pos if at is None else at, msg))

    def need(self, n):
        if self.pos + n > len(self.data):
            raise ManifestError("truncated manifest: it ends at byte %d without its end record" % len(self.data))

    def u8(self):
        self.need(1)
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n):
        self.need(n)
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def varint(self):
        value = 0
        for i in range(11):
            if i == 10:
                raise self.corrupt("varint longer than 10 bytes")
            b = self.u8()
            if i == 9 and b > 1:
                raise self.corrupt("varint overflows 64 bits")
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if b == 0 and i > 0:
                    raise self.corrupt("varint with a redundant trailing zero byte")
                return value
        raise AssertionError


def show_path(p):
    out = []
    s = p.decode("utf-8", "surrogateescape")
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # undecodable byte
            out.append("\\x%02x" % (o - 0xDC00))
        elif o < 0x20 or o == 0x7F or ch == "\\":
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    return "".join(out)


def qpath(p):
    return '"%s"' % show_path(p)


def order_key(p):
    # component-wise order == compare component lists bytewise
    return p.split(b"/") if p else []


def check_path_safe(r, path, at):
    if path == b"":
        return
    reason = None
    if path.startswith(b"/"):
        reason = "absolute path"
    elif b"\0" in path:
        reason = "NUL byte in path"
    else:
        comps = path.split(b"/")
        if any(c == b"" for c in comps):
            reason = "empty path component"
        elif any(c in (b".", b"..") for c in comps):
            reason = "'.' or '..' component"
    if reason:
        raise r.corrupt("unsafe path %s: %s" % (qpath(path), reason), at)


class Entry:
    __slots__ = ("path", "kind", "flags", "size", "mode", "mtime_sec", "mtime_nsec",
                 "uid", "gid", "digest", "cvs", "target", "xattrs", "msg", "rdev", "first", "stamp")


# ---------------------------------------------------------------- the reader
def read_manifest(data):
    r = Reader(data)
    # magic line
    if not data.startswith(MAGIC_PREFIX):
        raise ManifestError("not a cutover manifest (no 'cutover-manifest/1' line at the start)")
    if not data.startswith(MAGIC):
        nl = data.find(b"\n")
        if nl < 0 and MAGIC.startswith(data):
            raise ManifestError("truncated manifest: it ends at byte %d without its end record" % len(data))
        ver = data[:nl if nl >= 0 else 64].decode("utf-8", "replace")
        raise ManifestError("manifest format '%s' is not supported by this reader (it reads cutover-manifest/1)" % ver)
    r.pos = len(MAGIC)

    # header line
    nl = data.find(b"\n", r.pos, r.pos + HEADER_MAX)
    if nl < 0:
        if len(data) - r.pos < HEADER_MAX:
            raise ManifestError("truncated manifest: it ends at byte %d without its end record" % len(data))
        raise r.corrupt("header line longer than 1 MiB")
    raw = data[r.pos:nl]
    r.pos = nl + 1
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_dup_keys)
    except (UnicodeDecodeError, ValueError) as e:
        raise r.corrupt("bad header: %s" % e)
    if not isinstance(header, dict):
        raise r.corrupt("bad header: not a JSON object")

    def field(name, types, required=True):
        if name not in header:
            if required:
                raise r.corrupt("bad header: missing field `%s`" % name)
            return None
        v = header[name]
        if (isinstance(v, bool) and types is not bool) or not isinstance(v, types):
            raise r.corrupt("bad header: field `%s` has the wrong type" % name)
        return v

    field("tool", str)
    chunk_size = field("chunk_size", int)
    metadata = field("metadata", list)
    field("root", str)
    field("started", str)
    field("finished", str)
    hdr_entries = field("entries", int)
    if hdr_entries < 0:
        raise r.corrupt("bad header: negative entries")
    has_root_hash = "root_hash" in header
    root_hash = field("root_hash", (str, type(None)), required=False)
    one_file_system = field("one_file_system", bool, required=False) or False
    exclude = field("exclude", list, required=False) or []
    for pattern in exclude:
        if not isinstance(pattern, str) or pattern.strip("/") == "":
            raise r.corrupt("bad header: exclude pattern %r matches nothing (or everything)" % (pattern,))
    shard = field("shard", dict, required=False)
    if shard is not None:
        # A part of a sharded scan (docs/manifest.md, "Sharded scans"): structurally a manifest.
        if set(shard) != {"index", "count", "owner"}:
            raise r.corrupt("bad header: shard must have exactly index, count and owner")
        idx, cnt, owner = shard["index"], shard["count"], shard["owner"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (idx, cnt)) or not 1 <= idx <= cnt <= 65536:
            raise r.corrupt("bad header: shard %r is not 1 <= index <= count <= 65536" % (shard,))
        if owner != "blake3-path-inode/1":
            raise r.corrupt("bad header: unknown shard owner rule %r" % (owner,))
    for m in metadata:
        if not isinstance(m, str) or m not in METADATA_NAMES:
            raise r.corrupt("bad header: unknown metadata field %r" % (m,))
    if chunk_size < 1024 or chunk_size > (1 << 30) or chunk_size & (chunk_size - 1):
        raise r.corrupt("chunk size %d must be a power of two between 1024 and 1073741824" % chunk_size)
    C = chunk_size

    # records
    entries = []
    prev = b""
    while True:
        rec_start = r.pos
        tag = r.u8()
        if tag == 0:
            break
        if tag != 1:
            raise r.corrupt("unknown record tag %d" % tag, rec_start)
        e = Entry()
        shared = r.varint()
        if shared > len(prev):
            raise r.corrupt("path shares more bytes than the previous path has")
        slen = r.varint()
        if slen > MAX_LEN:
            raise r.corrupt("path of %d bytes is implausibly long" % slen)
        path = prev[:shared] + r.take(slen)
        check_path_safe(r, path, r.pos)
        e.path = path
        e.kind = r.u8()
        if e.kind > 6:
            raise r.corrupt("unknown entry kind %d" % e.kind)
        e.flags = r.u8()
        e.size = r.varint()
        if e.kind != 0 and e.size != 0:
            raise r.corrupt("a %s of size %d (only regular files have a size)" % (KIND_NAMES[e.kind], e.size))
        e.mode = r.varint()
        if e.mode >> 32:
            raise r.corrupt("mode %d does not fit in 32 bits" % e.mode)
        if e.mode > 0o7777:
            raise r.corrupt("mode %o has bits above 0o7777" % e.mode)
        z = r.varint()
        e.mtime_sec = (z >> 1) ^ -(z & 1)
        e.mtime_nsec = r.varint()
        if e.mtime_nsec >> 32:
            raise r.corrupt("mtime nanoseconds %d does not fit in 32 bits" % e.mtime_nsec)
        if e.mtime_nsec > 999999999:
            raise r.corrupt("mtime nanoseconds %d above 999999999" % e.mtime_nsec)
        e.uid = r.varint()
        if e.uid >> 32:
            raise r.corrupt("uid %d does not fit in 32 bits" % e.uid)
        e.gid = r.varint()
        if e.gid >> 32:
            raise r.corrupt("gid %d does not fit in 32 bits" % e.gid)
        if e.flags & F_NOT_ENTERED and (e.kind != 1 or not one_file_system):
            raise r.corrupt("a not-entered mark on anything but a directory of a one-file-system scan")
        if e.flags & F_HOLDS_EXCLUDED and (e.kind != 1 or not exclude):
            raise r.corrupt("an excluded-entries mark on anything but a directory of a scan with excludes")
        if e.flags & F_HARD_LINK and (e.kind == 1 or "hardlinks" not in metadata):
            raise r.corrupt("a hard-link mark on a directory, or in a manifest whose header does not list hardlinks")
        e.digest = r.take(32) if e.flags & F_DIGEST else None
        e.cvs = []
        e.stamp = None
        e.target = None
        if e.kind == 0:
            n = r.varint()
            ok = (n == 0) if (e.digest is None or e.size < C) else (
                n == -(-e.size // C) or (e.size == C and n == 0))
            if not ok:
                raise r.corrupt("%d chunk hashes for a file of %d bytes" % (n, e.size))
            e.cvs = [r.take(32) for _ in range(n)]
            e.stamp = None
            if "stamp" in metadata:
                dev, ino, z = r.varint(), r.varint(), r.varint()
                csec = (z >> 1) ^ -(z & 1)
                cnsec = r.varint()
                if cnsec >> 32:
                    raise r.corrupt("ctime nanoseconds %d does not fit in 32 bits" % cnsec)
                if cnsec > 999999999:
                    raise r.corrupt("ctime nanoseconds %d above 999999999" % cnsec)
                e.stamp = (dev, ino, csec, cnsec)
        elif e.kind == 2:
            tl = r.varint()
            if tl > MAX_LEN:
                raise r.corrupt("symlink target of %d bytes is implausibly long" % tl)
            e.target = r.take(tl)
        e.rdev = None
        if e.kind in (5, 6) and "rdev" in metadata:
            major = r.varint()
            if major >> 32:
                raise r.corrupt("device major %d does not fit in 32 bits" % major)
            minor = r.varint()
            if minor >> 32:
                raise r.corrupt("device minor %d does not fit in 32 bits" % minor)
            e.rdev = (major, minor)
        e.first = None
        if e.flags & F_HARD_LINK:
            index = r.varint()
            if index >= len(entries):
                raise r.corrupt("a hard link to entry %d, not an earlier one" % index)
            e.first = entries[index]
        e.xattrs = []
        if e.flags & F_XATTRS:
            if "xattr" not in metadata:
                raise r.corrupt("extended attributes, but the header's metadata does not list xattr")
            if e.kind not in (0, 1):
                raise r.corrupt("extended attributes on a %s" % KIND_NAMES[e.kind])
            cnt = r.varint()
            if cnt < 1 or cnt > 65536:
                raise r.corrupt("implausible extended attribute count %d" % cnt)
            last = None
            for _ in range(cnt):
                nl_ = r.varint()
                if nl_ > 255:
                    raise r.corrupt("extended attribute name of %d bytes is implausibly long" % nl_)
                name = r.take(nl_)
                vl = r.varint()
                if vl > 65536:
                    raise r.corrupt("extended attribute value of %d bytes is implausibly long" % vl)
                val = r.take(vl)
                if not name:
                    raise r.corrupt("an extended attribute with an empty name")
                if last is not None and not last < name:
                    raise r.corrupt("extended attributes not sorted by name")
                last = name
                e.xattrs.append((name, val))
        e.msg = None
        if e.flags & (F_UNREADABLE | F_UNSTABLE):
            ml = r.varint()
            if ml > MAX_LEN:
                raise r.corrupt("problem message of %d bytes is implausibly long" % ml)
            e.msg = r.take(ml)
        if not entries:
            if path != b"" or e.kind != 1:
                raise r.corrupt("the first entry must be the root directory")
        elif not order_key(prev) < order_key(path):
            raise r.corrupt("entry %s is out of order" % qpath(path), rec_start)
        entries.append(e)
        prev = path

    # end record
    count = struct.unpack("<Q", r.take(8))[0]
    summed_to = r.pos
    checksum = r.take(32)
    if blake3(data[:summed_to]) != checksum:
        raise ManifestError("manifest checksum mismatch: the file was altered or damaged after it was written")
    if not (count == len(entries) == hdr_entries):
        raise r.corrupt("holds %d entries; its end record says %d, its header %d"
                        % (len(entries), count, hdr_entries))
    if r.pos != len(data):
        raise r.corrupt("bytes after the end record")

    # consistency checks (after the checksum)
    def inconsistent(e, msg):
        return ManifestError("inconsistent manifest at entry %s: %s" % (qpath(e.path), msg))

    root = entries[0] if entries else None
    if root is None:
        raise ManifestError("corrupt manifest: no entries (the first entry must be the root directory)")
    # root_hash: a present key (string or null) must equal the root's digest
    # as lowercase hex (null = no digest); a missing key is not checked.
    if has_root_hash and root_hash != (root.digest.hex() if root.digest is not None else None):
        raise inconsistent(root, "the header's root_hash is not the root directory's hash")
    dirs = {}
    children = {}
    for e in entries:
        if e.path != b"":
            parent = e.path.rpartition(b"/")[0]
            if parent not in dirs:
                raise inconsistent(e, "its parent directory is not listed before it")
            if dirs[parent].flags & F_NOT_ENTERED:
                raise inconsistent(e, "listed below a directory that was not entered")
            children[parent].append(e)
        if e.kind == 1:
            dirs[e.path] = e
            children[e.path] = []
    for e in entries:
        problem = bool(e.flags & (F_UNREADABLE | F_UNSTABLE))
        if e.digest is not None and problem:
            raise inconsistent(e, "has both a digest and a problem")
        if e.kind != 1 and e.digest is None and not problem:
            raise inconsistent(e, "must have either a digest or a problem")
    for e in entries:
        if e.kind == 0 and e.digest is not None and len(e.cvs) >= 2:
            if merge_cvs(e.cvs, True) != e.digest:
                raise inconsistent(e, "chunk hashes do not merge to the file hash")
        if e.kind == 2 and e.digest is not None and blake3(e.target) != e.digest:
            # not in cutover's check table, but fully determined by the doc
            raise inconsistent(e, "symlink digest is not BLAKE3 of its target")
        if e.kind >= 3 and e.digest is not None and e.digest != ZERO32:
            raise inconsistent(e, "special file digest is not 32 zero bytes")
        if e.first is not None:
            # The record names an earlier entry by index: same kind, and itself no hard link.
            if e.first.kind != e.kind:
                raise inconsistent(e, "a hard link from a %s to a %s" % (KIND_NAMES[e.kind], KIND_NAMES[e.first.kind]))
            if e.first.first is not None:
                raise inconsistent(e, "a hard link to %s, which is itself a hard link to an earlier name"
                                   % qpath(e.first.path))
    # directory hashes, deepest first is unnecessary: each check uses stored child digests
    computed_root = None
    for e in entries:
        if e.kind != 1:
            continue
        kids = children[e.path]
        if any(k.digest is None for k in kids):
            expect = None
        else:
            node = b""
            for k in kids:
                name = k.path.rpartition(b"/")[2]
                kind = k.kind | (NODE_RDEV if k.rdev is not None else 0) | (NODE_HARD_LINK if k.first else 0)
                node += (struct.pack("<Q", len(name)) + name + bytes([kind]) + k.digest
                         + struct.pack("<I", k.mode))  # stored mode as is (u32)
                if k.rdev is not None:
                    node += struct.pack("<II", k.rdev[0], k.rdev[1])
                if k.first is not None:
                    node += struct.pack("<Q", len(k.first.path)) + k.first.path
            expect = derive_key(DIR_CONTEXT, node)
        if e.path == b"":
            computed_root = expect
        if e.flags & (F_UNREADABLE | F_UNSTABLE):
            continue
        if e.digest != expect:
            raise inconsistent(e, "directory hash does not match its entries")
    return header, entries, computed_root


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: manifest_reader.py FILE\n")
        return 2
    fn = argv[1]
    try:
        with open(fn, "rb") as f:
            data = f.read()
    except OSError as e:
        sys.stderr.write("manifest_reader: error: %s: %s\n" % (fn, e))
        return 2
    try:
        header, entries, computed_root = read_manifest(data)
    except ManifestError as e:
        sys.stderr.write("manifest_reader: error: %s: %s\n" % (fn, e))
        return 2
    out = []
    for e in entries:
        line = "%s\t%d\t%04o\t%s\t%s" % (KIND_NAMES[e.kind], e.size, e.mode,
                                          e.digest.hex() if e.digest is not None else "-",
                                          show_path(e.path))
        if e.rdev is not None:
            line += "\trdev=%d:%d" % e.rdev
        if e.first is not None:
            line += "\tlink=%s" % show_path(e.first.path)
        out.append(line)
    out.append("root %s" % (computed_root.hex() if computed_root is not None else "-"))
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
