"""What the view shows, written to a Rerun recording stream: the same for a live system and a
recording, all on one ``time`` timeline (the messages' wall send times).

Entities:
- ``world/robot/<body>``: the robot's meshes (static) and body poses from RobotState through
  the model's forward kinematics, at most `pose_hz`;
- ``camera/<name>``: camera frames;
- ``joints/<joint>``: measured and commanded position of each controlled joint (two series),
  at most `plot_hz`;
- ``timing/...``: latent age (state time minus the newest latent's send time), System 2 step
  and its period, chunk latency and chunk boundaries (points), the command's lag behind its
  tick deadline (max over the plot window) and deadline misses (lag over a period);
  live only, ``timing/control/...`` from the supervisor's status (misses, lateness p99);
- ``log/instruction``, ``log/events``: the instruction as plain text (control and format
  characters escaped, length bounded: it is hostile input), chunk and latent events.
Not for the 200 Hz thread: it runs in the viewer process or offline.
"""

from __future__ import annotations

import numpy as np

from dualsys.bus.messages import ActionChunk, CameraFrame, Command, Latent, Message, RobotState
from dualsys.config import RobotConfig
from dualsys.liveview import display_text
from dualsys.view import scene
from dualsys.view.poses import RobotPoses

#: Instruction text shown at most this long (characters after escaping).
MAX_INSTRUCTION = 200


class ViewSink:
    """Turns validated bus messages into Rerun entities (module docstring)."""

    def __init__(
        self,
        cfg: RobotConfig,
        rr,
        recording,
        poses: RobotPoses,
        pose_hz: float = 15.0,
        plot_hz: float = 30.0,
        live: bool = False,
    ) -> None:
        """live: messages come from latest-value subscriptions (skipped ticks are not misses:
        live misses come from the lag alone, and from the supervisor's status), and the
        current instruction is kept as a static value (a browser joining late sees it)."""
        self.live = live
        #: a `dualsys.view.grounding.Grounder`, set by the caller (None: no grounding shown)
        self.grounder = None
        self.cfg, self.rr, self.rec, self.poses = cfg, rr, recording, poses
        self.pose_period = int(1e9 / pose_hz)
        self.plot_period = int(1e9 / plot_hz)
        self.ctrl = np.asarray(cfg.controlled_indices)
        self.ctrl_names = [cfg.joint_names[i] for i in self.ctrl]
        self.period_ns = cfg.rates.control_period_ns
        self.bodies = scene.moving_visible(poses)
        self.next_pose = self.next_plot = self.next_cmd = 0
        self.last_cmd_q: np.ndarray | None = None
        self.last_latent: Latent | None = None
        self.latent_prev_t = 0
        self.instruction_id: int | None = None
        self.lag_max_us = 0.0
        self.misses = 0
        self.last_tick: int | None = None
        self.counts = {"state": 0, "command": 0, "frame": 0, "latent": 0, "chunk": 0}

    def _time(self, t_wall_ns: int) -> None:
        self.rr.set_time("time", timestamp=np.datetime64(int(t_wall_ns), "ns"), recording=self.rec)

    def _log(self, path: str, entity, static: bool = False) -> None:
        self.rr.log(path, entity, static=static, recording=self.rec)

    def start(self) -> None:
        """Log the static parts: the robot's meshes and the series' names and colours."""
        rr = self.rr
        scene.log_model(rr, self.poses, self.rec)
        pos, quat = self.poses.update(np.array([j.default for j in self.cfg.joints]))
        for i, name in enumerate(self.poses.names):  # every body once (static ones stay)
            r = quat[i]
            tf = rr.Transform3D(translation=pos[i], quaternion=rr.Quaternion(xyzw=[*r[1:], r[0]]))
            self._log(f"{scene.ROBOT}/{name}", tf, static=i not in set(self.bodies))
        for name in self.ctrl_names:
            lines = rr.SeriesLines(
                names=["measured", "commanded"], colors=[[40, 120, 220], [230, 120, 30]]
            )
            self._log(f"joints/{name}", lines, static=True)
        self._log(
            "timing/chunk_boundary", rr.SeriesPoints(markers="cross", marker_sizes=4), static=True
        )
        self._log("timing/miss", rr.SeriesPoints(markers="diamond", marker_sizes=5), static=True)

    def on_message(self, msg: Message, t_wall_ns: int | None = None) -> None:
        """Show one validated bus message (t_wall_ns: its time; default its header's)."""
        h = msg.header
        t = t_wall_ns if t_wall_ns is not None else (h.t_wall_ns if h else 0)
        if isinstance(msg, RobotState):
            self._state(msg, t)
        elif isinstance(msg, Command):
            self._command(msg, t)
        elif isinstance(msg, CameraFrame):
            self.counts["frame"] += 1
            if msg.image.ndim == 3 and msg.image.dtype == np.uint8:
                self._time(t)
                self._log(f"camera/{msg.camera}", self.rr.Image(msg.image, color_model="RGB"))
        elif isinstance(msg, Latent):
            self._latent(msg, t)
        elif isinstance(msg, ActionChunk):
            self.counts["chunk"] += 1
            self._time(t)
            rr = self.rr
            self._log("timing/chunk_latency_ms", rr.Scalars(msg.latency_ns / 1e6))
            self._log("timing/chunk_boundary", rr.Scalars(1.0))
            note = f"chunk {msg.chunk_id} (latent {msg.latent_seq}, kept {msg.frozen})"
            self._log("log/events", rr.TextLog(note, level="DEBUG"))

    def _state(self, msg: RobotState, t: int) -> None:
        self.counts["state"] += 1
        if len(msg.q) != self.cfg.n_joints:
            return
        rr = self.rr
        if t >= self.next_pose:
            self.next_pose = t + self.pose_period
            self._time(t)
            scene.log_pose(rr, self.poses, msg.q, self.bodies, self.rec)
        if t >= self.next_plot:
            self.next_plot = t + self.plot_period
            self._time(t)
            cmd = self.last_cmd_q
            for k, name in zip(self.ctrl, self.ctrl_names, strict=True):
                vals = [msg.q[k], cmd[k]] if cmd is not None else [msg.q[k], np.nan]
                self._log(f"joints/{name}", rr.Scalars(vals))
            if self.last_latent is not None and msg.header and self.last_latent.header:
                age = (msg.header.t_mono_ns - self.last_latent.header.t_mono_ns) / 1e6
                self._log("timing/latent_age_ms", rr.Scalars(age))

    def _command(self, msg: Command, t: int) -> None:
        self.counts["command"] += 1
        if len(msg.q) != self.cfg.n_joints or msg.flags & Command.FLAG_WARMUP:
            return
        self.last_cmd_q = msg.q
        if msg.t_ns > 0 and msg.header is not None:  # the control loop's own commands
            lag_ns = msg.header.t_mono_ns - msg.t_ns
            self.lag_max_us = max(self.lag_max_us, lag_ns / 1e3)
            skipped = 0
            if not self.live and self.last_tick is not None:
                skipped = msg.tick - self.last_tick - 1
            missed = int(lag_ns > self.period_ns) + max(0, skipped)
            self.last_tick = msg.tick
            if missed:
                self.misses += missed
                self._time(t)
                self._log("timing/miss", self.rr.Scalars(float(self.misses)))
        if t >= self.next_cmd:
            self.next_cmd = t + self.plot_period
            self._time(t)
            self._log("timing/command_lag_max_us", self.rr.Scalars(self.lag_max_us))
            self._log("timing/misses", self.rr.Scalars(float(self.misses)))
            self.lag_max_us = 0.0

    def _latent(self, msg: Latent, t: int) -> None:
        self.counts["latent"] += 1
        rr = self.rr
        self._time(t)
        self._log("timing/system2_step", rr.Scalars(float(msg.step)))
        if msg.header is not None:
            if self.latent_prev_t:
                period = (msg.header.t_mono_ns - self.latent_prev_t) / 1e6
                self._log("timing/system2_period_ms", rr.Scalars(period))
            self.latent_prev_t = msg.header.t_mono_ns
        self.last_latent = msg
        if msg.instruction_id != self.instruction_id:
            self.instruction_id = msg.instruction_id
            self.show_instruction(msg.instruction, msg.instruction_id)
            if self.grounder is not None:
                self.grounder.request(msg.instruction_id, msg.instruction)

    def show_grounding(self, t_wall_ns: int) -> None:
        """Show the groundings the grounder finished (live: once per viewer loop)."""
        if self.grounder is None:
            return
        for iid, text, line in self.grounder.results():
            self._time(t_wall_ns)
            if iid == self.instruction_id:
                self.show_instruction(text, iid, line)
            elif iid < 0:
                self._log("log/events", self.rr.TextLog(line, level="WARN"))

    def show_instruction(self, text: str, instruction_id: int, grounding: str = "") -> None:
        """The instruction as data: escaped, bounded, logged as plain text; with System 2's
        grounding of it once known."""
        safe = display_text(text, MAX_INSTRUCTION)
        line = f"instruction {instruction_id}: {safe}"
        if grounding:
            line += f"\nSystem 2 grounds it as: {display_text(grounding, MAX_INSTRUCTION)}"
        self._log("log/instruction", self.rr.TextLog(line, level="INFO"))
        doc = self.rr.TextDocument(line, media_type="text/plain")
        self._log("instruction", doc, static=self.live)

    def on_status(self, values: dict[str, float], t_wall_ns: int) -> None:
        """Live only: the supervisor's status (control's misses and lateness, rates)."""
        self._time(t_wall_ns)
        for key, entity in (
            ("control.misses", "timing/control/misses"),
            ("control.lateness_p99_us", "timing/control/lateness_p99_us"),
            ("control.work_p99_us", "timing/control/work_p99_us"),
            ("control.rate_hz", "timing/control/rate_hz"),
            ("system2.rate_hz", "timing/system2_rate_hz"),
        ):
            v = values.get(key)
            if v is not None and np.isfinite(v):
                self._log(entity, self.rr.Scalars(float(v)))
