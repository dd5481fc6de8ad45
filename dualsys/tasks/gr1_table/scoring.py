"""GR-1 at the table: success criteria per behaviour, on recorded trajectories (offline or live).

`Scorer.score(name, traj)` turns a `dualsys.behaviours.criteria.Trajectory` (palm and
fingertip positions from the simulation, or from q by forward kinematics with
`dualsys.tasks.gr1_table.kinematics.Kinematics.hands_batch`) into a `Score` (success + the
measured numbers behind it). Heights (`*_HEIGHT`) are metres above the robot's base (the
pelvis, `robot.base_height` of the scene file); object tops come from the scene's object sizes.
The criteria:

- touch_red_cup / touch_blue_box: some palm or fingertip gets within `TOUCH_RADIUS` (5 cm)
  of the named object's top centre and the touch stays until the instruction changes (the
  episode's end): within 5 cm unbroken for at least `TOUCH_HOLD_S` (the touch), from the
  start of that first hold on within 5 cm for at least `TOUCH_STAY_SHARE` of the time, and
  for the whole last `HOLD_S`; at the end the other object is not touched (no palm or
  fingertip within 5 cm of its top centre). The stay is counted from the first hold, not the
  first sample within 5 cm: the approach passes the object's top on its way to the hover
  point above it (the scripted expert's own path, from rest, passes 4.8-8.8 cm from the cup's
  top centre, then hovers 15 cm away before it descends: counted from the first sample within
  5 cm, the expert itself would fail), and a pass-by is not a touch.
- wave_right_hand / wave_left_hand: over the last `GESTURE_WINDOW_S` the waving palm is above
  `WAVE_MIN_HEIGHT`, swings at least `WAVE_MIN_SWINGS` times by >= `WAVE_MIN_P2P` peak to peak
  (key poses), with a swing period between `WAVE_PERIOD` bounds (timing); the other palm stays
  below `OTHER_HAND_MAX_HEIGHT`.
- raise_both_arms: both palms above `RAISE_MIN_HEIGHT` for the last `HOLD_S`.
- point_forward: right palm at least `POINT_MIN_X` forward and within `POINT_HEIGHT` height band
  for the last `HOLD_S`, left palm low, right index finger extended and the others curled.
- bring_hands_together: palms within `TOGETHER_MAX_DIST` of each other and in front of the
  body (x >= `TOGETHER_MIN_X`) for the last `HOLD_S`.
- open_close_hands: the mean finger closure of both hands goes through at least
  `GRIP_MIN_CYCLES` full close (> 0.6) / open (< 0.3) cycles, each close-open cycle lasting
  within `GRIP_PERIOD` bounds.
- return_to_rest: every controlled joint within `REST_TOL` rad of its default for the last
  `HOLD_S`.
"""

from __future__ import annotations

import numpy as np

from dualsys.behaviours.criteria import (
    Check,
    Score,
    Trajectory,
    first_run_start,
    judge,
    longest_run,
    swings,
)
from dualsys.config import RobotConfig
from dualsys.scene import scene_of
from dualsys.tasks.gr1_table.behaviours import TOUCH_OBJECT

#: Length of an evaluated episode (s), offline and live: long enough for the gestures to show
#: several periods after the robot has got there (demonstrations may be shorter).
EVAL_EPISODE_S = 6.0
#: What an evaluated return_to_rest episode starts from, offline and live: from rest, one of
#: these (in turn) is said for LEAD_S, then "return to rest" is judged on the way back.
LEAD_IN = (
    "raise both arms", "wave the left hand", "point forward", "open and close both hands",
    "wave the right hand", "touch the red cup", "bring the hands together", "touch the blue box",
)  # fmt: skip
LEAD_S = 3.0


def lead_in(behaviour: str, index: int) -> str | None:
    """The instruction said for LEAD_S before episode `index` of `behaviour`, or None."""
    return LEAD_IN[index % len(LEAD_IN)] if behaviour == "return_to_rest" else None


TOUCH_RADIUS = 0.05
TOUCH_HOLD_S = 0.3
#: Share of the time from the first hold to the end the touch must stay within the radius
#: (a brushed rim may lift a fingertip out for a moment; a hand that leaves does not pass).
TOUCH_STAY_SHARE = 0.95
GESTURE_WINDOW_S = 2.5
WAVE_MIN_HEIGHT = 0.40
WAVE_MIN_SWINGS = 3
WAVE_MIN_P2P = 0.12
WAVE_PERIOD = (0.5, 2.0)
OTHER_HAND_MAX_HEIGHT = 0.15
RAISE_MIN_HEIGHT = 0.75
HOLD_S = 0.5
POINT_MIN_X = 0.5
POINT_HEIGHT = (0.20, 0.50)
TOGETHER_MAX_DIST = 0.16
TOGETHER_MIN_X = 0.2
GRIP_MIN_CYCLES = 2
GRIP_PERIOD = (0.8, 3.0)
REST_TOL = 0.1
#: pointing: the index finger open (closure below), the other fingers curled (above)
POINT_INDEX_MAX_CLOSURE = 0.3
POINT_OTHERS_MIN_CLOSURE = 0.5


class Scorer:
    """Scores trajectories of one robot (needs joint names and defaults from its config)."""

    def __init__(self, cfg: RobotConfig) -> None:
        self.cfg = cfg
        self.scene = scene_of(cfg)
        self.base = self.scene.base_height
        self.names = cfg.joint_names
        lim = cfg.limits()
        self.default, self.lo, self.hi = lim["default"], lim["min"], lim["max"]
        self.ctrl = cfg.controlled_indices
        self.fingers = {
            s: np.array(
                [
                    self.names.index(f"{s}_{f}_proximal_joint")
                    for f in ("index", "middle", "ring", "pinky")
                ]
            )  # fmt: skip
            for s in ("L", "R")
        }

    def closure(self, q: np.ndarray, side: str) -> np.ndarray:
        """(T, 4) finger closure 0 (open) .. 1 (limit) of index, middle, ring, pinky."""
        idx = self.fingers[side]
        return q[:, idx] / self.lo[idx]

    def score(self, behaviour: str, tr: Trajectory) -> Score:
        """Success of one run of `behaviour` (see the module docstring for the criteria)."""
        fn = getattr(self, f"_{behaviour}", None)
        if behaviour in TOUCH_OBJECT:
            return self._touch(TOUCH_OBJECT[behaviour], tr)
        if fn is None:
            raise KeyError(f"no scoring criterion for behaviour {behaviour!r}")
        return fn(tr)

    def _touch(self, obj: str, tr: Trajectory) -> Score:
        dists = {}
        for name, pos in tr.objects.items():
            top = pos + [0.0, 0.0, self.scene.object(name).half_height]
            dists[name] = np.linalg.norm(tr.hands - top[:, None, :], axis=2).min(axis=1)
        d = dists[obj]
        inside = d <= TOUCH_RADIUS
        hold = longest_run(inside, tr.t)
        reached = np.flatnonzero(inside)
        held_from = first_run_start(inside, tr.t, TOUCH_HOLD_S)
        # the stay from the touch (the first hold); without one (a failure already), from the
        # first reach
        since = held_from if held_from is not None else (reached[0] if len(reached) else None)
        stay = float(inside[since:].mean()) if since is not None else 0.0
        end = tr.tail(HOLD_S)
        others = [float(v[end].min()) for k, v in dists.items() if k != obj]
        wrong = min(others) if others else np.inf
        vals = {
            "min_dist": d.min(),
            "hold_s": hold,
            "stay_share": stay,
            "end_max_dist": float(d[end].max()),
            "other_min_dist": wrong,
        }
        checks = [
            ("hold_s", ">=", TOUCH_HOLD_S),
            ("stay_share", ">=", TOUCH_STAY_SHARE),
            ("end_max_dist", "<=", TOUCH_RADIUS),
            ("other_min_dist", ">", TOUCH_RADIUS),
        ]
        return judge(f"touch {obj}", vals, checks)

    def _wave(self, side: int, tr: Trajectory) -> Score:
        m = tr.tail(GESTURE_WINDOW_S)
        h = tr.hands[m, side]
        centred = h - h.mean(0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        n, periods = swings(centred @ axis, tr.t[m], WAVE_MIN_P2P)
        z_min = float(h[:, 2].min())
        other_z = float(tr.hands[m, 1 - side, 2].max())
        per = float(np.median(periods)) if periods else 0.0
        vals = {"swings": n, "period_s": per, "hand_min_z": z_min, "other_max_z": other_z}
        checks = [
            ("swings", ">=", WAVE_MIN_SWINGS),
            ("period_s", "in", WAVE_PERIOD),
            ("hand_min_z", ">=", self.base + WAVE_MIN_HEIGHT),
            ("other_max_z", "<=", self.base + OTHER_HAND_MAX_HEIGHT),
        ]
        return judge("wave", vals, checks)

    def _wave_right_hand(self, tr: Trajectory) -> Score:
        return self._wave(1, tr)

    def _wave_left_hand(self, tr: Trajectory) -> Score:
        return self._wave(0, tr)

    def _raise_both_arms(self, tr: Trajectory) -> Score:
        z = tr.hands[tr.tail(HOLD_S), :2, 2].min()
        return judge(
            "raise both arms", {"min_z": z}, [("min_z", ">=", self.base + RAISE_MIN_HEIGHT)]
        )

    def _point_forward(self, tr: Trajectory) -> Score:
        m = tr.tail(HOLD_S)
        r = tr.hands[m, 1]
        c = self.closure(tr.q[m], "R").mean(0)
        vals = {
            "min_x": float(r[:, 0].min()),
            "z_lo": float(r[:, 2].min()),
            "z_hi": float(r[:, 2].max()),
            "left_max_z": float(tr.hands[m, 0, 2].max()),
            "index_closure": float(c[0]),
            "others_closure": float(c[1:].min()),
        }
        checks = [
            ("min_x", ">=", POINT_MIN_X),
            ("z_lo", ">=", self.base + POINT_HEIGHT[0]),
            ("z_hi", "<=", self.base + POINT_HEIGHT[1]),
            ("left_max_z", "<=", self.base + OTHER_HAND_MAX_HEIGHT),
            ("index_closure", "<", POINT_INDEX_MAX_CLOSURE),
            ("others_closure", ">", POINT_OTHERS_MIN_CLOSURE),
        ]
        return judge("point forward", vals, checks)

    def _bring_hands_together(self, tr: Trajectory) -> Score:
        m = tr.tail(HOLD_S)
        d = np.linalg.norm(tr.hands[m, 0] - tr.hands[m, 1], axis=1).max()
        x = tr.hands[m, :2, 0].min()
        checks = [("max_dist", "<=", TOGETHER_MAX_DIST), ("min_x", ">=", TOGETHER_MIN_X)]
        return judge("bring hands together", {"max_dist": d, "min_x": x}, checks)

    def _open_close_hands(self, tr: Trajectory) -> Score:
        c = (self.closure(tr.q, "L").mean(1) + self.closure(tr.q, "R").mean(1)) / 2
        closes, opens, state = [], [], "open" if c[0] < 0.6 else "closed"
        for ci, ti in zip(c, tr.t, strict=True):
            if state == "open" and ci > 0.6:
                state = "closed"
                closes.append(ti)
            elif state == "closed" and ci < 0.3:
                state = "open"
                opens.append(ti)
        periods = np.diff(closes) if len(closes) > 1 else np.array([])
        cycles = min(len(closes), len(opens))
        vals = {"cycles": cycles, "period_s": float(periods.mean()) if len(periods) else 0.0}
        checks: list[Check] = [("cycles", ">=", GRIP_MIN_CYCLES)]
        if len(periods):  # every closing-to-closing period in range
            vals |= {"period_min_s": periods.min(), "period_max_s": periods.max()}
            checks += [
                ("period_min_s", ">=", GRIP_PERIOD[0]),
                ("period_max_s", "<=", GRIP_PERIOD[1]),
            ]
        return judge("open and close hands", vals, checks)

    def _return_to_rest(self, tr: Trajectory) -> Score:
        m = tr.tail(HOLD_S)
        err = np.abs(tr.q[m][:, self.ctrl] - self.default[self.ctrl]).max()
        return judge("return to rest", {"max_err_rad": err}, [("max_err_rad", "<=", REST_TOL)])
