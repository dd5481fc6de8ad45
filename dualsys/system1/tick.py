"""The control tick in compiled code, and the loop that runs steady-state ticks without Python.

`tick_body` is the tick after its inputs are taken: the safe-state decision from the latent
age (`decide`), the switch with its seam blend (`set_safe`), the kernel step and the command
send. `ControlLoop.update` (dualsys.system1.control) calls it after its Python `receive`, and
`run_ticks` calls it for every tick of the live loop, so there is one tick, not two.

`run_ticks` runs the live loop (dualsys.system1.control_proc.run_loop) for as long as no
Python is needed: it sleeps on absolute deadlines, spins to each deadline, polls the sockets
and sends through libzmq (dualsys.system1.native), records the stage stamps and keeps each
tick's lateness, work and latent age in a pending table. It allocates nothing. It returns an
event code (EV_*) when Python is needed, with the loop's registers R telling where it stopped,
and is called again to go on from there:

- EV_INPUT: a chunk or a latent waits, or the first state must be decoded (before the prefetch
  or in the tick): Python runs `ControlLoop.receive` for the deadline and re-enters;
- EV_LATE: the loop woke after the next deadline (skipped periods, miss attribution);
- EV_AFTER: a tick was sent that has Python bookkeeping: a Stats or Hello part is due, a miss
  baseline is due, the tick missed, the safe state changed, or the pending table is full;
- EV_SIGNAL: a sleep was interrupted by a signal (its Python handler runs on return);
- EV_END: the end time is reached.
Every return also hands over the pending table: Python records it into the monitor's HDR
histograms (after a send, never before one).
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from dualsys.bus import shm
from dualsys.bus.fastcodec import FIELD0, H_MONO, H_SEQ, OK, OUT_WORDS, commit, parse, same_source
from dualsys.bus.messages import ActionChunk, Command
from dualsys.system1.interp import (
    BLEND_NS,
    MODE,
    MODE_CHUNK,
    MODE_DEFAULT,
    MODE_HOLD,
    S_HOLD,
    S_Q,
    S_V,
    SPEED,
    begin_blend,
    hand_over,
    step,
)
from dualsys.system1.monitor import (
    T_CHUNK,
    T_DEADLINE,
    T_DECIDE,
    T_DONE,
    T_KERNEL,
    T_LATENT,
    T_SENT,
    T_START,
    T_STATE,
    T_WAKE,
    record_stages,
)
from dualsys.system1.native import EINTR, copy_from, now_ns, readable, recv_into, sleep_abs
from dualsys.system1.wire import M_SEQ, MODE_INDEX, poll_latest, send_command, write_q

#: safe states, and why one was chosen (V[V_WHY])
RUN, HOLD, DEFAULT = 0, 1, 2
SAFE_NAMES = ("run", "hold", "default_pose")
WHY = ("ok", "no latent", "latent stale", "latent dead", "no chunk", "deadline misses")
W_OK, W_NO_LATENT, W_STALE, W_DEAD, W_NO_CHUNK, W_MISSES = range(6)
#: speed scale (fraction of the velocity limits) of the return to the default pose
DEFAULT_POSE_SPEED = 0.25
RUN_FRAME, HOLD_FRAME = MODE_INDEX["run"], MODE_INDEX["hold"]
MISS_HOLD, WARMUP = Command.FLAG_MISS_HOLD, Command.FLAG_WARMUP

# V (int64): the loop's variables, read by both the Python and the compiled paths
V_HAVE_STATE, V_HAVE_CHUNK, V_CHUNK_END, V_LATENT_T, V_SAFE, V_MODE = range(6)
V_MISS_HOLD_UNTIL, V_LAST_T, V_TICK, V_LATENT_SEQ, V_CHUNK_SEQ, V_WARMING = range(6, 12)
V_LATENT_AGE, V_WHY, V_STALE, V_DEAD, V_PERIOD = range(12, 17)
N_V = 17
# R (int64): the live loop's registers (set by run_loop, advanced by run_ticks)
R_DEADLINE, R_PHASE, R_WAKE, R_END, R_MARGIN, R_LEAD, R_PREFETCH = range(7)
R_BASELINE_EVERY, R_STATS_EVERY, R_HELLO_EVERY, R_MON_TICKS, R_NPEND = range(7, 12)
R_SENT, R_CHANGED, R_MISSED = range(12, 15)
N_R = 15
# phases of a tick, where run_ticks goes on from: before the prefetch, after it (sleep to
# the margin, rehearse, spin), woken (take the inputs), inputs taken (the tick itself)
PH_TOP, PH_PREFETCHED, PH_WOKE, PH_RECEIVED = range(4)
EV_END, EV_SIGNAL, EV_INPUT, EV_LATE, EV_AFTER = range(5)
# IN (int64): where the inputs are, for the pending check: chunk and latent sockets, and the
# latent slot (dualsys.bus.latent_link.LatentIn.probe fills IN_HAS_SLOT on)
IN_CHUNK, IN_LATENT, IN_STATE = range(3)
IN_HAS_SLOT, IN_SEQ_ADDR, IN_SEEN, IN_NEXT_OPEN, IN_SLOT_LIVE = range(3, 8)
N_IN = 8
# the slot's header words relative to its seq word (IN_SEQ_ADDR), and its data
_RETIRED, _LEN = shm.OFF_RETIRED - shm.OFF_SEQ, shm.OFF_LEN - shm.OFF_SEQ
_CAP, _DATA = shm.OFF_CAP - shm.OFF_SEQ, shm.HEADER - shm.OFF_SEQ
# X (int64): what the compiled ticks took since Python last looked (ControlLoop.fold_taken):
# latents from the slot and their sequence gaps, chunks and theirs, a chunk's bytes (length)
# left in the chunk buffer for Python to decide on, and each chunk's latency from X_LAT0 on
X_LATENTS, X_LATENT_GAPS, X_CHUNKS, X_CHUNK_GAPS, X_PY_CHUNK, X_NLAT = range(6)
# latents from the ZeroMQ socket (no slot, or not live yet), their gaps, one left to Python
X_ZLATENTS, X_ZLATENT_GAPS, X_PY_LATENT = range(6, 9)
X_LAT0, N_LAT = 16, 64
N_X = X_LAT0 + N_LAT
# a chunk's meta words (dualsys.bus.fastcodec.MessageView) the hand-over reads
_CHUNK_FIELDS = list(ActionChunk.FIELDS)
_C_T0 = FIELD0 + OUT_WORDS * _CHUNK_FIELDS.index("t0_mono_ns")
_C_DT = FIELD0 + OUT_WORDS * _CHUNK_FIELDS.index("dt_ns")
_C_LATENCY = FIELD0 + OUT_WORDS * _CHUNK_FIELDS.index("latency_ns")
# pending table columns: lateness, work, wake to done (ns), latent age (ns, -1: none)
P_LATE, P_WORK, P_TOTAL, P_AGE = range(4)
PENDING = 256
#: the Stats work of `ControlLoop.stats_step` runs at these first phases of its period
STATS_PHASES = 6
HELLO_PHASE = 7


@intrinsic
def _load_i64(typingctx, addr):  # pragma: no cover - compiled
    """Atomic (monotonic) load of the int64 at an address: another process writes it."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(ptr, "monotonic", 8)

    return sig, codegen


@njit(cache=True, nogil=True)
def decide(t_ns, age, miss_hold, V):  # pragma: no cover - compiled
    """The safe state for the tick at t_ns and why (W_*): latent age (-1: none) against the
    stale and dead limits, the chunk's end, a latched miss-streak hold."""
    if age > V[V_DEAD]:
        want, why = DEFAULT, W_DEAD
    elif age > V[V_STALE] or age < 0:
        want, why = HOLD, (W_STALE if age >= 0 else W_NO_LATENT)
    elif not V[V_HAVE_CHUNK] or t_ns > V[V_CHUNK_END]:
        want, why = HOLD, W_NO_CHUNK
    else:
        want, why = RUN, W_OK
    if want == RUN and miss_hold:
        want, why = HOLD, W_MISSES
    return want, why


@njit(cache=True, nogil=True)
def set_safe(new, V, K):  # pragma: no cover - compiled
    """Switch the safe state with a seam blend from the last command."""
    I, F, actions, ctrl, L, S = K  # noqa: N806, E741
    if new == HOLD:
        S[S_HOLD, :] = S[S_Q, :]
    I[MODE] = MODE_CHUNK if new == RUN else (MODE_HOLD if new == HOLD else MODE_DEFAULT)
    F[SPEED] = DEFAULT_POSE_SPEED if new == DEFAULT else 1.0
    begin_blend(V[V_LAST_T], BLEND_NS, I, actions, ctrl, L, S)
    V[V_SAFE] = new
    V[V_MODE] = RUN_FRAME


@njit(cache=True, nogil=True)
def tick_body(t_ns, V, K, E, state_seq, st, io):  # pragma: no cover - compiled
    """The tick for t_ns once its inputs are taken: decide, (switch), kernel, send. Stamps
    T_DECIDE, T_KERNEL, T_SENT; returns True when the safe state changed (V[V_WHY] says why).
    K: the kernel's arrays (I, F, actions, ctrl, L, S); E: the command encoder's (socket
    address, bufs, lens, offs, ctr)."""
    lt = V[V_LATENT_T]
    age = t_ns - lt if lt >= 0 else -1
    if lt >= 0 and -V[V_PERIOD] < age < 0:
        # stamped after this tick's scheduled time and taken by it (it arrived between the
        # deadline and the receive): the freshest latent there is, not a missing one. Further
        # ahead (a remote clock not yet synchronised) it stays "no latent": hold.
        age = 0
    V[V_LATENT_AGE] = age  # recorded into its histogram after the send
    miss_hold = t_ns < V[V_MISS_HOLD_UNTIL]
    changed = False
    if V[V_HAVE_STATE]:
        want, why = decide(t_ns, age, miss_hold, V)
        if want != V[V_SAFE]:
            set_safe(want, V, K)
            V[V_WHY] = why
            changed = True
    st[T_DECIDE] = now_ns(io)
    I, F, actions, ctrl, L, S = K  # noqa: N806, E741
    step(t_ns, I, F, actions, ctrl, L, S)
    st[T_KERNEL] = now_ns(io)
    warming = V[V_WARMING] != 0
    flags = (MISS_HOLD if miss_hold else 0) | (WARMUP if warming else 0)
    sock, bufs, lens, offs, ctr = E
    frame = HOLD_FRAME if warming else V[V_MODE]
    send_command(sock, bufs, lens, offs, ctr, frame, S[S_Q], S[S_V], V[V_TICK], t_ns,
                 state_seq, V[V_LATENT_SEQ], V[V_CHUNK_SEQ], flags, io)  # fmt: skip
    V[V_LAST_T] = t_ns
    V[V_TICK] += 1
    st[T_SENT] = now_ns(io)
    return changed


@njit(cache=True, nogil=True)
def rehearse(t_ns, V, K, KS, E):  # pragma: no cover - compiled
    """Run the kernel for t_ns on scratch copies (KS: I, S) and write the command into its
    frame: the tick then finds code and data in the caches. Changes nothing the tick reads."""
    I, F, actions, ctrl, L, S = K  # noqa: N806, E741
    sI, sS = KS  # noqa: N806
    sI[:] = I
    sS[:, :] = S
    step(t_ns, sI, F, actions, ctrl, L, sS)
    m = HOLD_FRAME if V[V_WARMING] else V[V_MODE]
    write_q(E[1][m], E[3][m], sS[S_Q], sS[S_V])


@njit(cache=True, nogil=True)
def first_command(t_ns, V):  # pragma: no cover - compiled
    """Before the first command there is no last one: the seam blends from one period back."""
    if V[V_TICK] == 0:
        V[V_LAST_T] = t_ns - V[V_PERIOD]


@njit(cache=True, nogil=True)
def apply_latent(V, meta):  # pragma: no cover - compiled
    """Take the latent stored in a view's meta: its time and sequence number."""
    V[V_LATENT_T] = meta[H_MONO]
    V[V_LATENT_SEQ] = meta[H_SEQ]


@njit(cache=True, nogil=True)
def apply_chunk(t_ns, V, K, meta, acts):  # pragma: no cover - compiled
    """Hand the chunk stored in a view (meta, acts) over to the kernel for the tick at t_ns:
    following chunks (safe state run), blend the seam at once; else the switch to run does
    (set_safe). Returns the chunk's latency (ns): its inference plus its way here."""
    I, F, actions, ctrl, L, S = K  # noqa: N806, E741
    t0, dt = meta[_C_T0], meta[_C_DT]
    hand_over(acts, t0, dt, V[V_LAST_T], V[V_SAFE] == RUN, I, F, actions, ctrl, L, S)
    V[V_CHUNK_END] = t0 + (acts.shape[0] - 1) * dt
    V[V_HAVE_CHUNK] = 1
    V[V_CHUNK_SEQ] = meta[H_SEQ]
    return t_ns - meta[H_MONO] + meta[_C_LATENCY]


@njit(cache=True, nogil=True)
def _store(buf, n, plan, view, X, gaps):  # pragma: no cover - compiled
    """Store the message buf[:n] in view when the compiled check takes it and it comes from
    the source of the one stored (its sequence gap counted into X[gaps]); False leaves it to
    Python (another source, or anything the check leaves to the codec)."""
    tname, names, name_lens, spec, lim, rule, out, fout = plan
    meta, fmeta, dst, src, fidx = view
    if n > buf.shape[0]:
        return False
    if parse(buf, n, tname, names, name_lens, spec, lim, rule, out, fout) != OK:
        return False
    if not same_source(buf, out, meta, src):
        return False
    prev = meta[H_SEQ]
    if commit(buf, out, fout, meta, fmeta, dst, src, fidx) != OK:
        return False
    if meta[H_SEQ] > prev + 1:
        X[gaps] += meta[H_SEQ] - prev - 1
    return True


@njit(cache=True, nogil=True)
def _recv_store(sock, buf, plan, view, X, left, gaps, taken):  # pragma: no cover - compiled
    """Receive the message waiting on sock into buf and `_store` it (counted in X[taken]):
    1 taken, 0 nothing waited, -1 left to Python (its length in X[left], its bytes in buf)."""
    n = recv_into(sock, buf)
    if n < 0:
        return 0
    if not _store(buf, n, plan, view, X, gaps):
        X[left] = n
        return -1
    X[taken] += 1
    return 1


@njit(cache=True, nogil=True)
def _take_latent_slot(IN, LIN, V, X):  # pragma: no cover - compiled
    """Take the slot's new latent (a seqlock copy into the reader's buffer, `_store`); False
    when Python must decide (torn, oversized, another source, anything the check leaves to the
    codec): the slot's seen word is then not advanced, so Python's own read finds it."""
    buf, _, plan, view = LIN
    a = IN[IN_SEQ_ADDR]
    for _ in range(shm.TORN_RETRIES):
        s1 = _load_i64(a)
        if s1 & 1:
            continue
        n = _load_i64(a + _LEN)
        if n > buf.shape[0] or n > _load_i64(a + _CAP):
            return False
        copy_from(a + _DATA, buf, n)
        if _load_i64(a) != s1:
            continue
        if not _store(buf, n, plan, view, X, X_LATENT_GAPS):
            return False
        IN[IN_SEEN] = s1
        X[X_LATENTS] += 1
        apply_latent(V, view[0])
        return True
    return False


@njit(cache=True, nogil=True)
def take_inputs(t_ns, V, K, IN, LIN, CIN, X, io):  # pragma: no cover - compiled
    """Take, for the tick at t_ns, what waits: a chunk from its socket, a latent from the slot
    or the latent socket (the compiled check, the hand-over). True when everything waiting was
    taken (or nothing waits); False when Python must (`ControlLoop.receive`): the first state
    to decode, the slot to (re)open or a latent in it before it is live, a message the check
    leaves to the codec or from another source (its bytes left in the buffer: X[X_PY_*]).
    Allocation-free."""
    first_command(t_ns, V)
    if X[X_PY_CHUNK] != 0 or X[X_PY_LATENT] != 0:
        return False
    if not V[V_HAVE_STATE] and readable(IN[IN_STATE], io):
        return False
    cbuf, cplan, cview, acts = CIN
    r = _recv_store(IN[IN_CHUNK], cbuf, cplan, cview, X, X_PY_CHUNK, X_CHUNK_GAPS, X_CHUNKS)
    if r < 0:
        return False
    if r > 0:
        lat = apply_chunk(t_ns, V, K, cview[0], acts)
        i = X[X_NLAT]
        if i < N_LAT:
            X[X_LAT0 + i] = lat
            X[X_NLAT] = i + 1
    if IN[IN_HAS_SLOT]:
        if not _slot_taken(IN, LIN, V, X, io):
            return False
        if IN[IN_SLOT_LIVE]:  # the slot has delivered: ZeroMQ carries the same latents later
            return True
    _, zbuf, lplan, lview = LIN
    r = _recv_store(IN[IN_LATENT], zbuf, lplan, lview, X, X_PY_LATENT, X_ZLATENT_GAPS, X_ZLATENTS)
    if r > 0:
        apply_latent(V, lview[0])
    return r >= 0


@njit(cache=True, nogil=True)
def _slot_taken(IN, LIN, V, X, io):  # pragma: no cover - compiled
    """Whether the latent slot needs nothing from Python: its new latent (if any) was taken
    here; False when the slot is to be (re)opened, is not live yet, or its latent is left to
    Python."""
    a = IN[IN_SEQ_ADDR]
    if a == 0:
        return now_ns(io) < IN[IN_NEXT_OPEN]
    if _load_i64(a + _RETIRED) != 0:
        return False
    if _load_i64(a) == IN[IN_SEEN]:
        return True
    return IN[IN_SLOT_LIVE] != 0 and _take_latent_slot(IN, LIN, V, X)


@njit(cache=True, nogil=True)
def _sleep_spin(deadline, margin, io):  # pragma: no cover - compiled
    """Sleep to margin before the deadline, spin to it; the wake time, or -1 on a signal."""
    if deadline - margin > now_ns(io) and sleep_abs(deadline - margin, io) == EINTR:
        return -1
    now = now_ns(io)
    while now < deadline:
        now = now_ns(io)
    return now


@njit(cache=True, nogil=True)
def run_ticks(R, V, K, KS, E, SF, ST, IN, PD, LIN, CIN, X, io):  # pragma: no cover - compiled
    """Run ticks from R[R_DEADLINE], phase R[R_PHASE], until Python is needed; returns the
    event (EV_*). SF: the state frame (buf, meta, max_msgs); ST: the stage breakdown (stamps,
    counts, maxs); PD: the pending table (R[R_NPEND] rows); LIN: the latent's buffers (slot,
    socket), check plan and view; CIN: the chunk's buffer, plan, view and actions
    (`take_inputs`); X: what was taken (X_*).
    Allocation-free."""
    period, margin, lead = V[V_PERIOD], R[R_MARGIN], R[R_LEAD]
    sbuf, smeta, max_msgs = SF
    st, counts, maxs = ST
    while True:
        deadline = R[R_DEADLINE]
        ph = R[R_PHASE]
        if ph == PH_TOP:
            if deadline >= R[R_END]:
                return EV_END
            if R[R_PREFETCH]:  # wake before the margin and take what arrived
                if sleep_abs(deadline - margin - lead, io) == EINTR:
                    return EV_SIGNAL
                if not take_inputs(deadline, V, K, IN, LIN, CIN, X, io):
                    R[R_PHASE] = PH_PREFETCHED
                    return EV_INPUT
                poll_latest(IN[IN_STATE], sbuf, max_msgs, smeta, io)
            ph = R[R_PHASE] = PH_PREFETCHED
        if ph == PH_PREFETCHED:
            if R[R_PREFETCH]:  # sleep on to the margin, rehearse, spin
                if sleep_abs(deadline - margin, io) == EINTR:
                    return EV_SIGNAL
                rehearse(deadline, V, K, KS, E)
            wake = _sleep_spin(deadline, margin, io)
            if wake < 0:
                return EV_SIGNAL
            R[R_WAKE] = wake
            ph = R[R_PHASE] = PH_WOKE
            if wake - deadline >= period:  # woke after the next deadline: skip, never catch up
                return EV_LATE
        wake = R[R_WAKE]
        if ph == PH_WOKE:
            st[T_WAKE] = wake
            st[T_DEADLINE] = deadline
            st[T_START] = now_ns(io)
            if not take_inputs(deadline, V, K, IN, LIN, CIN, X, io):
                R[R_PHASE] = PH_RECEIVED
                return EV_INPUT
            poll_latest(IN[IN_STATE], sbuf, max_msgs, smeta, io)
            st[T_STATE] = now_ns(io)
            st[T_LATENT] = st[T_STATE]  # latent and chunk: checked with the state
            st[T_CHUNK] = st[T_STATE]
        changed = tick_body(deadline, V, K, E, smeta[M_SEQ], st, io)
        sent = st[T_SENT]
        R[R_SENT] = sent
        R[R_CHANGED] = changed
        missed = sent > deadline + period
        R[R_MISSED] = missed
        R[R_PHASE] = PH_TOP
        R[R_MON_TICKS] += 1
        tick = V[V_TICK]
        every = R[R_BASELINE_EVERY]
        if (
            changed
            or missed
            or tick % R[R_STATS_EVERY] < STATS_PHASES
            or tick % R[R_HELLO_EVERY] == HELLO_PHASE
            or (every > 0 and R[R_MON_TICKS] % every == 0)
            or R[R_NPEND] == PD.shape[0]
        ):
            return EV_AFTER  # Python does this tick's bookkeeping and advances the deadline
        done = now_ns(io)
        st[T_DONE] = done
        record_stages(st, counts, maxs)
        i = R[R_NPEND]
        PD[i, P_LATE] = wake - deadline
        PD[i, P_WORK] = sent - wake
        PD[i, P_TOTAL] = done - wake
        PD[i, P_AGE] = V[V_LATENT_AGE]
        R[R_NPEND] = i + 1
        R[R_DEADLINE] = deadline + period
