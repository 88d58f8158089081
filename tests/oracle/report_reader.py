#!/usr/bin/env python3
"""Independent reader for the diff report cutover-diff/1, written from docs/report.md only.

Usage: python3 report_reader.py REPORT [--jsonl]

REPORT is the output of `cutover diff --format json` (default) or, with --jsonl, of
`--format jsonl` (`-` reads standard input). Checks every field and type per difference
kind, the path order, path_bytes/link *_bytes against their lossy text, ranges (sorted,
non-overlapping, non-touching, chunk granularity, the tail and short-file rules, within
the larger size), metadata values, the name hints (recomputed), the summary counts and
byte sums, identical <=> no differences, and for JSONL one difference per line then one
summary line. Prints `ok N differences` and exits 0; on a problem prints
`report_reader: error: ...` on stderr and exits 2. Standard library only.
"""

import re
import sys

import unicodedata

from strict_json import MODE, Bad, Fields, fail, loads  # noqa: E402


MTIME = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(\d{9})Z\Z")
OWNER = re.compile(r"\A(\d+):(\d+)\Z")
KINDS = ("file", "dir", "symlink", "fifo", "socket", "chardevice", "blockdevice")
DIFF_KINDS = ("missing", "extra", "content", "type", "metadata", "hardlink", "unreadable", "unstable")
META_FIELDS = ("mode", "mtime", "owner", "xattr")
# Also in `compared` when both sides recorded them; never metadata fields.
COMPARED_EXTRA = ("hardlinks", "rdev")
RDEV = re.compile(r"\A(\d+):(\d+)\Z")


class Obj(Fields):
    def has(self, name):
        return name in self.d

    def get(self, name, kind, required=True, nullable=False):
        self.used.add(name)
        if name not in self.d:
            if required:
                fail("%s: missing required field `%s`" % (self.where, name))
            return None
        v = self.d[name]
        w = "%s.%s" % (self.where, name)
        if v is None:
            if nullable:
                return None
            fail("%s: is null" % w)
        return self.typed(v, kind, w)

    def done(self):
        extra = sorted(set(self.d) - self.used)
        if extra:
            fail("%s: unexpected field(s) %s" % (self.where, ", ".join("`%s`" % k for k in extra)))


def exact_bytes(o, text_name, bytes_name):
    """Text (lossy UTF-8) plus optional base64 exact bytes; returns the exact bytes."""
    text = o.get(text_name, "str")
    raw = o.get(bytes_name, "b64", required=False)
    if raw is None:
        if "\ufffd" in text:
            # allowed (a real U+FFFD in a valid UTF-8 name), nothing to check
            pass
        return text.encode("utf-8")
    try:
        raw.decode("utf-8")
        fail("%s: `%s` present although the bytes are valid UTF-8" % (o.where, bytes_name))
    except UnicodeDecodeError:
        pass
    if raw.decode("utf-8", "replace") != text:
        fail("%s: `%s` %r is not the lossy UTF-8 form of `%s` %r" % (o.where, text_name, text, bytes_name, raw))
    return raw


def order_key(p):
    return p.split(b"/") if p else []


def check_side(top, name):
    s = top.get(name, "obj")
    s.get("root", "str")
    s.get("hash", "hash", nullable=True)
    c = s.get("chunk_size", "u64")
    check_chunk_size(c, s.where + ".chunk_size")
    if s.has("verified"):
        v = s.get("verified", "obj")
        for field in ("verified_files", "verified_bytes", "trusted_files", "trusted_bytes"):
            v.get(field, "u64")
        v.done()
    s.done()
    return c


def check_chunk_size(c, where):
    if c & (c - 1) or not 1024 <= c <= (1 << 30):
        fail("%s: %d is not a power of two from 1 KiB to 1 GiB" % (where, c))


def mtime_ns(s, where):
    m = MTIME.match(s) if isinstance(s, str) else None
    if not m:
        fail("%s: %r is not RFC 3339 UTC with nanoseconds" % (where, s))
    return int(m.group(1))


def check_metadata(o, compared, fields_expected=None):
    m = o.get("metadata", "obj")
    if not m.d:
        fail("%s: empty" % m.where)
    for k in m.d:
        m.used.add(k)
        w = "%s.%s" % (m.where, k)
        if k not in META_FIELDS:
            fail("%s: unknown metadata field" % w)
        if k not in compared:
            fail("%s: `%s` differs but is not in `compared`" % (w, k))
        v = Obj(m.d[k], w)
        if k == "xattr":
            names = v.get("names", "list")
            if not names or not all(isinstance(n, str) for n in names):
                fail("%s.names: expected a non-empty array of strings" % w)
            if [n.encode("utf-8") for n in names] != sorted(n.encode("utf-8") for n in names) or len(set(names)) != len(names):
                fail("%s.names: not sorted and unique" % w)
            v.done()
            continue
        a, b = v.get("source", "str"), v.get("target", "str")
        v.done()
        if k == "mode":
            if not MODE.match(a) or not MODE.match(b):
                fail("%s: mode values must be 4-digit octal strings: %r, %r" % (w, a, b))
            if a == b:
                fail("%s: source and target are equal" % w)
        elif k == "owner":
            if not OWNER.match(a) or not OWNER.match(b):
                fail("%s: owner values must be \"uid:gid\": %r, %r" % (w, a, b))
            if a == b:
                fail("%s: source and target are equal" % w)
        elif k == "mtime":
            na, nb = mtime_ns(a, w), mtime_ns(b, w)
            if (na == 0 or nb == 0) and a[:19] == b[:19]:
                fail("%s: equal under the whole-second rule (%s, %s)" % (w, a, b))
            if a == b:
                fail("%s: source and target are equal" % w)
    if fields_expected is not None and set(fields_expected) != set(m.d):
        fail("%s: `fields` %r and the `metadata` members %r differ" % (o.where, fields_expected, sorted(m.d)))
    m.done()
    return m.d


def check_ranges(o, C):
    ss = o.get("source_size", "u64")
    ts = o.get("target_size", "u64")
    rs = o.get("ranges", "list")
    big, small = max(ss, ts), min(ss, ts)
    got = []
    for i, r in enumerate(rs):
        ro = Obj(r, "%s.ranges[%d]" % (o.where, i))
        got.append((ro.get("offset", "u64"), ro.get("length", "u64")))
        ro.done()
    w = o.where + ".ranges"
    if not got:
        fail("%s: a content difference between files needs at least one range" % w)
    prev_end = None
    for off, ln in got:
        if ln == 0:
            fail("%s: empty range at %d" % (w, off))
        if prev_end is not None and off <= prev_end:
            fail("%s: range %d+%d overlaps or touches the previous one (or is out of order)" % (w, off, ln))
        if off + ln > big:
            fail("%s: range %d+%d reaches beyond the larger size %d" % (w, off, ln, big))
        prev_end = off + ln
    if small < C:
        if got != [(0, big)]:
            fail("%s: a file shorter than one chunk must have the one range 0+%d, not %r" % (w, big, got))
    else:
        for off, ln in got:
            end = off + ln
            if off % C or (end % C and end != big):
                fail("%s: range %d+%d is not on chunk boundaries (chunk %d)" % (w, off, ln, C))
        if ss != ts:
            off, ln = got[-1]
            first_diff = (small // C) * C
            if off + ln != big or off > first_diff:
                fail("%s: sizes differ (%d, %d): the last range must cover %d..%d" % (w, ss, ts, first_diff, big))
        else:
            if any(off + ln > small for off, ln in got):
                fail("%s: a range beyond the equal sizes" % w)
    return sum(ln for off, ln in got)


def check_hardlink(o, where, compared, required):
    """The `hardlink` member: on each side the first name sharing the inode, or null."""
    if not o.has("hardlink"):
        if required:
            fail("%s: a hardlink difference without `hardlink`" % where)
        return
    if "hardlinks" not in compared:
        fail("%s: hard links differ but `hardlinks` is not in `compared`" % where)
    h = o.get("hardlink", "obj")
    sides = []
    for side in ("source", "target"):
        if h.get(side, "str", nullable=True) is None:
            if h.has(side + "_bytes"):
                fail("%s: `%s_bytes` without a %s name" % (where, side, side))
            sides.append(None)
        else:
            sides.append(exact_bytes(h, side, side + "_bytes"))
    h.done()
    if sides[0] == sides[1]:
        fail("%s: the hard links are equal on both sides" % where)


def check_difference(d, where, compared, C, jsonl):
    o = Obj(d, where)
    kind = o.get("kind", "str")
    if kind not in DIFF_KINDS:
        fail("%s: unknown kind %r" % (where, kind))
    path = exact_bytes(o, "path", "path_bytes")
    o.where = where = "%s (%s \"%s\")" % (where, kind, o.d["path"])
    if path:
        comps = path.split(b"/")
        if path.startswith(b"/") or any(c in (b"", b".", b"..") for c in comps) or b"\0" in path:
            fail("%s: not a clean relative path" % where)
    elif kind not in ("metadata", "unreadable", "unstable"):
        fail("%s: only metadata or trouble can be reported for the root itself" % where)
    hint = o.get("hint", "str", required=False)
    if hint is not None and kind not in ("missing", "extra"):
        fail("%s: a hint on a %s difference" % (where, kind))
    if jsonl and "format" in o.d:
        fail("%s: a difference line has `format`" % where)
    info = {"kind": kind, "path": path, "hint": hint, "div": 0, "bytes": 0}
    if kind in ("missing", "extra"):
        t = o.get("type", "str")
        if t not in KINDS:
            fail("%s: type %r is not a kind" % (where, t))
        files = o.get("files", "u64")
        byts = o.get("bytes", "u64")
        if t == "file" and files != 1:
            fail("%s: a file counts files 1, not %d" % (where, files))
        if t not in ("file", "dir") and (files or byts):
            fail("%s: a %s holds no regular files (files %d, bytes %d)" % (where, t, files, byts))
        if t == "dir" and files == 0 and byts:
            fail("%s: bytes without files" % where)
        info["bytes"] = byts
    elif kind == "content":
        if "type" in o.d and o.d["type"] in ("chardevice", "blockdevice"):
            o.get("type", "str")
            if "rdev" not in compared:
                fail("%s: device numbers differ but `rdev` is not in `compared`" % where)
            r = o.get("rdev", "obj")
            a, b = r.get("source", "str"), r.get("target", "str")
            r.done()
            if not RDEV.match(a) or not RDEV.match(b) or a == b:
                fail("%s: rdev %r / %r must be two different MAJOR:MINOR" % (where, a, b))
        elif "type" in o.d:
            t = o.get("type", "str")
            if t != "symlink":
                fail("%s: content `type` must be \"symlink\" or a device, found %r" % (where, t))
            link = o.get("link", "obj")
            a = exact_bytes(link, "source", "source_bytes")
            b = exact_bytes(link, "target", "target_bytes")
            link.done()
            if a == b:
                fail("%s: the link targets are equal" % where)
        else:
            info["div"] = check_ranges(o, C)
        if o.has("metadata"):
            check_metadata(o, compared)
        check_hardlink(o, where, compared, False)
    elif kind == "hardlink":
        check_hardlink(o, where, compared, True)
        if o.has("metadata"):
            check_metadata(o, compared)
    elif kind == "type":
        a, b = o.get("source_type", "str"), o.get("target_type", "str")
        if a not in KINDS or b not in KINDS or a == b:
            fail("%s: source_type %r / target_type %r must be two different kinds" % (where, a, b))
    elif kind == "metadata":
        fields = o.get("fields", "list")
        if not fields or not all(isinstance(f, str) for f in fields) or len(set(fields)) != len(fields):
            fail("%s: `fields` must be a non-empty list of distinct strings" % where)
        check_metadata(o, compared, fields)
    else:
        side = o.get("side", "str")
        if side not in ("source", "target"):
            fail("%s: side %r is not \"source\" or \"target\"" % (where, side))
        o.get("error", "str")
    o.done()
    return info


def expected_hints(infos):
    """Recompute the name hints (report.md, Name hints)."""
    groups = {}
    for i, f in enumerate(infos):
        if f["kind"] not in ("missing", "extra"):
            continue
        try:
            name = f["path"].decode("utf-8")
        except UnicodeDecodeError:
            continue
        parent, _, leaf = name.rpartition("/")
        key = (parent, unicodedata.normalize("NFC", leaf).lower())
        groups.setdefault(key, []).append((i, leaf, name))
    want = {}
    for members in groups.values():
        for i, leaf, _ in members:
            kind = infos[i]["kind"]
            other = "extra" if kind == "missing" else "missing"
            # NAME in the hint is the lookalike's whole relative path (found by experiment)
            looks = [(l, full) for j, l, full in members if infos[j]["kind"] == other]
            if not looks:
                continue
            ways = []
            for l, _ in looks:
                if unicodedata.normalize("NFC", leaf) == unicodedata.normalize("NFC", l):
                    w = "Unicode normalization (NFC vs NFD)"
                elif leaf.lower() == l.lower():
                    w = "letter case"
                else:
                    w = "letter case and Unicode normalization"
                if w not in ways:
                    ways.append(w)
            want[i] = "differs from %s %s only by %s" % (
                other, ", ".join("'%s'" % full for l, full in looks), " or ".join(ways))
    return want


def check_report(top, diffs, jsonl):
    t = Obj(top, "report" if not jsonl else "summary line")
    fmt = t.get("format", "str")
    if fmt != "cutover-diff/1":
        fail("%s: format %r is not \"cutover-diff/1\"" % (t.where, fmt))
    if jsonl:
        if t.get("type", "str") != "summary":
            fail("summary line: `type` must be \"summary\"")
    identical = t.get("identical", "bool")
    sc = check_side(t, "source")
    tc = check_side(t, "target")
    C = t.get("chunk_size", "u64")
    check_chunk_size(C, "chunk_size")
    if C != max(sc, tc):
        fail("chunk_size %d is not the larger of the sides' %d and %d" % (C, sc, tc))
    compared = t.get("compared", "list")
    if not all(c in META_FIELDS + COMPARED_EXTRA for c in compared) or len(set(compared)) != len(compared):
        fail("compared: %r is not a set of mode, mtime, owner, xattr, hardlinks, rdev" % (compared,))
    # Optional (reports of earlier versions lack it); when present, exactly the rest.
    not_compared = t.get("not_compared", "list", required=False)
    if not_compared is not None and sorted(not_compared) != sorted(
            f for f in META_FIELDS + COMPARED_EXTRA if f not in compared):
        fail("not_compared: %r is not the fields missing from compared %r" % (not_compared, compared))
    # Optional (reports of earlier versions lack it): the source's entries, by kind.
    if t.has("checked"):
        ch = t.get("checked", "obj")
        n = {k: ch.get(k, "u64") for k in ("entries", "files", "directories", "bytes")}
        ch.done()
        if n["files"] + n["directories"] > n["entries"]:
            fail("checked: %d files and %d directories are more than its %d entries" % (
                n["files"], n["directories"], n["entries"]))
        if n["entries"] and not n["directories"]:
            fail("checked: %d entries and no directory (the root is one)" % n["entries"])
        if n["bytes"] and not n["files"]:
            fail("checked: %d bytes in no file" % n["bytes"])
    s = t.get("summary", "obj")
    counts = {k: s.get(k, "u64") for k in ("missing", "extra", "content", "type", "metadata", "hardlink", "trouble",
                                             "divergent_bytes", "missing_bytes", "extra_bytes")}
    s.done()
    if not jsonl:
        diffs = t.get("differences", "list")
    # Directories not entered under -x: {path, path_bytes?, side} (docs/report.md).
    for i, n in enumerate(t.get("not_entered", "list")):
        o = Obj(n, "not_entered[%d]" % i)
        exact_bytes(o, "path", "path_bytes")
        if o.get("side", "str") not in ("source", "target", "both"):
            fail("not_entered[%d]: side must be source, target or both" % i)
        o.done()
    # Whole-tree hints (docs/report.md): optional (earlier versions lack it), strings.
    hints = t.get("hints", "list", required=False) or []
    for i, h in enumerate(hints):
        if not isinstance(h, str) or not h:
            fail("hints[%d]: not a non-empty string" % i)
    if hints and not diffs:
        fail("hints on a report without differences")
    t.done()

    infos = []
    for i, d in enumerate(diffs):
        where = ("line %d" % (i + 1)) if jsonl else ("differences[%d]" % i)
        infos.append(check_difference(d, where, compared, C, jsonl))
    for a, b in zip(infos, infos[1:]):
        if not order_key(a["path"]) < order_key(b["path"]):
            fail("differences not in strict path order: \"%s\" then \"%s\"" % (
                a["path"].decode("utf-8", "replace"), b["path"].decode("utf-8", "replace")))
    want_hints = expected_hints(infos)
    for i, f in enumerate(infos):
        if f["hint"] != want_hints.get(i):
            fail("difference \"%s\": hint %r, expected %r" % (f["path"].decode("utf-8", "replace"), f["hint"], want_hints.get(i)))
    got = {k: 0 for k in counts}
    for f in infos:
        k = f["kind"]
        got["trouble" if k in ("unreadable", "unstable") else k] += 1
        got["divergent_bytes"] += f["div"]
        if k == "missing":
            got["missing_bytes"] += f["bytes"]
        if k == "extra":
            got["extra_bytes"] += f["bytes"]
    for k in counts:
        if counts[k] != got[k]:
            fail("summary.%s is %d, but the differences give %d" % (k, counts[k], got[k]))
    if identical != (not infos):
        fail("identical is %s with %d differences" % (str(identical).lower(), len(infos)))
    return len(infos)


def main(argv):
    args = argv[1:]
    jsonl = "--jsonl" in args
    args = [a for a in args if a != "--jsonl"]
    if len(args) != 1:
        sys.stderr.write("usage: report_reader.py REPORT [--jsonl]\n")
        return 2
    try:
        try:
            data = sys.stdin.buffer.read() if args[0] == "-" else open(args[0], "rb").read()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            fail("cannot read the report: %s" % e)
        if jsonl:
            if not text.endswith("\n"):
                fail("jsonl: the last line does not end with a newline")
            lines = text[:-1].split("\n")
            objs = []
            for i, ln in enumerate(lines):
                o = loads(ln, "line %d" % (i + 1))
                if not isinstance(o, dict):
                    fail("line %d: not a JSON object" % (i + 1))
                objs.append(o)
            for i, o in enumerate(objs[:-1]):
                if "format" in o:
                    fail("line %d: a line with `format` before the last line" % (i + 1))
            if not objs or "format" not in objs[-1]:
                fail("jsonl: the last line is not the summary line (no `format`)")
            n = check_report(objs[-1], objs[:-1], True)
        else:
            top = loads(text, "report")
            n = check_report(top, None, False)
    except Bad as e:
        sys.stderr.write("report_reader: error: %s\n" % e)
        return 2
    print("ok %d differences" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
