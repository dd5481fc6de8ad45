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

from dualsys.bus.messages import Command
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
from dualsys.system1.native import EINTR, now_ns, readable, sleep_abs
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
R_DEADLINE, R_PHASE, R_WAKE, R_END, R_MARGIN, R_LEAD, R_PREFETCH, R_PERIOD = range(8)
R_BASELINE_EVERY, R_STATS_EVERY, R_HELLO_EVERY, R_MON_TICKS, R_NPEND = range(8, 13)
R_SENT, R_CHANGED, R_MISSED = range(13, 16)
N_R = 16
# phases of a tick, where run_ticks goes on from: before the prefetch, after it (sleep to
# the margin, rehearse, spin), woken (take the inputs), inputs taken (the tick itself)
PH_TOP, PH_PREFETCHED, PH_WOKE, PH_RECEIVED = range(4)
EV_END, EV_SIGNAL, EV_INPUT, EV_LATE, EV_AFTER = range(5)
# IN (int64): where the inputs are, for the pending check: chunk and latent sockets, and the
# latent slot (dualsys.bus.latent_link.LatentIn.probe fills IN_HAS_SLOT on)
IN_CHUNK, IN_LATENT, IN_STATE = range(3)
IN_HAS_SLOT, IN_SEQ_ADDR, IN_SEEN, IN_NEXT_OPEN, IN_SLOT_LIVE = range(3, 8)
N_IN = 8
_SLOT_RETIRED_OFF = 16  # the slot's retired word, after its seq word (dualsys.bus.shm)
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
def inputs_pending(V, IN, io):  # pragma: no cover - compiled
    """Whether Python must take inputs: a chunk or a latent waits (socket or slot), the slot
    is to be (re)opened, or the first state waits to be decoded."""
    if readable(IN[IN_CHUNK], io):
        return True
    if IN[IN_HAS_SLOT]:
        a = IN[IN_SEQ_ADDR]
        if a != 0:
            if _load_i64(a) != IN[IN_SEEN] or _load_i64(a + _SLOT_RETIRED_OFF) != 0:
                return True
        elif now_ns(io) >= IN[IN_NEXT_OPEN]:
            return True
        if not IN[IN_SLOT_LIVE] and readable(IN[IN_LATENT], io):
            return True
    elif readable(IN[IN_LATENT], io):
        return True
    return not V[V_HAVE_STATE] and readable(IN[IN_STATE], io)


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
def run_ticks(R, V, K, KS, E, SF, ST, IN, PD, io):  # pragma: no cover - compiled
    """Run ticks from R[R_DEADLINE], phase R[R_PHASE], until Python is needed; returns the
    event (EV_*). SF: the state frame (buf, meta, max_msgs); ST: the stage breakdown (stamps,
    counts, maxs); PD: the pending table (R[R_NPEND] rows). Allocation-free."""
    period, margin, lead = R[R_PERIOD], R[R_MARGIN], R[R_LEAD]
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
                if inputs_pending(V, IN, io):
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
            if inputs_pending(V, IN, io):
                R[R_PHASE] = PH_RECEIVED
                return EV_INPUT
            if V[V_TICK] == 0:  # as ControlLoop.receive: no last command yet
                V[V_LAST_T] = deadline - period
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
