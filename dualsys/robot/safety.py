"""Robot-side safety, between the bus and the driver (as real humanoid stacks do it).

- Refusal: a command with the wrong size, NaN/inf, an unknown mode, or a position further than
  `limit_tolerance` outside the joint limits is never applied (counted per reason). Positions
  inside the tolerance are clipped to the limits; velocities to the joint velocity limits.
- Jump refusal: a "run" command that moves any joint further from the previous "run" command
  than `jump_margin` x velocity limit x the time between them (at least one command period)
  allows is refused (reason "jump", counted) and the robot holds its measured pose.
- Soft start: every switch from holding to following (activation, a commanded hold or damp, a
  watchdog, velocity, jump or stale-state hold) reaches the new commands by a smooth ramp from
  the held pose (the measured pose after a damp) over `soft_start_s`: no jump on any re-entry.
- Command watchdog: while following (ramping or tracking "run" commands), no valid command for
  `command_timeout_s` -> hold the measured pose (damped PD), counted once per episode and
  reported once. Silence while the robot already holds or damps as commanded (the control
  loop's warm-up and its stop ramp end in "hold") changes nothing and is not a trip.
- Stale state: when the driver's newest measured state is older than `command_timeout_s` (a
  bridged vendor process stopped publishing) the robot holds the last measured pose and ignores
  commands (counted, reported once); once states flow again the next command re-enters by ramp.
- Velocity monitor: any |dq_i| > velocity_factor x velocity limit_i -> hold, counted, reported;
  released after `rearm_s` once all velocities are back under the limit and a new command
  arrives (then soft start again).

Until the first valid command the robot holds its measured pose (mode HOLD, not a trip).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from dualsys.config import RobotConfig
from dualsys.robot.interface import DAMP, HOLD, MODES, RUN
from dualsys.timing import warn_once

#: Internal phases.
WAIT, RAMP, FOLLOW, CMD_HOLD, CMD_DAMP, WATCHDOG, VELOCITY, JUMP, STALE = range(9)
PHASE_NAMES = ("wait", "ramp", "follow", "hold", "damp", "watchdog", "velocity", "jump", "stale")


@dataclass(frozen=True)
class SafetySettings:
    """Tunables of the robot-side safety filter (times in seconds)."""

    soft_start_s: float = 1.5
    command_timeout_s: float = 0.05
    velocity_factor: float = 1.5
    limit_tolerance: float = 0.05
    rearm_s: float = 0.5
    #: allowed per-command step = jump_margin x velocity limit x max(elapsed, command period);
    #: the control loop itself never exceeds 1 x, and 3 covers a command that is skipped
    #: (conflated) or received one robot tick late
    jump_margin: float = 3.0
    #: the command period the step allowance is floored at (1 / cfg.rates.control_hz)
    command_period_s: float = 0.005

    @classmethod
    def from_config(cls, cfg: RobotConfig, **overrides: float) -> SafetySettings:
        """Defaults, with the watchdog timeout from cfg.budgets.command_timeout_ms."""
        values = {
            "command_timeout_s": cfg.budgets.command_timeout_ms / 1000.0,
            "command_period_s": 1.0 / cfg.rates.control_hz,
        }
        values.update(overrides)
        return cls(**values)


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class RobotSafety:
    """The safety filter. `offer` and `update` are safe in the robot loop thread.

    Typical tick: `offer(now, cmd.q, cmd.dq, cmd.mode)` for a newly received command, then
    `q, dq, mode = update(now, q_meas, dq_meas)` and hand q, dq, mode to the driver.
    """

    def __init__(self, cfg: RobotConfig, settings: SafetySettings | None = None) -> None:
        self.cfg = cfg
        self.s = settings or SafetySettings.from_config(cfg)
        lim = cfg.limits()
        self.n = cfg.n_joints
        self.qmin, self.qmax, self.vmax = lim["min"], lim["max"], lim["velocity"]
        self.vtrip = self.s.velocity_factor * self.vmax
        self.names = cfg.joint_names
        self.q_out = np.zeros(self.n)
        self.dq_out = np.zeros(self.n)
        self._cmd_q = np.zeros(self.n)
        self._cmd_dq = np.zeros(self.n)
        self._from = np.zeros(self.n)
        self._hold = np.zeros(self.n)
        self._q_in = np.zeros(self.n)  # offer(): the clipped candidate, before it is kept
        self._prev_q = np.zeros(self.n)  # the previous "run" command, for the jump check
        self._step = np.zeros(self.n)
        self._allow = np.zeros(self.n)
        self._over = np.zeros(self.n, dtype=bool)
        self.commands = 0
        self.refused: Counter[str] = Counter()
        self.clipped = 0
        self.watchdog_trips = 0
        self.velocity_trips = 0
        self.stale_trips = 0
        self._reported: set[str] = set()
        self.reset(0.0, lim["default"])

    # ------------------------------------------------------------------ inputs

    def reset(self, now: float, q_meas: np.ndarray) -> None:
        """(Re)activate: hold the measured pose and wait for the first valid command."""
        self.phase = WAIT
        self._hold[:] = np.clip(q_meas, self.qmin, self.qmax)
        self._last_valid = -np.inf
        self._prev_t = -np.inf  # time of the previous "run" command (-inf: none to compare)
        self._fresh = False
        self._jumped = False
        self._cmd_mode = RUN
        self._phase_t = now

    def offer(self, now: float, q: np.ndarray, dq: np.ndarray | None, mode: str) -> bool:
        """Validate a received command; keep it when valid. Returns whether it was accepted.

        Robot loop thread. A "run" command that jumps further than the velocity limits allow
        since the previous "run" command is refused ("jump") and makes the next `update` hold.
        """
        m = MODES.get(mode)
        if m is None:
            return self._refuse("bad_mode")
        if q.shape != (self.n,) or (dq is not None and dq.size and dq.shape != (self.n,)):
            return self._refuse("wrong_size")
        if not np.isfinite(q).all() or (dq is not None and not np.isfinite(dq).all()):
            return self._refuse("nonfinite")
        tol = self.s.limit_tolerance
        if m == RUN and ((q < self.qmin - tol).any() or (q > self.qmax + tol).any()):
            return self._refuse("out_of_limits")
        clipped = m == RUN and ((q < self.qmin).any() or (q > self.qmax).any())
        np.clip(q, self.qmin, self.qmax, out=self._q_in)
        if m == RUN and self._jumps(now):
            return self._refuse("jump")
        if m != RUN:
            self._prev_t = -np.inf  # a hold or damp ends the stream the jump check follows
        self.clipped += int(clipped)
        self._cmd_q[:] = self._q_in
        if dq is None or not dq.size:
            self._cmd_dq[:] = 0.0
        else:
            np.clip(dq, -self.vmax, self.vmax, out=self._cmd_dq)
        self._cmd_mode = m
        self._last_valid = now
        self._fresh = True
        self.commands += 1
        return True

    def _jumps(self, now: float) -> bool:
        """Whether the candidate in _q_in steps too far from the previous "run" command.

        Only a previous "run" command younger than the command timeout is compared (after a
        gap or a hold the robot re-enters by ramp anyway). The candidate becomes the reference
        either way, so a stream that continues smoothly after one jump resumes (by ramp).
        """
        elapsed = now - self._prev_t
        jumped = False
        if elapsed <= self.s.command_timeout_s:
            dt = max(elapsed, self.s.command_period_s)
            np.multiply(self.vmax, self.s.jump_margin * dt, out=self._allow)
            np.subtract(self._q_in, self._prev_q, out=self._step)
            np.abs(self._step, out=self._step)
            np.greater(self._step, self._allow, out=self._over)
            jumped = bool(self._over.any())
        self._prev_q[:] = self._q_in
        self._prev_t = now
        if jumped:
            self._jumped = True
        return jumped

    def _refuse(self, reason: str) -> bool:
        self.refused[reason] += 1
        self._report(f"refused:{reason}", f"robot refused a command ({reason}); counting further")
        return False

    def _report(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            warn_once(message)

    # ------------------------------------------------------------------ the tick

    def update(
        self, now: float, q_meas: np.ndarray, dq_meas: np.ndarray, stale: bool = False
    ) -> tuple:
        """Targets for this tick: (q, dq, mode), mode one of RUN, HOLD, DAMP (robot loop thread).

        `stale`: the measured state is older than the command timeout (no new state arrived):
        hold the last measured pose and ignore commands until states flow again.
        """
        if stale:
            if self.phase != STALE:
                self.stale_trips += 1
                self._report(
                    "stale",
                    "robot state stale: no new measured state for "
                    f"{self.s.command_timeout_s * 1e3:.0f} ms; holding the last pose "
                    "(further trips are counted)",
                )
                self._enter(STALE, now, q_meas)
            self._fresh = self._jumped = False
            return self._targets(now)
        if self.phase == STALE:
            self.phase = WAIT  # states flow again: resume on the next new command, by ramp
        if self._jumped:
            self._jumped = False
            if self.phase in (RAMP, FOLLOW):
                self._enter(JUMP, now, q_meas)
        if self.phase != VELOCITY:
            over = np.abs(dq_meas) > self.vtrip
            if over.any():
                i = int(np.argmax(np.abs(dq_meas) / self.vtrip))
                self.velocity_trips += 1
                self._report(
                    "velocity",
                    f"velocity monitor tripped: {self.names[i]} at {dq_meas[i]:.2f} rad/s "
                    f"(limit {self.vtrip[i]:.2f}); holding",
                )
                self._enter(VELOCITY, now, q_meas)
        if self.phase == VELOCITY:
            calm = (np.abs(dq_meas) <= self.vmax).all()
            if now - self._phase_t >= self.s.rearm_s and calm:
                self.phase, self._fresh = WAIT, False  # resume on the next new command
        elif self.phase in (RAMP, FOLLOW) and now - self._last_valid > self.s.command_timeout_s:
            self.watchdog_trips += 1
            self._report(
                "watchdog",
                f"command watchdog: no valid command for {self.s.command_timeout_s * 1e3:.0f}"
                " ms; holding (further trips are counted)",
            )
            self._enter(WATCHDOG, now, q_meas)
        elif self._fresh:
            self._fresh = False
            if self._cmd_mode == RUN and self.phase not in (RAMP, FOLLOW):
                self._start_following(now, q_meas)
            elif self._cmd_mode == HOLD and self.phase != CMD_HOLD:
                self._enter(CMD_HOLD, now, q_meas)
            elif self._cmd_mode == DAMP:
                self.phase = CMD_DAMP
        return self._targets(now)

    def _start_following(self, now: float, q_meas: np.ndarray) -> None:
        """Hold -> follow: ramp from the held pose (from the measured pose after a damp)."""
        if self.phase == CMD_DAMP:
            np.clip(q_meas, self.qmin, self.qmax, out=self._from)
        else:
            self._from[:] = self._hold
        self.phase, self._phase_t = RAMP, now

    def _enter(self, phase: int, now: float, q_meas: np.ndarray) -> None:
        self._hold[:] = np.clip(q_meas, self.qmin, self.qmax)
        self.phase, self._phase_t = phase, now

    def _targets(self, now: float) -> tuple:
        p = self.phase
        if p == RAMP:
            a = _smoothstep((now - self._phase_t) / self.s.soft_start_s)
            if a >= 1.0:
                self.phase = FOLLOW
            else:
                np.subtract(self._cmd_q, self._from, out=self.q_out)
                self.q_out *= a
                self.q_out += self._from
                self.dq_out[:] = 0.0
                return self.q_out, self.dq_out, RUN
        if self.phase == FOLLOW:
            self.q_out[:] = self._cmd_q
            self.dq_out[:] = self._cmd_dq
            return self.q_out, self.dq_out, RUN
        self.q_out[:] = self._hold
        self.dq_out[:] = 0.0
        return self.q_out, self.dq_out, DAMP if p == CMD_DAMP else HOLD

    # ------------------------------------------------------------------ reporting

    @property
    def mode(self) -> int:
        """The mode the robot is in now (RUN while ramping or following)."""
        if self.phase in (RAMP, FOLLOW):
            return RUN
        return DAMP if self.phase == CMD_DAMP else HOLD

    @property
    def commands_refused(self) -> int:
        return sum(self.refused.values())

    def summary(self) -> dict:
        """Counters for Stats and the run summary."""
        return {
            "commands": self.commands,
            "commands_refused": self.commands_refused,
            "refused": dict(self.refused),
            "commands_clipped": self.clipped,
            "watchdog_trips": self.watchdog_trips,
            "velocity_trips": self.velocity_trips,
            "stale_trips": self.stale_trips,
            "phase": PHASE_NAMES[self.phase],
        }
