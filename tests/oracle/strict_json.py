"""Strict JSON for the readers here: duplicate keys and NaN refused, and typed field access
that names the field in every message. Standard library only."""

import base64
import binascii
import json
import re


class Bad(Exception):
    pass


def fail(msg):
    raise Bad(msg)


def _no_dup_keys(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate field `%s`" % k)
        d[k] = v
    return d


def _no_const(c):
    raise ValueError("non-standard JSON constant %s" % c)


def loads(text, what):
    try:
        return json.loads(text, object_pairs_hook=_no_dup_keys, parse_constant=_no_const)
    except ValueError as e:
        fail("%s: not valid JSON: %s" % (what, e))


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
MODE = re.compile(r"\A[0-7]{4}\Z")
U64 = 1 << 64


def checked(v, kind, w):
    """`v` (the value at `w`) checked against `kind`; base64 comes back decoded."""
    if kind == "u64":
        if not is_int(v) or not 0 <= v < U64:
            fail("%s: expected an unsigned integer, found %r" % (w, v))
    elif kind == "i64":
        if not is_int(v) or not -(1 << 63) <= v < (1 << 63):
            fail("%s: expected an integer, found %r" % (w, v))
    elif kind == "u32":
        if not is_int(v) or not 0 <= v < (1 << 32):
            fail("%s: expected a 32-bit unsigned integer, found %r" % (w, v))
    elif kind == "str":
        if not isinstance(v, str):
            fail("%s: expected a string, found %r" % (w, v))
    elif kind == "bool":
        if not isinstance(v, bool):
            fail("%s: expected a bool, found %r" % (w, v))
    elif kind == "hash":
        if not isinstance(v, str) or not HEX64.match(v):
            fail("%s: expected 64 lowercase hex digits, found %r" % (w, v))
    elif kind == "list":
        if not isinstance(v, list):
            fail("%s: expected an array, found %r" % (w, v))
    elif kind == "mode":
        if not isinstance(v, str) or not MODE.match(v):
            fail("%s: expected a 4-digit octal mode string, found %r" % (w, v))
    elif kind == "b64":
        if not isinstance(v, str):
            fail("%s: expected a base64 string, found %r" % (w, v))
        try:
            raw = base64.b64decode(v.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raw = None
        if raw is None or base64.b64encode(raw).decode("ascii") != v:
            fail("%s: not valid (canonical, padded) standard base64: %r" % (w, v))
        return raw
    else:
        raise AssertionError(kind)
    return v


class Fields:
    """Typed access to one JSON object, naming the field in every message; each reader
    decides what a missing, null or unknown field means."""

    def __init__(self, d, where):
        if not isinstance(d, dict):
            fail("%s: expected an object, found %r" % (where, d))
        self.d = d
        self.where = where
        self.used = set()

    def typed(self, v, kind, w):
        """`v` checked as `kind`; an object comes back as this reader's own kind of Fields."""
        if kind == "obj":
            return type(self)(v, w)
        return checked(v, kind, w)
