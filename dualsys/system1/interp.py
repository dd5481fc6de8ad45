"""The per-tick command kernel (numba): chunk upsampling, seam blending, limits, NaN guard.

One call of `step` computes one 200 Hz command for all joints, in place, without allocating:

1. target: the current action chunk upsampled with a cubic Hermite spline (Catmull-Rom
   tangents) at the control time, for the controlled joints; the default pose for the others.
   In hold mode the target is the held pose, in default mode the default pose.
2. seam blend: when the target source changes (new chunk, safe-state switch) `begin_blend`
   stores the offset in position and velocity between the last command and the new target;
   `step` adds a cubic Hermite correction that decays it to zero over the blend time, so the
   commanded position and velocity stay continuous.
3. NaN/inf guard: a non-finite target holds the last safe command (counted in I[TRIPS]).
4. limits: per-joint velocity (times a speed scale), acceleration and position limits, with
   braking so that the position limits are approached at no more than the acceleration limit.

State lives in preallocated arrays (see `KernelState`); the index constants name their rows.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# I (int64): integer state
MODE, N_ACT, T0, DT, BLEND_T0, BLEND_T, TICK_NS, TRIPS = range(8)
N_I = 8
# F (float64): float parameters
SPEED = 0
N_F = 2
# L (float64, 5 x n): limits
L_MIN, L_MAX, L_VEL, L_ACC, L_DEFAULT = range(5)
# S (float64, 7 x n): state
S_Q, S_V, S_HOLD, S_BD, S_BV, S_P, S_PV = range(7)
N_S = 7
# modes
MODE_CHUNK, MODE_HOLD, MODE_DEFAULT = 0, 1, 2
#: seam blend duration (position and velocity offsets decay to zero over it)
BLEND_NS = 80_000_000


@njit(cache=True, nogil=True)
def eval_target(t_ns, I, actions, ctrl, L, S):  # noqa: N803, E741
    """Write the target position/velocity at t_ns into S[S_P], S[S_PV] (no blend, no limits)."""
    n = S.shape[1]
    mode = I[MODE]
    for i in range(n):
        S[S_PV, i] = 0.0
        if mode == MODE_HOLD:
            S[S_P, i] = S[S_HOLD, i]
        else:
            S[S_P, i] = L[L_DEFAULT, i]
    if mode != MODE_CHUNK:
        return
    na = I[N_ACT]
    if na <= 0:
        for c in range(ctrl.shape[0]):
            S[S_P, ctrl[c]] = S[S_HOLD, ctrl[c]]
        return
    dt_s = I[DT] * 1e-9
    s = (t_ns - I[T0]) / I[DT]
    if na == 1 or s <= 0.0 or s >= na - 1:
        k = 0 if s <= 0.0 or na == 1 else na - 1
        for c in range(ctrl.shape[0]):
            S[S_P, ctrl[c]] = actions[k, c]
        return
    k = int(s)
    u = s - k
    u2 = u * u
    u3 = u2 * u
    h00 = 2 * u3 - 3 * u2 + 1
    h10 = u3 - 2 * u2 + u
    h01 = -2 * u3 + 3 * u2
    h11 = u3 - u2
    d00 = 6 * u2 - 6 * u
    d10 = 3 * u2 - 4 * u + 1
    d01 = -6 * u2 + 6 * u
    d11 = 3 * u2 - 2 * u
    for c in range(ctrl.shape[0]):
        p0 = actions[k, c]
        p1 = actions[k + 1, c]
        m0 = 0.5 * (p1 - actions[k - 1, c]) if k > 0 else p1 - p0
        m1 = 0.5 * (actions[k + 2, c] - p0) if k + 2 < na else p1 - p0
        j = ctrl[c]
        S[S_P, j] = h00 * p0 + h10 * m0 + h01 * p1 + h11 * m1
        S[S_PV, j] = (d00 * p0 + d10 * m0 + d01 * p1 + d11 * m1) / dt_s


@njit(cache=True, nogil=True)
def begin_blend(t_ns, blend_ns, I, actions, ctrl, L, S):  # noqa: N803, E741
    """Start a seam blend at t_ns (the time of the last command) toward the current target."""
    eval_target(t_ns, I, actions, ctrl, L, S)
    n = S.shape[1]
    ok = True
    for i in range(n):
        d = S[S_Q, i] - S[S_P, i]
        dv = S[S_V, i] - S[S_PV, i]
        if not (math.isfinite(d) and math.isfinite(dv)):
            ok = False
        S[S_BD, i] = d
        S[S_BV, i] = dv
    if not ok:
        for i in range(n):
            S[S_BD, i] = 0.0
            S[S_BV, i] = 0.0
    I[BLEND_T0] = t_ns
    I[BLEND_T] = blend_ns


@njit(cache=True, nogil=True)
def _brake(d, a, dt):
    """Largest speed from which a discrete-time stop within distance d is possible."""
    if d <= 0.0:
        return 0.0
    return a * (-1.5 * dt + math.sqrt(2.25 * dt * dt + 2.0 * d / a))


@njit(cache=True, nogil=True)
def step(t_ns, I, F, actions, ctrl, L, S):  # noqa: N803, E741
    """Compute the command for time t_ns into S[S_Q] (position) and S[S_V] (velocity).

    Returns 1 when the NaN/inf guard tripped this tick (target replaced by the last safe
    command), else 0. Allocation-free; safe in the 200 Hz thread.
    """
    n = S.shape[1]
    eval_target(t_ns, I, actions, ctrl, L, S)
    bt = t_ns - I[BLEND_T0]
    if I[BLEND_T] > 0 and 0 <= bt < I[BLEND_T]:
        T = I[BLEND_T] * 1e-9
        x = bt / I[BLEND_T]
        x2 = x * x
        x3 = x2 * x
        h00 = 2 * x3 - 3 * x2 + 1
        h10 = (x3 - 2 * x2 + x) * T
        d00 = (6 * x2 - 6 * x) / T
        d10 = 3 * x2 - 4 * x + 1
        for i in range(n):
            S[S_P, i] += h00 * S[S_BD, i] + h10 * S[S_BV, i]
            S[S_PV, i] += d00 * S[S_BD, i] + d10 * S[S_BV, i]
    tripped = 0
    for i in range(n):
        if not (math.isfinite(S[S_P, i]) and math.isfinite(S[S_PV, i])):
            tripped = 1
            break
    if tripped:
        I[TRIPS] += 1
        for i in range(n):
            S[S_P, i] = S[S_Q, i]
            S[S_PV, i] = 0.0
    dt = I[TICK_NS] * 1e-9
    speed = F[SPEED]
    for i in range(n):
        qp = S[S_Q, i]
        vp = S[S_V, i]
        a = L[L_ACC, i]
        e = S[S_P, i] - qp
        v = e / dt
        vb = abs(S[S_PV, i]) + _brake(abs(e), a, dt)
        v = min(max(v, -vb), vb)
        v = min(v, _brake(L[L_MAX, i] - qp, a, dt))
        v = max(v, -_brake(qp - L[L_MIN, i], a, dt))
        v = min(max(v, vp - a * dt), vp + a * dt)
        vlim = max(L[L_VEL, i] * speed, abs(vp) - a * dt)
        vlim = min(vlim, L[L_VEL, i])
        v = min(max(v, -vlim), vlim)
        q = qp + v * dt
        if q > L[L_MAX, i]:
            q = L[L_MAX, i]
            v = (q - qp) / dt
        elif q < L[L_MIN, i]:
            q = L[L_MIN, i]
            v = (q - qp) / dt
        S[S_Q, i] = q
        S[S_V, i] = v
    return tripped


@njit(cache=True, nogil=True)
def hand_over(src, t0_ns, dt_ns, last_t_ns, follow, I, F, actions, ctrl, L, S):  # noqa: N803, E741
    """Hand a new chunk src (n_act x n_controlled, action i due at t0_ns + i * dt_ns) over to
    the kernel; with follow, switch to chunk mode at full speed and blend the seam from the
    last command (sent for last_t_ns) over BLEND_NS. Allocation-free."""
    n = src.shape[0]
    for a in range(n):
        for c in range(src.shape[1]):
            actions[a, c] = src[a, c]
    I[N_ACT] = n
    I[T0] = t0_ns
    I[DT] = dt_ns
    if follow:
        I[MODE] = MODE_CHUNK
        F[SPEED] = 1.0
        begin_blend(last_t_ns, BLEND_NS, I, actions, ctrl, L, S)


class KernelState:
    """Preallocated arrays of the kernel for one robot (built once, in `configure`)."""

    def __init__(
        self,
        limits: dict[str, np.ndarray],
        ctrl: np.ndarray,
        horizon: int,
        tick_ns: int,
    ) -> None:
        n = len(limits["default"])
        self.n, self.nc, self.horizon = n, len(ctrl), horizon
        self.I = np.zeros(N_I, np.int64)
        self.F = np.zeros(N_F, np.float64)
        self.L = np.zeros((5, n), np.float64)
        self.S = np.zeros((N_S, n), np.float64)
        self.actions = np.zeros((horizon, len(ctrl)), np.float64)
        self.ctrl = np.ascontiguousarray(ctrl, dtype=np.int64)
        for row, key in ((L_MIN, "min"), (L_MAX, "max"), (L_VEL, "velocity")):
            self.L[row] = limits[key]
        self.L[L_ACC] = limits["accel"]
        self.L[L_DEFAULT] = limits["default"]
        self.I[TICK_NS] = tick_ns
        self.F[SPEED] = 1.0
        self.reset(self.L[L_DEFAULT])

    def reset(self, q: np.ndarray) -> None:
        """Hold pose q (clipped into the limits), zero velocity, no chunk, no blend."""
        np.clip(q, self.L[L_MIN], self.L[L_MAX], out=self.S[S_Q])
        self.S[S_V] = 0.0
        self.S[S_HOLD] = self.S[S_Q]
        self.S[S_BD] = 0.0
        self.S[S_BV] = 0.0
        self.I[MODE] = MODE_HOLD
        self.I[N_ACT] = 0
        self.I[BLEND_T] = 0

    def step(self, t_ns: int) -> int:
        """One command at t_ns (see module `step`). Safe in the 200 Hz thread."""
        return step(t_ns, self.I, self.F, self.actions, self.ctrl, self.L, self.S)

    def blend(self, t_ns: int, blend_ns: int) -> None:
        """Start a seam blend from the last command (at t_ns) to the current target."""
        begin_blend(t_ns, blend_ns, self.I, self.actions, self.ctrl, self.L, self.S)

    def take_chunk(self, actions: np.ndarray, t0_ns: int, dt_ns: int, last_t_ns: int,
                   follow: bool) -> None:  # fmt: skip
        """Hand a new chunk (n_act x n_controlled, action i due at t0_ns + i * dt_ns) over to
        the kernel: the one hand-over of the control loop and of the offline evaluator.

        follow: the kernel follows chunks from now on (chunk mode, full speed) and the seam
        from the last command (sent for last_t_ns) to the new chunk is blended over BLEND_NS;
        False: the chunk is only stored (the caller holds; switching to chunk mode later
        blends then). Allocation-free; safe in the 200 Hz thread.
        """
        hand_over(np.ascontiguousarray(actions), t0_ns, dt_ns, last_t_ns, follow, self.I,
                  self.F, self.actions, self.ctrl, self.L, self.S)  # fmt: skip

    @property
    def q(self) -> np.ndarray:
        return self.S[S_Q]

    @property
    def v(self) -> np.ndarray:
        return self.S[S_V]

    @property
    def trips(self) -> int:
        return int(self.I[TRIPS])
