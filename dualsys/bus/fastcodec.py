"""Compiled validation of bus messages: the codec's checks in numba, on the raw bytes.

`dualsys.bus.codec.decode` unpacks a message into Python objects, then validates them; after a
wake-up on this VM that costs ~150-200 µs for a 6 KiB latent, most of it the Python it runs
going cold (benchmarks/results/bus.md). `parse` walks the same msgpack bytes once in compiled
code and checks everything `decode` checks (envelope, schema version, type, header ranges,
the exact field set, each field's kind, range, string length in characters and UTF-8
validity, array dtype, rank, shape, size and finiteness, and the receiver's `Limits`),
writing what it found into preallocated arrays (header numbers, integer fields, where each
string and array lies in the buffer). It allocates nothing.

It is a strict subset of `decode`: it accepts only the plain forms dualsys's own encoders
write, and answers FALLBACK for everything else (another type, a negative or oversize integer,
a float16 array, a duplicate key, anything malformed). FALLBACK is not a verdict: the caller
then runs `decode`, which accepts or drops with its reason, so what is accepted, refused and
counted is exactly what `decode` decides (tests/bus/test_fastcodec.py checks both agree on
valid, mutated and random messages). A message `parse` accepts, `decode` accepts with the
same values.

Cross-field rules (`Message.invalid`) are compiled for `ActionChunk` (`RULE_CHUNK`); a
`MessageView` refuses other types that have such rules (they go through the codec).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dualsys import SCHEMA_VERSION
from dualsys.bus.codec import ND_EXT
from dualsys.bus.limits import DEFAULT, MAX_NDIM, MAX_SOURCE_CHARS, Limits
from dualsys.bus.messages import INT64_MAX, ActionChunk, Field, Message

OK, FALLBACK = 0, 1
#: cross-field rules compiled into `parse` (Message.invalid), and the fields each reads
RULE_NONE, RULE_CHUNK = 0, 1
_RULES = {ActionChunk: RULE_CHUNK}
_RULE_FIELDS = {RULE_CHUNK: ("actions", "t0_mono_ns", "dt_ns", "frozen")}
#: the largest float32: a view stores float32, a float64 value beyond it does not fit
F32_MAX = float(np.finfo(np.float32).max)
#: field kinds of a plan
K_INT, K_STR, K_ARRAY, K_FLOAT, K_BOOL, K_OTHER = range(6)
_KINDS = {"int": K_INT, "str": K_STR, "array": K_ARRAY, "float": K_FLOAT, "bool": K_BOOL}
#: header words of the output (H_*), then per field OUT_WORDS words from FIELD0 + i*OUT_WORDS
#: (H_VERSION: in a view's meta, 0 until a message is stored; H_SCRATCH: parse's own word)
H_SEQ, H_MONO, H_WALL, H_SRC_OFF, H_SRC_LEN, H_VERSION, H_SCRATCH = range(7)
FIELD0 = 8
#: a field's words: int / bool value, or (offset, byte length) of a string or an array's data;
#: then the array's item size and shape (MAX_NDIM words)
O_VAL, O_LEN, O_ITEM, O_SHAPE = 0, 1, 2, 3
OUT_WORDS = 3 + MAX_NDIM
#: columns of a plan's per-field int64 table
P_KIND, P_LO, P_HI, P_MAXLEN, P_ITEMSIZE, P_NDIM, P_FINITE, P_SHAPE = range(8)
PLAN_COLS = P_SHAPE + MAX_NDIM
#: limits words
L_BYTES, L_STR, L_MAP, L_EXT = range(4)


@njit(cache=True, nogil=True)
def _be(buf, i, w):  # pragma: no cover - compiled
    """Big-endian unsigned integer of w bytes at buf[i]."""
    v = 0
    for j in range(i, i + w):
        v = (v << 8) | buf[j]
    return v


@njit(cache=True, nogil=True)
def _read_int(buf, i, n, out, k):  # pragma: no cover - compiled
    """An int64-ranged msgpack integer at buf[i] into out[k]; the next position, or -1 (not
    an integer, truncated, or beyond int64: the codec's checks decide those)."""
    if i >= n:
        return -1
    b = buf[i]
    if b < 0x80:
        out[k] = b
        return i + 1
    if b >= 0xE0:  # negative fixint
        out[k] = b - 256
        return i + 1
    if 0xCC <= b <= 0xCF:
        w = 1 << (b - 0xCC)
        if i + 1 + w > n:
            return -1
        if w == 8 and buf[i + 1] >= 0x80:  # above INT64_MAX
            return -1
        out[k] = _be(buf, i + 1, w)
        return i + 1 + w
    if 0xD0 <= b <= 0xD3:
        w = 1 << (b - 0xD0)
        if i + 1 + w > n:
            return -1
        v = _be(buf, i + 1, w)
        if w < 8 and v >= 1 << (8 * w - 1):
            v -= 1 << (8 * w)
        out[k] = v  # int64 wraps to the signed value on its own
        return i + 1 + w
    return -1


@njit(cache=True, nogil=True)
def _str_head(buf, i, n):  # pragma: no cover - compiled
    """(offset of the bytes, byte length) of the msgpack str at buf[i], or (-1, 0)."""
    if i >= n:
        return -1, 0
    b = buf[i]
    if 0xA0 <= b <= 0xBF:
        off, ln = i + 1, b & 0x1F
    elif b == 0xD9 and i + 2 <= n:
        off, ln = i + 2, buf[i + 1]
    elif b == 0xDA and i + 3 <= n:
        off, ln = i + 3, _be(buf, i + 1, 2)
    elif b == 0xDB and i + 5 <= n:
        off, ln = i + 5, _be(buf, i + 1, 4)
    else:
        return -1, 0
    if off + ln > n:
        return -1, 0
    return off, ln


@njit(cache=True, nogil=True)
def utf8_chars(buf, off, ln):  # pragma: no cover - compiled
    """Characters of the strict UTF-8 text buf[off:off+ln] (as Python decodes it: no
    overlong forms, no surrogates, at most U+10FFFF), or -1 when it is not valid UTF-8."""
    i, end, chars = off, off + ln, 0
    while i < end:
        b = buf[i]
        if b < 0x80:
            i += 1
        else:
            if 0xC2 <= b <= 0xDF:
                w, lo, hi = 2, 0x80, 0xBF
            elif 0xE0 <= b <= 0xEF:
                w = 3
                lo = 0xA0 if b == 0xE0 else 0x80
                hi = 0x9F if b == 0xED else 0xBF
            elif 0xF0 <= b <= 0xF4:
                w = 4
                lo = 0x90 if b == 0xF0 else 0x80
                hi = 0x8F if b == 0xF4 else 0xBF
            else:
                return -1
            if i + w > end:
                return -1
            c = buf[i + 1]
            if c < lo or c > hi:
                return -1
            for j in range(i + 2, i + w):
                if buf[j] & 0xC0 != 0x80:
                    return -1
            i += w
        chars += 1
    return chars


@njit(cache=True, nogil=True)
def _same(buf, off, ln, name, name_len):  # pragma: no cover - compiled
    if ln != name_len:
        return False
    for j in range(ln):  # noqa: SIM110 - a loop numba compiles without a generator
        if buf[off + j] != name[j]:
            return False
    return True


@njit(cache=True, nogil=True)
def _array(buf, i, n, spec, lim, out, k):  # pragma: no cover - compiled
    """An ndarray ext (dualsys.bus.codec) at buf[i], checked against its field spec; writes
    data offset, byte length, item size and shape into out[k:]; the next position or -1."""
    b = buf[i]
    if b == 0xC7 and i + 3 <= n:
        ln, h = buf[i + 1], i + 2
    elif b == 0xC8 and i + 4 <= n:
        ln, h = _be(buf, i + 1, 2), i + 3
    elif b == 0xC9 and i + 6 <= n:
        ln, h = _be(buf, i + 1, 4), i + 5
    else:
        return -1  # fixext forms: tiny arrays, left to the codec
    if buf[h] != ND_EXT or ln > lim[L_EXT]:
        return -1
    d = h + 1  # the ext's data: dtype length, dtype, ndim, shape, items
    end = d + ln
    if end > n or ln < 5 or buf[d] != 3:
        return -1
    # "<f4" or "<f8": the float forms compiled code checks for finiteness
    if buf[d + 1] != 0x3C or buf[d + 2] != 0x66:
        return -1
    c = buf[d + 3]
    item = 4 if c == 0x34 else (8 if c == 0x38 else 0)
    if item == 0 or item > spec[P_ITEMSIZE]:
        return -1
    ndim = buf[d + 4]
    if ndim != spec[P_NDIM] or ndim > MAX_NDIM:
        return -1
    off = d + 5 + 4 * ndim
    if off > end:
        return -1
    count = 1
    for a in range(ndim):
        p = d + 5 + 4 * a
        s = buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16) | (buf[p + 3] << 24)
        want = spec[P_SHAPE + a]
        if want != -1 and want != s:
            return -1
        out[k + O_SHAPE + a] = s
        count *= s
    if end - off != count * item:
        return -1
    if spec[P_FINITE]:
        if item == 4:
            x4 = buf[off:end].view(np.float32)
            for j in range(count):
                if not np.isfinite(x4[j]):
                    return -1
        else:
            x8 = buf[off:end].view(np.float64)
            for j in range(count):
                if not np.isfinite(x8[j]):
                    return -1
    out[k + O_VAL] = off
    out[k + O_LEN] = end - off
    out[k + O_ITEM] = item
    return end


@njit(cache=True, nogil=True)
def parse(buf, n, tname, names, name_lens, spec, lim, rule, out, fout):  # pragma: no cover
    """Check the message buf[:n] against a plan (see `Plan`); OK with the header and fields
    in out (H_*, FIELD0...) and float fields in fout, or FALLBACK (let the codec decide).
    Allocation-free."""
    if n > lim[L_BYTES] or n < 2 or buf[0] != 0x97:
        return FALLBACK
    off, ln = _str_head(buf, 1, n)
    if off < 0 or not _same(buf, off, ln, tname, tname.shape[0]):
        return FALLBACK
    i = off + ln
    i = _read_int(buf, i, n, out, H_VERSION)
    if i < 0 or out[H_VERSION] != SCHEMA_VERSION:
        return FALLBACK
    for h in range(3):  # seq, mono, wall: non-negative int64
        i = _read_int(buf, i, n, out, h)
        if i < 0 or out[h] < 0:
            return FALLBACK
    off, ln = _str_head(buf, i, n)
    if off < 0 or ln > lim[L_STR]:
        return FALLBACK
    chars = utf8_chars(buf, off, ln)
    if chars < 0 or chars > MAX_SOURCE_CHARS:
        return FALLBACK
    out[H_SRC_OFF], out[H_SRC_LEN] = off, ln
    i = off + ln
    if i >= n:
        return FALLBACK
    b = buf[i]
    nf = names.shape[0]
    if 0x80 <= b <= 0x8F:
        entries, i = b & 0x0F, i + 1
    elif b == 0xDE and i + 3 <= n:
        entries, i = _be(buf, i + 1, 2), i + 3
    else:
        return FALLBACK
    if entries != nf or entries > lim[L_MAP]:
        return FALLBACK
    seen = 0  # bit per field: each exactly once
    for _ in range(entries):
        off, ln = _str_head(buf, i, n)
        if off < 0:
            return FALLBACK
        f = -1
        for j in range(nf):
            if _same(buf, off, ln, names[j], name_lens[j]):
                f = j
                break
        if f < 0 or (seen >> f) & 1:
            return FALLBACK
        seen |= 1 << f
        i = off + ln
        if i >= n:
            return FALLBACK
        k = FIELD0 + f * OUT_WORDS
        kind = spec[f, P_KIND]
        b = buf[i]
        if kind == K_INT:
            if b == 0xC2 or b == 0xC3:
                return FALLBACK  # a bool is no integer
            i = _read_int(buf, i, n, out, k)
            if i < 0 or out[k] < spec[f, P_LO] or out[k] > spec[f, P_HI]:
                return FALLBACK
        elif kind == K_STR:
            off, ln = _str_head(buf, i, n)
            if off < 0 or ln > lim[L_STR]:
                return FALLBACK
            chars = utf8_chars(buf, off, ln)
            if chars < 0 or chars > spec[f, P_MAXLEN]:
                return FALLBACK
            out[k + O_VAL], out[k + O_LEN] = off, ln
            i = off + ln
        elif kind == K_BOOL:
            if b != 0xC2 and b != 0xC3:
                return FALLBACK
            out[k + O_VAL] = b == 0xC3
            i += 1
        elif kind == K_FLOAT:
            # the big-endian bits into a scratch word, read back as the float
            bits = out[H_SCRATCH : H_SCRATCH + 1]
            if b == 0xCB and i + 9 <= n:
                bits[0] = _be(buf, i + 1, 8)
                x = bits.view(np.float64)[0]
                i += 9
            elif b == 0xCA and i + 5 <= n:
                bits[0] = _be(buf, i + 1, 4)
                x = np.float64(bits.view(np.float32)[0])  # the low word (little-endian)
                i += 5
            else:
                return FALLBACK
            if spec[f, P_FINITE] and not np.isfinite(x):
                return FALLBACK
            fout[f] = x
        elif kind == K_ARRAY:
            i = _array(buf, i, n, spec[f], lim, out, k)
            if i < 0:
                return FALLBACK
        else:
            return FALLBACK
    if i != n:
        return FALLBACK
    if rule[0] == RULE_CHUNK:  # ActionChunk.invalid
        n_act = out[FIELD0 + rule[1] * OUT_WORDS + O_SHAPE]
        t0 = out[FIELD0 + rule[2] * OUT_WORDS]
        dt = out[FIELD0 + rule[3] * OUT_WORDS]
        if out[FIELD0 + rule[4] * OUT_WORDS] > n_act:
            return FALLBACK
        # (n_act - 1) * dt fits int64: n_act < 2**32 and dt <= 1e9 (the field's range)
        if n_act > 0 and t0 > INT64_MAX - (n_act - 1) * dt:
            return FALLBACK
    return OK


@njit(cache=True, nogil=True)
def commit(buf, out, fout, meta, fmeta, dst, src, fidx):  # pragma: no cover - compiled
    """Store what `parse` found in buf: header and fields into meta and fmeta, the source's
    bytes into src, the array field fidx (-1: none) into dst (float32, flat). FALLBACK, with
    nothing stored, when that array does not fit float32. Allocation-free."""
    if fidx >= 0:
        k = FIELD0 + fidx * OUT_WORDS
        off, count = out[k + O_VAL], out[k + O_LEN] // out[k + O_ITEM]
        if out[k + O_ITEM] == 4:
            x4 = buf[off : off + 4 * count].view(np.float32)
            for j in range(count):
                dst[j] = x4[j]
        else:
            x8 = buf[off : off + 8 * count].view(np.float64)
            for j in range(count):  # checked before anything is copied: meta stays whole
                if abs(x8[j]) > F32_MAX:
                    return FALLBACK
            for j in range(count):
                dst[j] = np.float32(x8[j])
    meta[:] = out
    fmeta[:] = fout
    off = out[H_SRC_OFF]
    for j in range(out[H_SRC_LEN]):
        src[j] = buf[off + j]
    return OK


@njit(cache=True, nogil=True)
def same_source(buf, out, meta, src):  # pragma: no cover - compiled
    """Whether a message is stored (meta, src) and the one `parse` just read from buf comes
    from the same source."""
    if meta[H_VERSION] == 0:
        return False
    return _same(buf, out[H_SRC_OFF], out[H_SRC_LEN], src, meta[H_SRC_LEN])


@njit(cache=True, nogil=True)
def parse_into(buf, n, tname, names, name_lens, spec, lim, rule, out, fout, meta, fmeta, dst,
               src, fidx):  # fmt: skip  # pragma: no cover - compiled
    """`parse`, then `commit` when it accepts: OK, or FALLBACK with the message stored
    before kept whole. Allocation-free."""
    if parse(buf, n, tname, names, name_lens, spec, lim, rule, out, fout) != OK:
        return FALLBACK
    return commit(buf, out, fout, meta, fmeta, dst, src, fidx)


class Plan:
    """One message type as `parse` checks it: type name, field names, per-field spec and the
    receiver's limits, as arrays. `shapes`: field -> exact shape (-1: any), as a Subscriber's."""

    def __init__(
        self,
        cls: type[Message],
        shapes: dict[str, tuple[int, ...]] | None = None,
        limits: Limits = DEFAULT,
    ) -> None:
        shapes = shapes or {}
        self.cls = cls
        self.fields = list(cls.FIELDS)
        self.tname = np.frombuffer(cls.TYPE.encode(), np.uint8).copy()
        raw = [f.encode() for f in self.fields]
        self.names = np.zeros((len(raw), max(map(len, raw))), np.uint8)
        for j, r in enumerate(raw):
            self.names[j, : len(r)] = np.frombuffer(r, np.uint8)
        self.name_lens = np.array([len(r) for r in raw], np.int64)
        self.spec = np.zeros((len(raw), PLAN_COLS), np.int64)
        for j, name in enumerate(self.fields):
            self.spec[j] = _spec_row(cls.FIELDS[name], shapes.get(name))
        self.lim = np.array(
            [limits.max_bytes, limits.max_str_len, limits.max_map_len, limits.max_ext_len],
            np.int64,
        )
        self.rule = np.zeros(5, np.int64)
        if cls in _RULES:
            self.rule[0] = _RULES[cls]
            self.rule[1:] = [self.fields.index(f) for f in _RULE_FIELDS[_RULES[cls]]]
        self.out = np.zeros(FIELD0 + OUT_WORDS * len(raw), np.int64)
        self.fout = np.zeros(len(raw), np.float64)

    @property
    def args(self) -> tuple:
        """The plan's arrays in `parse`'s order (after buf and n)."""
        p = (self.tname, self.names, self.name_lens, self.spec, self.lim, self.rule)
        return (*p, self.out, self.fout)


def _spec_row(f: Field, shape: tuple[int, ...] | None) -> np.ndarray:
    row = np.zeros(PLAN_COLS, np.int64)
    kind = _KINDS.get(f.kind, K_OTHER)
    if kind == K_ARRAY and f.dtypes != "f":
        kind = K_OTHER  # integer arrays: left to the codec
    row[P_KIND], row[P_LO], row[P_HI] = kind, f.lo, f.hi
    row[P_MAXLEN], row[P_ITEMSIZE], row[P_NDIM] = f.max_len, f.itemsize, f.ndim
    row[P_FINITE] = f.finite
    row[P_SHAPE : P_SHAPE + MAX_NDIM] = -1
    if shape is not None:
        if len(shape) != f.ndim:
            raise ValueError(f"shape {shape} has rank {len(shape)}, field has {f.ndim}")
        row[P_SHAPE : P_SHAPE + len(shape)] = shape
    return row


class MessageView:
    """The newest valid message of one type, held in preallocated arrays: no Python objects.

    `take(buf, n)` checks the raw message (compiled `parse_into`) and, when `parse` accepts
    it, keeps its header and scalar fields in `meta` and copies one float array field
    (`array_field`, whose shape the receiver pins) into `array` (float32: a message whose
    array does not fit float32 is not stored). It answers False
    when `parse` leaves the message to the codec; `fill(msg)` then stores a message the codec
    accepted. Used by `dualsys.bus.transport.Subscriber.take`; safe in the 200 Hz thread."""

    def __init__(
        self,
        cls: type[Message],
        shapes: dict[str, tuple[int, ...]] | None = None,
        limits: Limits = DEFAULT,
        array_field: str | None = None,
    ) -> None:
        if cls.invalid is not Message.invalid and cls not in _RULES:
            raise ValueError(f"{cls.TYPE} has cross-field rules: decode it with the codec")
        self.plan = p = Plan(cls, shapes, limits)
        self.cls = cls
        self.meta = np.zeros_like(p.out)
        self.fmeta = np.zeros_like(p.fout)
        self._col = {name: FIELD0 + j * OUT_WORDS for j, name in enumerate(p.fields)}
        self.fidx = -1
        shape: tuple[int, ...] = (0,)
        if array_field is not None:
            shape = tuple((shapes or {}).get(array_field, ()))
            if cls.FIELDS[array_field].kind != "array" or not shape or min(shape) < 0:
                raise ValueError(f"{cls.TYPE}.{array_field}: needs an array field of fixed shape")
            self.fidx = p.fields.index(array_field)
        self.array = np.zeros(shape, np.float32)
        self.src = np.zeros(4 * MAX_SOURCE_CHARS, np.uint8)  # the source's UTF-8 bytes
        self.count = 0  # messages stored
        # load (or compile) the check now for both kinds of buffer a receiver passes (bytes
        # received are read-only, a slot reader's buffer is writable), not at the first message
        for buf in (np.zeros(1, np.uint8), np.frombuffer(b"\0", np.uint8)):
            parse_into(buf, 0, *self.plan.args, *self.args)

    @property
    def args(self) -> tuple:
        """The view's arrays in `commit`'s order: meta, fmeta, the flat array, src, fidx."""
        return self.meta, self.fmeta, self.array.reshape(-1), self.src, self.fidx

    def take(self, buf: np.ndarray, n: int) -> bool:
        """Check buf[:n] and keep it when `parse` accepts it (200 Hz thread: one compiled
        call); False leaves the message to the codec and keeps the last one."""
        ok = parse_into(buf, n, *self.plan.args, *self.args) == OK
        self.count += ok
        return ok

    @property
    def source(self) -> str:
        """Header source of the message stored."""
        return self.src[: self.meta[H_SRC_LEN]].tobytes().decode()

    def fill(self, msg: Message) -> bool:
        """Store a message the codec accepted (one `parse` left to it); False (nothing
        stored) when its array does not fit float32."""
        if self.fidx >= 0:
            a = getattr(msg, self.plan.fields[self.fidx])
            if a.size and float(np.abs(a).max()) > F32_MAX:
                return False
        h = msg.header
        self.meta[H_SEQ], self.meta[H_MONO], self.meta[H_WALL] = h.seq, h.t_mono_ns, h.t_wall_ns
        raw = h.source.encode()
        self.src[: len(raw)] = np.frombuffer(raw, np.uint8)
        self.meta[H_SRC_LEN] = len(raw)
        self.meta[H_VERSION] = h.version
        for name, k in self._col.items():
            if self.cls.FIELDS[name].kind in ("int", "bool"):
                self.meta[k] = getattr(msg, name)
        if self.fidx >= 0:
            self.array[...] = a
        self.count += 1
        return True

    def clear(self) -> None:
        """Forget the message stored (none stored: the next one goes through Python)."""
        self.meta[:] = 0
        self.fmeta[:] = 0
        self.array[...] = 0
        self.count = 0

    def int(self, name: str) -> int:
        """An integer (or bool) field of the message stored."""
        return int(self.meta[self._col[name]])

    @property
    def seq(self) -> int:
        """Header sequence number of the message stored."""
        return int(self.meta[H_SEQ])

    @property
    def t_mono_ns(self) -> int:
        """Header send time (monotonic ns) of the message stored."""
        return int(self.meta[H_MONO])


__all__ = [
    "FALLBACK",
    "OK",
    "MessageView",
    "Plan",
    "commit",
    "parse",
    "parse_into",
    "same_source",
    "utf8_chars",
]
