"""BLAKE3 in pure Python, from the BLAKE3 specification: hash and derive_key modes, and the
parent-node merging that cutover's chunk hashes need. Standard library only, and slow
(about 50 KB/s): for the small manifests, plans and bundles the tests feed the readers here.
Checked against the `blake3` package for lengths around every block and chunk boundary.
"""

import struct

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
       0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_M32 = 0xFFFFFFFF
CHUNK_START, CHUNK_END, PARENT, ROOT = 1, 2, 4, 8


def _g(s, a, b, c, d, x, y):
    s[a] = (s[a] + s[b] + x) & _M32
    v = s[d] ^ s[a]; s[d] = ((v >> 16) | (v << 16)) & _M32
    s[c] = (s[c] + s[d]) & _M32
    v = s[b] ^ s[c]; s[b] = ((v >> 12) | (v << 20)) & _M32
    s[a] = (s[a] + s[b] + y) & _M32
    v = s[d] ^ s[a]; s[d] = ((v >> 8) | (v << 24)) & _M32
    s[c] = (s[c] + s[d]) & _M32
    v = s[b] ^ s[c]; s[b] = ((v >> 7) | (v << 25)) & _M32


def compress(cv, block, counter, block_len, flags):
    """BLAKE3 compression; cv = 8 words, block = 64 bytes. Returns 16 words."""
    m = list(struct.unpack("<16I", block))
    s = list(cv) + list(_IV[:4]) + [counter & _M32, (counter >> 32) & _M32, block_len, flags]
    for r in range(7):
        _g(s, 0, 4, 8, 12, m[0], m[1]); _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5]); _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9]); _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13]); _g(s, 3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[i] for i in _PERM]
    for i in range(8):
        s[i] ^= s[i + 8]
        s[i + 8] ^= cv[i]
    return s


DERIVE_KEY_CONTEXT, DERIVE_KEY_MATERIAL = 32, 64


def merge(left, right, root, key=_IV, flags=0):
    """Parent node of two 32-byte CVs (hash mode unless `key`/`flags` say otherwise)."""
    out = compress(key, left + right, 0, 64, flags | PARENT | (ROOT if root else 0))
    return struct.pack("<8I", *out[:8])


def merge_cvs(cvs, root, key=_IV, flags=0):
    """BLAKE3 tree rule: left takes largest power of two strictly less than n."""
    n = len(cvs)
    if n == 1:
        return cvs[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return merge(merge_cvs(cvs[:k], False, key, flags), merge_cvs(cvs[k:], False, key, flags), root, key, flags)


def _chunk(data, counter, root, key, flags):
    """The CV of one chunk of at most 1024 bytes (its output, when it is the root)."""
    blocks = [data[i:i + 64] for i in range(0, len(data), 64)] or [b""]
    cv = key
    for i, block in enumerate(blocks):
        f = flags | (CHUNK_START if i == 0 else 0)
        if i == len(blocks) - 1:
            f |= CHUNK_END | (ROOT if root else 0)
        cv = compress(cv, block.ljust(64, b"\0"), counter, len(block), f)[:8]
    return struct.pack("<8I", *cv)


def blake3(data, key=_IV, flags=0):
    """The 32-byte BLAKE3 hash of `data` (keyed by the 8 words `key`, with mode `flags`)."""
    chunks = [data[i:i + 1024] for i in range(0, len(data), 1024)] or [b""]
    if len(chunks) == 1:
        return _chunk(chunks[0], 0, True, key, flags)
    return merge_cvs([_chunk(c, i, False, key, flags) for i, c in enumerate(chunks)], True, key, flags)


def derive_key(context, material):
    """BLAKE3's derive_key mode: `material` hashed under a key made from `context`."""
    context_key = struct.unpack("<8I", blake3(context.encode(), flags=DERIVE_KEY_CONTEXT))
    return blake3(material, context_key, DERIVE_KEY_MATERIAL)
