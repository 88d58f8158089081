#!/usr/bin/env python3
"""Independent reader for cutover-plan/1 and cutover-bundle/1, written from docs/plan.md only.

Usage: python3 plan_reader.py PLAN [BUNDLE]

Validates the plan (format, required fields and types per operation, path safety,
operation order, totals, and the checksum recomputed as the doc describes), and, with
BUNDLE, the bundle against the plan (header, plan id, record order and coverage, every
record's hash, and every record against the plan's own hashes: the copied file's BLAKE3
root, each patch chunk's chaining value). Unknown fields are tolerated (noted on stderr):
the checksum covers them, the plan id (bundle header) does not.

Prints one line per operation `OP<TAB>PATH`, then `ok`; exit 0. On a problem it prints
`plan_reader: error: ...` on stderr and exits 2. PATH is the exact bytes (path_bytes wins),
with bytes that are not valid UTF-8, control characters and backslash escaped as \\xNN.

Standard library only; BLAKE3 is the pure-Python one in blake3_pure.py, shared with
manifest_reader.py (slow, about 50 KB/s: fine for test-sized bundles).
"""

import copy
import re
import sys

from strict_json import Bad, Fields, fail, is_int, loads  # noqa: E402


# ---------------------------------------------------------------- BLAKE3 parent nodes
from blake3_pure import _IV, _chunk, blake3, merge_cvs  # noqa: E402


# ---------------------------------------------------------------- helpers


def show_path(p):
    out = []
    for ch in p.decode("utf-8", "surrogateescape"):
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append("\\x%02x" % (o - 0xDC00))
        elif o < 0x20 or o == 0x7F or ch == "\\":
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    return "".join(out)


def order_key(p):
    return p.split(b"/")


RFC3339_UTC = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z\Z")
KINDS = ("file", "dir", "symlink", "fifo", "socket", "chardevice", "blockdevice")


class Obj(Fields):
    notes = []

    def get(self, name, kind, required=True, nullable=False):
        self.used.add(name)
        if name not in self.d:
            if required:
                fail("%s: missing required field `%s`" % (self.where, name))
            return None
        v = self.d[name]
        if v is None:
            if nullable:
                return None
            if not required:
                # an optional field written as null counts as absent (and is not
                # part of the known fields the plan id is computed over)
                del self.d[name]
                return None
            fail("%s: field `%s` is null" % (self.where, name))
        w = "%s.%s" % (self.where, name)
        return self.typed(v, kind, w)

    def no_unknown(self):
        """Unknown fields are allowed and dropped (docs/plan.md, bundle section: "unknown
        fields are dropped when a plan is read"); they stay covered by the file's checksum
        but not by the plan id."""
        for k in sorted(set(self.d) - self.used):
            Obj.notes.append("%s: unknown field `%s` ignored" % (self.where, k))
            del self.d[k]


def text_and_bytes(o, name, bytes_name, where):
    """A (lossy) text field with its optional base64 exact-bytes companion; returns exact bytes."""
    text = o.get(name, "str")
    raw = o.get(bytes_name, "b64", required=False)
    if raw is None:
        return text.encode("utf-8")
    try:
        raw.decode("utf-8")
        fail("%s: `%s` is present but the bytes are valid UTF-8" % (where, bytes_name))
    except UnicodeDecodeError:
        pass
    if raw.decode("utf-8", "replace") != text:
        fail("%s: `%s` %r is not the lossy form of `%s` %r" % (where, name, text, bytes_name, raw))
    return raw


def check_path_safe(path, where):
    reason = None
    if path == b"":
        reason = "empty path"
    elif path.startswith(b"/"):
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
        fail("%s: unsafe path \"%s\": %s" % (where, show_path(path), reason))


def mtime_obj(o, name, where, required=True):
    m = o.get(name, "obj", required=required)
    if m is None:
        return None
    m.get("sec", "i64")
    ns = m.get("nsec", "u32")
    if ns >= 1_000_000_000:
        fail("%s.%s.nsec: %d is not below 10^9" % (where, name, ns))
    m.no_unknown()
    return m


def xattr_list(o, name, where):
    xs = o.get(name, "list", required=False)
    if xs is None:
        return
    names = []
    for i, x in enumerate(xs):
        xo = Obj(x, "%s.%s[%d]" % (where, name, i))
        xn = xo.get("name", "str")
        xo.get("value", "b64")
        xo.no_unknown()
        names.append(xn.encode("utf-8"))
    if len(set(names)) != len(names):
        fail("%s.%s: duplicate attribute name" % (where, name))


def attrs_obj(o, where):
    a = o.get("attrs", "obj")
    a.get("mode", "mode")
    mtime_obj(a, "mtime", a.where)
    a.get("uid", "u32")
    a.get("gid", "u32")
    xattr_list(a, "xattrs", a.where)
    a.no_unknown()


def size_hash(o, name, where, extra=()):
    s = o.get(name, "obj")
    size = s.get("size", "u64")
    h = s.get("hash", "hash")
    if "mtime" in extra:
        mtime_obj(s, "mtime", s.where)
    s.no_unknown()
    return size, h


# ---------------------------------------------------------------- checksum
def serde_compact(v):
    """serde_json::to_string of a serde_json::Value (BTreeMap: keys sorted by byte order)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if is_int(v):
        return str(v)
    if isinstance(v, float):
        fail("a float in the plan (cutover writes none)")
    if isinstance(v, str):
        return serde_str(v)
    if isinstance(v, list):
        return "[" + ",".join(serde_compact(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(serde_str(k) + ":" + serde_compact(v[k]) for k in keys) + "}"
    raise AssertionError(type(v))


_ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def serde_str(s):
    out = ['"']
    for ch in s:
        if ch in _ESC:
            out.append(_ESC[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def plan_checksum(plan):
    body = {k: v for k, v in plan.items() if k != "checksum"}
    return blake3(serde_compact(body).encode("utf-8")).hex()


# ---------------------------------------------------------------- the plan
CREATES = {"mkdir": "dir", "copy": "file", "patch": "file", "symlink": "symlink"}


def read_plan(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        fail("plan: not UTF-8: %s" % e)
    raw = loads(text, "plan")
    if not isinstance(raw, dict):
        fail("plan: not a JSON object")
    root = copy.deepcopy(raw)  # validated in place; unknown fields and nulls dropped from it
    p = Obj(root, "plan")
    fmt = p.get("format", "str")
    if fmt != "cutover-plan/1":
        fail("plan: format %r is not \"cutover-plan/1\"" % fmt)
    checksum = p.get("checksum", "hash")
    # the checksum covers the object exactly as written, unknown fields included
    want = plan_checksum(raw)
    if checksum != want:
        fail("plan: checksum mismatch: the plan says %s, its content hashes to %s" % (checksum, want))

    tool = p.get("tool", "str")
    if not re.match(r"\Acutover \S+\Z", tool):
        fail("plan.tool: %r is not `cutover <version>`" % tool)
    created = p.get("created", "str")
    if not RFC3339_UTC.match(created):
        fail("plan.created: %r is not an RFC 3339 UTC time" % created)
    for side in ("source", "target"):
        s = p.get(side, "obj")
        s.get("root", "str")
        s.get("hash", "hash", nullable=True)
        if s.get("entries", "u64") < 1:
            fail("plan.%s.entries: must be at least 1 (the root)" % side)
        ident = s.get("identity", "obj", required=False)
        if ident is not None:
            ident.get("host", "str")
            ident.get("device", "u64")
            ident.get("inode", "u64")
            ident.no_unknown()
        s.no_unknown()
    C = p.get("chunk_size", "u64")
    if C & (C - 1) or not (1 << 10) <= C <= (1 << 30):
        fail("plan.chunk_size: %d is not a power of two from 1 KiB to 1 GiB" % C)
    delete = p.get("delete", "bool")
    for i, pattern in enumerate(p.get("exclude", "list", required=False) or []):
        if not isinstance(pattern, str) or pattern.strip("/") == "":
            fail("plan.exclude[%d]: not a usable exclude pattern: %r" % (i, pattern))
    totals = p.get("totals", "obj")
    t_ops = totals.get("operations", "u64")
    t_copy = totals.get("copy_bytes", "u64")
    t_dent = totals.get("delete_entries", "u64")
    t_dbytes = totals.get("delete_bytes", "u64")
    totals.no_unknown()

    unrep = p.get("unrepairable", "list")
    for i, u in enumerate(unrep):
        uo = Obj(u, "plan.unrepairable[%d]" % i)
        text_and_bytes(uo, "path", "path_bytes", uo.where)
        uo.get("reason", "str")
        uo.no_unknown()

    ops_raw = p.get("operations", "list")
    p.no_unknown()

    ops = []  # (op, path bytes, Obj, extra)
    copy_bytes = del_entries = del_bytes = 0
    for i, raw in enumerate(ops_raw):
        where = "plan.operations[%d]" % i
        o = Obj(raw, where)
        op = o.get("op", "str")
        path = text_and_bytes(o, "path", "path_bytes", where)
        if not (op == "meta" and path == b""):  # only a meta operation may name the root
            check_path_safe(path, where)
        where = "%s (%s \"%s\")" % (where, op, show_path(path))
        o.where = where
        info = {}
        if op == "remove":
            e = o.get("expect", "obj")
            typ = e.get("type", "str")
            if typ not in KINDS:
                fail("%s: expect.type %r is not a kind" % (where, typ))
            then = e.get("then", "str", required=False)
            if then is not None and then not in KINDS:
                fail("%s: expect.then %r is not a kind an operation creates" % (where, then))
            if then == typ:
                fail("%s: expect.then equals expect.type" % where)
            size = e.get("size", "u64", required=False)
            mt = mtime_obj(e, "mtime", e.where, required=False)
            if typ == "file" and (size is None or mt is None):
                fail("%s: a file removal needs expect.size and expect.mtime" % where)
            if typ != "file" and (size is not None or mt is not None):
                fail("%s: expect.size/mtime only apply to a file" % where)
            e.no_unknown()
            ent = o.get("entries", "u64")
            byt = o.get("bytes", "u64")
            if ent < 1:
                fail("%s: entries must be at least 1" % where)
            if typ != "dir":
                if ent != 1:
                    fail("%s: a non-directory removal counts 1 entry, not %d" % (where, ent))
                if byt != (size if typ == "file" else 0):
                    fail("%s: bytes %d does not match the expected file size" % (where, byt))
            if not delete and then is None:
                fail("%s: a removal that is not a type change in a plan without `delete`" % where)
            del_entries += ent
            del_bytes += byt
            info["then"] = then
        elif op == "mkdir":
            pass
        elif op == "copy":
            size, _ = size_hash(o, "source", where)
            if o.get("replaces", "obj", required=False) is not None:
                size_hash(o, "replaces", where)
            attrs_obj(o, where)
            holes = o.get("holes", "u64", required=False) or 0
            if holes > size:
                fail("%s: holes %d exceed the %d bytes it reads" % (where, holes, size))
            copy_bytes += size - holes
        elif op == "patch":
            ssize, _ = size_hash(o, "source", where)
            tsize, _ = size_hash(o, "target", where, extra=("mtime",))
            if ssize < C or tsize < C:
                fail("%s: a patch needs at least one full chunk on both sides (sizes %d, %d; chunk %d)"
                     % (where, ssize, tsize, C))
            chunks = o.get("chunks", "list")
            holes = o.get("holes", "u64", required=False) or 0
            reads = 0
            last = -1
            idx = []
            for j, c in enumerate(chunks):
                co = Obj(c, "%s.chunks[%d]" % (where, j))
                k = co.get("index", "u64")
                if k <= last:
                    fail("%s: chunk indexes not strictly increasing" % co.where)
                last = k
                if k * C >= ssize:
                    fail("%s: chunk %d lies beyond the source's end" % (co.where, k))
                co.get("new", "hash")
                old = co.get("old", "hash", nullable=True)
                if (old is None) != (k * C >= tsize):
                    fail("%s: `old` must be null exactly when the chunk lies beyond the target's end"
                         % co.where)
                co.no_unknown()
                reads += min(C, ssize - k * C)
                idx.append(k)
            if holes > reads:
                fail("%s: holes %d exceed the %d bytes it reads" % (where, holes, reads))
            copy_bytes += reads - holes
            if not idx and ssize == tsize:
                fail("%s: a patch with no chunks and no size change does nothing" % where)
            so = o.get("source_stamp", "obj", required=False)
            if so is not None:
                so.get("dev", "u64")
                so.get("ino", "u64")
                mtime_obj(so, "ctime", so.where)
                so.no_unknown()
            attrs_obj(o, where)
            info["chunks"] = idx
        elif op == "symlink":
            text_and_bytes(o, "link", "link_bytes", where)
            if o.get("replaces", "str", required=False) is not None:
                text_and_bytes(o, "replaces", "replaces_bytes", where)
            elif o.get("replaces_bytes", "b64", required=False) is not None:
                fail("%s: `replaces_bytes` without `replaces`" % where)
            attrs_obj(o, where)
        elif op == "link":
            typ = o.get("type", "str")
            if typ not in KINDS or typ == "dir":
                fail("%s: type %r is not a kind that can be hard-linked" % (where, typ))
            to = text_and_bytes(o, "to", "to_bytes", where)
            check_path_safe(to, where)
            if not to or not order_key(to) < order_key(path):
                fail("%s: `to` must be an earlier path" % where)
            size = o.get("size", "u64", required=False)
            if (size is None) != (typ != "file"):
                fail("%s: `size` is given for a file and only for a file" % where)
            r = o.get("replaces", "obj", required=False)
            if r is not None:
                rt = r.get("type", "str")
                if rt not in KINDS or rt == "dir":
                    fail("%s: replaces.type %r cannot be replaced by a link" % (where, rt))
                rs = r.get("size", "u64", required=False)
                rm = mtime_obj(r, "mtime", r.where, required=False)
                if (rs is None or rm is None) != (rt != "file"):
                    fail("%s: replaces.size/mtime are given for a file and only for a file" % where)
                r.no_unknown()
            info["kind"] = typ
        elif op == "mknod":
            typ = o.get("type", "str")
            if typ not in ("fifo", "socket", "chardevice", "blockdevice"):
                fail("%s: type %r is not a special file kind" % (where, typ))
            rdev = o.get("rdev", "list", required=False)
            device = typ in ("chardevice", "blockdevice")
            if (rdev is not None) != device:
                fail("%s: `rdev` is given for a device and only for a device" % where)
            if rdev is not None and (len(rdev) != 2 or not all(is_int(x) and 0 <= x < (1 << 32) for x in rdev)):
                fail("%s: rdev must be [major, minor]" % where)
            rt = o.get("replaces", "str", required=False)
            if rt is not None and rt not in ("fifo", "socket", "chardevice", "blockdevice"):
                fail("%s: replaces %r is not a special file kind" % (where, rt))
            attrs_obj(o, where)
            info["kind"] = typ
        elif op == "unshare":
            typ = o.get("type", "str")
            if typ not in KINDS or typ == "dir":
                fail("%s: type %r has no hard links" % (where, typ))
        elif op == "meta":
            typ = o.get("type", "str")
            if typ not in KINDS:
                fail("%s: type %r is not a kind" % (where, typ))
            m = o.get("mode", "mode", required=False)
            if m is not None and typ == "symlink":
                fail("%s: mode is never set on a symlink" % where)
            mt = mtime_obj(o, "mtime", where, required=False)
            ow = o.get("owner", "list", required=False)
            if ow is not None:
                if len(ow) != 2 or not all(is_int(x) and 0 <= x < (1 << 32) for x in ow):
                    fail("%s: owner must be [uid, gid]" % where)
            xattr_list(o, "xattrs", where)
            if m is None and mt is None and ow is None and "xattrs" not in o.d:
                fail("%s: a meta operation that sets nothing" % where)
        else:
            fail("%s: unknown op %r" % (where, op))
        o.no_unknown()
        ops.append((op, path, o, info))

    # order: removes; then creations in strict path order; then metas in strict reverse path order
    phase = 0
    prev = None
    for i, (op, path, o, info) in enumerate(ops):
        ph = 0 if op == "remove" else 2 if op == "meta" else 1
        if ph < phase:
            fail("%s: out of order (removes, then mkdir/copy/patch/symlink/link/mknod/unshare, then meta)" % o.where)
        if ph != phase:
            phase, prev = ph, None
        k = order_key(path)
        if prev is not None:
            if ph == 1 and not prev < k:
                fail("%s: not in strict path order after \"%s\"" % (o.where, show_path(b"/".join(prev))))
            if ph == 2 and not k < prev:
                fail("%s: not in strict reverse path order after \"%s\"" % (o.where, show_path(b"/".join(prev))))
        prev = k
    removed = {path for op, path, o, info in ops if op == "remove"}
    if len(removed) != sum(1 for op, *_ in ops if op == "remove"):
        fail("plan: a path is removed twice")
    created = {path: CREATES.get(op) or info.get("kind") for op, path, o, info in ops
               if op in CREATES or op in ("link", "mknod")}
    for op, path, o, info in ops:
        if op == "remove":
            then = info["then"]
            if then is not None and created.get(path) != then:
                fail("%s: expect.then is %r but no later operation creates that at this path" % (o.where, then))
            if any(path.startswith(r + b"/") for r in removed):
                fail("%s: lies inside another removed directory" % o.where)
    if t_ops != len(ops):
        fail("plan.totals.operations: %d, but there are %d operations" % (t_ops, len(ops)))
    if t_copy != copy_bytes:
        fail("plan.totals.copy_bytes: %d, but the copies and patch chunks add up to %d" % (t_copy, copy_bytes))
    if t_dent != del_entries:
        fail("plan.totals.delete_entries: %d, but the removals add up to %d" % (t_dent, del_entries))
    if t_dbytes != del_bytes:
        fail("plan.totals.delete_bytes: %d, but the removals add up to %d" % (t_dbytes, del_bytes))
    # the plan id: the checksum over the fields cutover knows (unknown fields and null
    # optional fields dropped), first 32 hex digits
    plan_id = plan_checksum(root)[:32]
    return root, plan_id, C, ops


# ---------------------------------------------------------------- the bundle
def chunk_cvs(data, first_counter):
    return [_chunk(data[i:i + 1024], first_counter + i // 1024, False, _IV, 0)
            for i in range(0, len(data), 1024)] or [_chunk(b"", first_counter, False, _IV, 0)]


def read_bundle(f, plan_id, C, ops):
    def line(what):
        buf = bytearray()
        while True:
            b = f.read(1)
            if not b:
                fail("bundle: truncated: end of file inside %s" % what)
            if b == b"\n":
                return bytes(buf)
            buf += b
            if len(buf) > (1 << 20):
                fail("bundle: %s longer than 1 MiB" % what)

    h = Obj(loads(line("the header line").decode("utf-8", "strict"), "bundle header"), "bundle header")
    fmt = h.get("format", "str")
    if fmt != "cutover-bundle/1":
        fail("bundle: format %r is not \"cutover-bundle/1\"" % fmt)
    pid = h.get("plan", "str")
    if pid != plan_id:
        fail("bundle: made for plan %s, not this plan (%s)" % (pid, plan_id))
    bc = h.get("chunk_size", "u64")
    if bc != C:
        fail("bundle: chunk_size %d differs from the plan's %d" % (bc, C))
    h.no_unknown()

    # the records the plan needs, in plan order
    need = []
    for i, (op, path, o, info) in enumerate(ops):
        if op == "copy":
            size = o.d["source"]["size"]
            offs = list(range(0, size, C)) or [0]
            need += [(i, off, min(C, size - off)) for off in offs]
        elif op == "patch":
            size = o.d["source"]["size"]
            need += [(i, k * C, min(C, size - k * C)) for k in info["chunks"]]
    copy_cvs = {}
    n = 0
    while True:
        rl = line("a record line")
        try:
            rtext = rl.decode("utf-8")
        except UnicodeDecodeError:
            fail("bundle: record line %d is not UTF-8" % (n + 1))
        r = Obj(loads(rtext, "bundle record %d" % (n + 1)), "bundle record %d" % (n + 1))
        if "end" in r.d:
            if r.get("end", "bool") is not True:
                fail("bundle: end line must be {\"end\":true}")
            r.no_unknown()
            break
        opi = r.get("op", "u64")
        off = r.get("offset", "u64")
        length = r.get("length", "u64")
        rh = r.get("hash", "hash")
        r.no_unknown()
        if n >= len(need):
            fail("%s: the plan needs no more records (op %d offset %d)" % (r.where, opi, off))
        want = need[n]
        if (opi, off, length) != want:
            fail("%s: is op %d offset %d length %d; the plan needs op %d offset %d length %d next"
                 % ((r.where, opi, off, length) + want))
        data = f.read(length)
        if len(data) != length:
            fail("%s: truncated: %d of %d bytes" % (r.where, len(data), length))
        if blake3(data).hex() != rh:
            fail("%s: bytes do not match the record's hash (op %d offset %d)" % (r.where, opi, off))
        op, path, o, info = ops[opi]
        if op == "patch":
            k = off // C
            cv = merge_cvs(chunk_cvs(data, off // 1024), False).hex()
            new = [c["new"] for c in o.d["chunks"] if c["index"] == k][0]
            if cv != new:
                fail("%s: bytes of chunk %d of \"%s\" do not match the plan's `new` chaining value"
                     % (r.where, k, show_path(path)))
        else:
            copy_cvs.setdefault(opi, [bytearray(), []])
            acc = copy_cvs[opi]
            if o.d["source"]["size"] <= 1024:
                acc[0] += data
            else:
                acc[1] += chunk_cvs(data, off // 1024)
            if off + length == o.d["source"]["size"]:
                root = blake3(bytes(acc[0])) if o.d["source"]["size"] <= 1024 else merge_cvs(acc[1], True)
                if root.hex() != o.d["source"]["hash"]:
                    fail("%s: the bytes of \"%s\" do not hash to the plan's source.hash"
                         % (r.where, show_path(path)))
                del copy_cvs[opi]
        n += 1
    if n != len(need):
        op_i, off, _ = need[n]
        fail("bundle: ends before the record for op %d offset %d" % (op_i, off))
    if f.read(1):
        fail("bundle: data after the end line")


def main(argv):
    if len(argv) not in (2, 3):
        sys.stderr.write("usage: plan_reader.py PLAN [BUNDLE]\n")
        return 2
    try:
        with open(argv[1], "rb") as f:
            data = f.read()
        root, plan_id, C, ops = read_plan(data)
        for n in Obj.notes:
            sys.stderr.write("plan_reader: note: %s\n" % n)
        if len(argv) == 3:
            with open(argv[2], "rb") as f:
                read_bundle(f, plan_id, C, ops)
    except Bad as e:
        sys.stderr.write("plan_reader: error: %s\n" % e)
        return 2
    except OSError as e:
        sys.stderr.write("plan_reader: error: %s\n" % e)
        return 2
    out = sys.stdout
    for op, path, o, info in ops:
        out.write("%s\t%s\n" % (op, show_path(path)))
    out.write("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
