#!/usr/bin/env python3
"""Independent reader for the run record cutover-run/1, written from docs/report.md only
("Run record (`--report FILE`, `cutover-run/1`)").

Usage: python3 run_record_reader.py RECORD...

Checks every field the page lists, its type and what it may hold for the command that ran:
the times (RFC 3339 UTC with milliseconds, started <= ended, a duration that fits them),
the roots by role, what was compared (names, kinds and content first, then the metadata
fields in their order), the checked and matched counts, the verified/trusted counts per
side, the differences (total = sum of the kinds), the operations (what was applied adds up
to no more than what was planned; a repair's verify), and the exit code against its outcome
word and the success flag. Fields the page does not list are ignored, as it tells readers
to. Prints `ok COMMAND EXIT_CODE` per record and exits 0; on a problem prints
`run_record_reader: error: ...` on stderr and exits 2. Standard library only.
"""

import calendar
import re
import sys

from strict_json import Bad, fail, loads  # noqa: E402

COMMANDS = ("scan", "diff", "plan", "apply", "repair")
ROLES = {
    "scan": {"dir"},
    "diff": {"source", "target"},
    "plan": {"source", "target"},
    "apply": {"plan", "source", "target", "bundle"},
    "repair": {"source", "target"},
}
TIME = re.compile(r"\A(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z\Z")
ALWAYS_COMPARED = ["names", "kinds", "content"]
COMPARED_ORDER = ["mode", "mtime", "owner", "xattr", "hardlinks", "rdev"]
KINDS = ("missing", "extra", "content", "type", "metadata", "hardlink", "trouble")
OUTCOMES = {0: "ok", 1: "different", 2: "trouble", 3: "locked", 25: "delete-limit"}
SIGNAL_CODES = (129, 130, 143)
VERIFIED = ("verified_files", "verified_bytes", "trusted_files", "trusted_bytes")


class Rec:
    """One JSON object; fields are looked up by name, unknown ones are left alone."""

    def __init__(self, d, where):
        if not isinstance(d, dict):
            fail("%s: expected an object, found %r" % (where, d))
        self.d = d
        self.where = where

    def get(self, name, kind, nullable=False):
        w = "%s.%s" % (self.where, name)
        if name not in self.d:
            fail("%s: missing" % w)
        v = self.d[name]
        if v is None:
            if nullable:
                return None
            fail("%s: is null" % w)
        if kind == "obj":
            return Rec(v, w)
        ok = {
            "str": lambda x: isinstance(x, str),
            "bool": lambda x: isinstance(x, bool),
            "u64": lambda x: isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2 ** 64,
            "num": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
            "list": lambda x: isinstance(x, list),
        }[kind]
        if not ok(v):
            fail("%s: %r is not a %s" % (w, v, kind))
        return v


def seconds(text, where):
    m = TIME.match(text)
    if not m:
        fail("%s: %r is not RFC 3339 UTC with milliseconds (2026-12-02T08:27:41.338Z)" % (where, text))
    y, mo, d, h, mi, s, ms = (int(g) for g in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        fail("%s: %r is not a valid time" % (where, text))
    return calendar.timegm((y, mo, d, h, mi, s)) + ms / 1000.0


def check_summary(s):
    counts = {k: s.get(k, "u64") for k in KINDS}
    total = s.get("total", "u64")
    if total != sum(counts.values()):
        fail("%s.total is %d, the kinds add up to %d" % (s.where, total, sum(counts.values())))
    for k in ("missing_bytes", "extra_bytes", "divergent_bytes"):
        s.get(k, "u64")
    if counts["missing"] == 0 and s.d["missing_bytes"]:
        fail("%s: missing_bytes without a missing entry" % s.where)
    if counts["extra"] == 0 and s.d["extra_bytes"]:
        fail("%s: extra_bytes without an extra entry" % s.where)
    return total


def check_items(lst, where):
    for i, item in enumerate(lst):
        o = Rec(item, "%s[%d]" % (where, i))
        o.get("path", "str")
        o.get("op", "str")
        o.get("reason", "str")
    return len(lst)


def check_operations(o, command):
    planned = o.get("planned", "u64")
    for k in ("copy_bytes", "delete_entries", "delete_bytes"):
        o.get(k, "u64")
    if planned == 0 and (o.d["copy_bytes"] or o.d["delete_entries"]):
        fail("operations: bytes to copy or entries to delete in a plan of no operation")
    for i, u in enumerate(o.get("unrepairable", "list")):
        r = Rec(u, "operations.unrepairable[%d]" % i)
        r.get("path", "str")
        r.get("reason", "str")
    applied = o.get("applied", "obj", nullable=True)
    if applied is not None:
        if command == "plan":
            fail("operations.applied: a plan applies nothing")
        done = applied.get("done", "u64")
        already = applied.get("already_done", "u64")
        skipped = check_items(applied.get("skipped", "list"), "operations.applied.skipped")
        failed = check_items(applied.get("failed", "list"), "operations.applied.failed")
        for k in ("bytes_copied", "bytes_deleted", "entries_deleted", "held_deletes"):
            applied.get(k, "u64")
        held = applied.d["held_deletes"]
        interrupted = applied.get("interrupted", "str", nullable=True)
        # Failures outside one operation (a batch's sync) count too, so only the operations
        # themselves are bounded by the plan.
        if done + already + held > planned:
            fail("operations.applied: %d done, %d already done and %d held of %d planned" % (
                done, already, held, planned))
        if interrupted is not None and interrupted not in ("SIGHUP", "SIGINT", "SIGTERM"):
            fail("operations.applied.interrupted: %r is not a signal name" % interrupted)
    verify = o.get("verify", "obj", nullable=True)
    if verify is not None:
        if command != "repair":
            fail("operations.verify: only repair verifies")
        identical = verify.get("identical", "bool")
        remaining = verify.get("remaining", "u64")
        total = check_summary(verify.get("differences", "obj"))
        if remaining != total:
            fail("operations.verify: remaining %d, differences.total %d" % (remaining, total))
        if identical != (remaining == 0):
            fail("operations.verify: identical is %s with %d remaining" % (identical, remaining))
    return applied, verify


def check_record(doc, name):
    t = Rec(doc, name)
    if t.get("format", "str") != "cutover-run/1":
        fail("%s: format %r is not \"cutover-run/1\"" % (name, t.d["format"]))
    version = t.get("version", "str")
    if t.get("tool", "str") != "cutover " + version:
        fail("%s: tool %r is not \"cutover %s\"" % (name, t.d["tool"], version))
    if not t.get("host", "str"):
        fail("%s: empty host" % name)
    command = t.get("command", "str")
    if command not in COMMANDS:
        fail("%s: command %r is not one of %s" % (name, command, ", ".join(COMMANDS)))
    args = t.get("arguments", "list")
    if not all(isinstance(a, str) for a in args):
        fail("%s: arguments are not all strings" % name)
    if not t.get("job", "str"):
        fail("%s: empty job" % name)
    started = seconds(t.get("started", "str"), name + ".started")
    ended = seconds(t.get("ended", "str"), name + ".ended")
    if ended < started:
        fail("%s: ended before it started" % name)
    duration = t.get("duration_seconds", "num")
    # The duration is measured on its own clock; the two times are rounded to milliseconds.
    if duration < 0 or abs(duration - (ended - started)) > 1.0:
        fail("%s: duration_seconds %s does not fit %s .. %s" % (name, duration, t.d["started"], t.d["ended"]))

    roots = t.get("roots", "obj")
    for role, path in roots.d.items():
        if role not in ROLES[command]:
            fail("%s.roots: role %r for %s" % (name, role, command))
        if not isinstance(path, str) or not path:
            fail("%s.roots.%s: %r is not a path" % (name, role, path))

    compared = t.get("compared", "list", nullable=True)
    if compared is not None:
        if command in ("scan", "apply"):
            fail("%s.compared: %s compares nothing" % (name, command))
        if compared[:3] != ALWAYS_COMPARED:
            fail("%s.compared: %r does not start with names, kinds, content" % (name, compared))
        rest = compared[3:]
        if any(c not in COMPARED_ORDER for c in rest) or rest != sorted(rest, key=COMPARED_ORDER.index) \
                or len(set(rest)) != len(rest):
            fail("%s.compared: %r is not in the order %s" % (name, rest, ", ".join(COMPARED_ORDER)))

    checked = t.get("checked", "obj", nullable=True)
    if checked is not None:
        n = {k: checked.get(k, "u64") for k in ("entries", "files", "bytes", "directories")}
        if n["files"] + n["directories"] > n["entries"]:
            fail("%s.checked: more files and directories than entries" % name)
        if n["entries"] and not n["directories"]:
            fail("%s.checked: entries without a root directory" % name)
        matched = checked.get("matched", "obj", nullable=True)
        if (matched is None) != (command == "scan"):
            fail("%s.checked.matched: null exactly for scan" % name)
        if matched is not None:
            for k in ("entries", "files", "bytes"):
                if matched.get(k, "u64") > n[k]:
                    fail("%s.checked.matched.%s: more matched than checked" % (name, k))

    verified = t.get("verified", "obj", nullable=True)
    if verified is not None:
        sides = {"dir"} if command == "scan" else {"source", "target"}
        for side, v in verified.d.items():
            if side not in sides:
                fail("%s.verified: side %r for %s" % (name, side, command))
            o = Rec(v, "%s.verified.%s" % (name, side))
            for k in VERIFIED:
                o.get(k, "u64")

    differences = t.get("differences", "obj", nullable=True)
    total = None
    if differences is not None:
        if command in ("scan", "apply"):
            fail("%s.differences: %s finds none" % (name, command))
        total = check_summary(differences)
        if compared is None:
            fail("%s: differences without compared" % name)

    operations = t.get("operations", "obj", nullable=True)
    applied = verify = None
    if operations is not None:
        if command in ("scan", "diff"):
            fail("%s.operations: %s plans nothing" % (name, command))
        applied, verify = check_operations(operations, command)

    code = t.get("exit_code", "u64")
    outcome = t.get("outcome", "str")
    want = OUTCOMES.get(code, "interrupted" if code in SIGNAL_CODES else None)
    if want is None:
        fail("%s: exit_code %d is not one the page lists" % (name, code))
    if outcome != want:
        fail("%s: outcome %r for exit code %d (expected %r)" % (name, outcome, code, want))
    if code in (3, 25) and command not in ("apply", "repair"):
        fail("%s: exit code %d from %s" % (name, code, command))
    success = t.get("success", "bool")
    if success != (code == 0 or (code == 1 and command in ("scan", "diff", "plan"))):
        fail("%s: success is %s with exit code %d from %s" % (name, success, code, command))
    error = t.get("error", "str", nullable=True)
    if code == 0 and error is not None:
        fail("%s: an error with exit code 0" % name)

    # What the verdict says about what was found.
    if command == "diff" and total is not None and code in (0, 1):
        if (total == 0) != (code == 0):
            fail("%s: diff exit %d with %d differences" % (name, code, total))
    if command == "repair" and code == 0 and verify is not None and not verify.d["identical"]:
        fail("%s: repair exit 0 without an identical verify" % name)
    if code == 0 and applied is not None and (applied.d["failed"] or applied.d["skipped"]):
        fail("%s: exit 0 with skipped or failed operations" % name)
    return command, code


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: run_record_reader.py RECORD...\n")
        return 2
    try:
        for path in argv[1:]:
            try:
                text = open(path, "rb").read().decode("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                fail("%s: cannot read: %s" % (path, e))
            command, code = check_record(loads(text, path), path)
            print("ok %s %d" % (command, code))
    except Bad as e:
        sys.stderr.write("run_record_reader: error: %s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
