"""GR-1 at the table, the scripted expert: a joint-space `Plan` per behaviour from any start pose.

Behaviours (names are the dataset's and the scorer's keys):

- touch_red_cup / touch_blue_box: the hand on the object's side goes over the object (IK),
  then down until the middle fingertip is `TOUCH_ABOVE` m above the object's top centre,
  and stays. A fingertip already in the approach column (within `NEAR_XY` sideways of that
  point, between the object's top and `NEAR_ABOVE` over the point) goes straight there
  instead, so a touch held a little off the object is corrected in place, not by leaving it.
  Inverse kinematics is damped least squares on the arm's 7 joints plus waist yaw/pitch.
- wave_right_hand / wave_left_hand: upper arm out to the side, forearm up, shoulder yaw
  swings the hand at `WAVE_HZ`. The arm goes to one end of the swing and the swing starts
  there at full amplitude (version 2), so the state "at rest at the swing's end" always
  continues the same way: the policy cannot tell how long it has waited, and a slow start
  would look like standing still (robots/gr1/TRAINING.md, "Expert versions").
- raise_both_arms: both arms overhead.
- point_forward: right arm straight forward at shoulder height, index finger out.
- bring_hands_together: both palms meet in front of the chest (IK).
- open_close_hands: forearms forward, both hands close and open at `GRIP_HZ`.
- return_to_rest: the configured default pose.

Every plan starts at the robot's measured pose, so the expert also demonstrates switching
from one behaviour to another. The expert needs the simulation only for object positions
and the kinematic model (never steps it).
"""

from __future__ import annotations

import numpy as np

from dualsys.behaviours.plan import Plan
from dualsys.config import RobotConfig
from dualsys.scene import scene_of
from dualsys.tasks.gr1_table.behaviours import BEHAVIOURS, TOUCH_OBJECT
from dualsys.tasks.gr1_table.kinematics import SIDES, Kinematics

TOUCH_ABOVE = 0.02
APPROACH_ABOVE = 0.12
#: the approach column: a fingertip within NEAR_XY (m) sideways of the touch point, above the
#: object's top and at most NEAR_ABOVE over the point, moves straight to it; no start pose of
#: the datasets made before this rule (default pose, other behaviours' poses) lies inside it
#: (the nearest of ds1-ds4's 480 touch starts: 12 cm sideways)
NEAR_XY, NEAR_ABOVE = 0.07, APPROACH_ABOVE
WAVE_HZ = 1.0
WAVE_AMPLITUDE = 0.45
GRIP_HZ = 0.6
WAIST = ("waist_pitch_joint", "waist_yaw_joint")
FINGERS = ("index", "middle", "ring", "pinky")


class Expert:
    """Plans behaviours for one robot config (GR-1 joint names)."""

    def __init__(self, cfg: RobotConfig, kin: Kinematics) -> None:
        self.cfg = cfg
        self.behaviours = BEHAVIOURS
        self.scene = scene_of(cfg)
        self.kin = kin
        self.names = cfg.joint_names
        self.limits = cfg.limits()
        self.default = self.limits["default"].copy()
        #: the behaviour that goes back to the default pose (never a lead-in or a start pose)
        self.rest_behaviour = "return_to_rest"
        #: 1 for the joints a still start jitters around the default pose (the arms), else 0
        arms = ("left_arm", "right_arm")
        self.start_jitter = np.array([float(j.group in arms) for j in cfg.joints])

    def _idx(self, name: str) -> int:
        return self.names.index(name)

    def _arm(self, q: np.ndarray, side: str, **joints: float) -> np.ndarray:
        """Set arm joints by short name (shoulder_pitch, elbow_pitch, ...) on one side."""
        for short, v in joints.items():
            q[self._idx(f"{side}_{short}_joint")] = v
        return q

    def _hand(self, q: np.ndarray, side: str, closed: float, index: float | None = None):
        """Finger joints: 0 = open (default), 1 = fully closed fist; `index` overrides."""
        p = "L" if side == "left" else "R"
        lo, hi = self.limits["min"], self.limits["max"]
        for f in FINGERS:
            i = self._idx(f"{p}_{f}_proximal_joint")
            c = closed if (f != "index" or index is None) else index
            q[i] = c * 0.85 * lo[i]
        q[self._idx(f"{p}_thumb_proximal_pitch_joint")] = (
            closed * 0.5 * hi[self._idx(f"{p}_thumb_proximal_pitch_joint")]
        )
        q[self._idx(f"{p}_thumb_proximal_yaw_joint")] = (
            closed * 0.4 * lo[self._idx(f"{p}_thumb_proximal_yaw_joint")]
        )
        return q

    # ------------------------------------------------------------------ poses

    def touch_target(self, obj: str, obj_pos: np.ndarray) -> np.ndarray:
        """The fingertip point the expert aims at: TOUCH_ABOVE over the object's top centre
        (centre + the scene file's half height)."""
        top = np.asarray(obj_pos, np.float64) + [0.0, 0.0, self.scene.object(obj).half_height]
        return top + [0.0, 0.0, TOUCH_ABOVE]

    def plan(self, behaviour: str, q_start: np.ndarray, objects: dict[str, np.ndarray]) -> Plan:
        """The plan for `behaviour` from joint vector q_start, given object positions."""
        p = Plan(q_start, self.limits)
        d = self.default
        if behaviour in TOUCH_OBJECT:
            obj = TOUCH_OBJECT[behaviour]
            pos = np.asarray(objects[obj], np.float64)
            side = "right" if pos[1] < 0 else "left"
            target = self.touch_target(obj, pos)
            off = self.kin.tips(p.q_end)[SIDES.index(side)] - target
            if np.hypot(off[0], off[1]) <= NEAR_XY and -TOUCH_ABOVE <= off[2] <= NEAR_ABOVE:
                q_touch, _ = self.kin.ik(side, target, p.q_end, extra=WAIST, point="tip")
                return p.move(q_touch, min_s=0.5).hold(0.5)
            pre = target + [0, 0, APPROACH_ABOVE]
            q_pre, _ = self.kin.ik(side, pre, d, extra=WAIST, point="tip")
            q_touch, _ = self.kin.ik(side, target, q_pre, extra=WAIST, point="tip")
            return p.move(q_pre, min_s=0.9).move(q_touch, min_s=0.5).hold(0.5)
        if behaviour in ("wave_right_hand", "wave_left_hand"):
            side = "right" if behaviour == "wave_right_hand" else "left"
            s = -1.0 if side == "right" else 1.0
            q = self._arm(d.copy(), side, shoulder_pitch=-0.3, shoulder_roll=1.2 * s,
                          elbow_pitch=-1.5, shoulder_yaw=1.0 * s)  # fmt: skip
            amp = np.zeros_like(d)
            amp[self._idx(f"{side}_shoulder_yaw_joint")] = WAVE_AMPLITUDE
            # from one end of the swing to the other and back: q +- amp, no ramp
            return p.move(q + amp, min_s=0.8).oscillate(-amp, WAVE_HZ, 6.0, one_sided=True)
        if behaviour == "raise_both_arms":
            q = d.copy()
            for side, s in (("right", -1.0), ("left", 1.0)):
                self._arm(q, side, shoulder_pitch=-2.7, shoulder_roll=0.9 * s, elbow_pitch=-0.1)
            return p.move(q, min_s=1.0).hold(0.5)
        if behaviour == "point_forward":
            q = self._arm(d.copy(), "right", shoulder_pitch=-1.55, shoulder_roll=-0.2,
                          elbow_pitch=0.0)  # fmt: skip
            self._hand(q, "right", closed=1.0, index=0.0)
            return p.move(q, min_s=0.9).hold(0.5)
        if behaviour == "bring_hands_together":
            q, _ = self.kin.ik("right", np.array([0.33, -0.035, 1.05]), d)
            q, _ = self.kin.ik("left", np.array([0.33, 0.035, 1.05]), q)
            return p.move(q, min_s=1.0).hold(0.5)
        if behaviour == "open_close_hands":
            q = d.copy()
            for side in ("right", "left"):
                self._arm(q, side, shoulder_pitch=-0.4, elbow_pitch=-1.2)
            closed = q.copy()
            for side in ("right", "left"):
                self._hand(closed, side, closed=1.0)
            return p.move(q, min_s=0.7).oscillate((closed - q) / 2, GRIP_HZ, 6.0, one_sided=True)
        if behaviour == "return_to_rest":
            return p.move(d, min_s=0.8).hold(0.5)
        raise KeyError(f"unknown behaviour {behaviour!r}; known: {', '.join(BEHAVIOURS)}")
