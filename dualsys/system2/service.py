"""The System 2 service: an asyncio (uvloop) loop that turns the newest camera frame, robot
state and instruction into a Latent, paced at `rates.system2_target_hz`.

Tasks on the event loop (none of them ever blocks it):
- `_steps`: on each deadline, take the newest frame and state (non-blocking drains of CONFLATE
  sockets), hand them with the current instruction to the encoder on a one-thread executor,
  and publish the Latent (instruction id/text, input timestamps). A late step never queues
  work: the schedule restarts from now and the next step simply uses the newest inputs.
  A new instruction does not wait for the deadline: the step due next runs at once (the
  instruction -> motion switch latency loses up to a period), and the one after it keeps its
  place in the schedule, so the rate stays the target rate; after such an early step the next
  one waits for its own deadline (a flood of instructions cannot run the schedule ahead).
  When the newest frame or state arrived longer ago than `budgets.latent_stale_ms`, no latent
  is published (counted in `stale_skips`): System 1 then sees the latent age and holds.
- `_instructions`: every 10 ms, read up to 64 waiting instructions; a bad Instruction is
  refused and counted, the current one stays.
- `_stats` / `_hello`: Stats at `rates.stats_hz`, Hello once per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq

from dualsys.bus import (
    CameraFrame,
    Hello,
    Instruction,
    Latent,
    Publisher,
    RobotState,
    Stats,
    Subscriber,
)
from dualsys.bus.curve import BusSecurity
from dualsys.bus.latent_link import LatentOut
from dualsys.bus.limits import receive_spec
from dualsys.config import RobotConfig
from dualsys.system2.encoders.base import Encoder
from dualsys.system2.instruction import InstructionError, validate_instruction
from dualsys.system2.metrics import StepMetrics
from dualsys.timing import current_cpus, warn_once

ROLE = "system2"
INSTRUCTION_POLL_S = 0.01
#: most instruction messages read per poll (a person types a few a minute)
MAX_INSTRUCTIONS_PER_POLL = 64
MAX_ENCODE_ERRORS_IN_A_ROW = 10


class System2Service:
    """The 7-10 Hz System 2 loop over real ZeroMQ sockets. `open()`, `await run()`, `close()`."""

    def __init__(self, cfg: RobotConfig, run_dir: Path, encoder: Encoder, ctx: zmq.Context):
        self.cfg, self.run_dir, self.encoder, self.ctx = cfg, run_dir, encoder, ctx
        self.period_s = 1.0 / cfg.rates.system2_target_hz
        self.camera = cfg.cameras[0]
        self.instruction = cfg.system2.default_instruction
        self.instruction_id = 0
        self.instruction_changes = 0
        self.refused: Counter[str] = Counter()
        self.other: Counter[str] = Counter()
        self.encode_errors = 0  # in a row
        self.encode_errors_total = 0
        self.metrics = StepMetrics()
        self.stop = threading.Event()
        #: set by a newly adopted instruction: the step due next runs at once
        self.switch = asyncio.Event()
        self.failed = ""
        self._frame: CameraFrame | None = None
        self._state: RobotState | None = None
        self._frame_rx = self._state_rx = 0  # local receive times (ns): host-independent
        self.stale_ns = int(cfg.budgets.latent_stale_ms * 1e6)
        self.stale_skips = 0
        self._stale = False

    def open(self) -> None:
        """Bind the latent PUB and instruction SUB; connect the frame, state and stats sockets."""
        cfg, n = self.cfg, self.cfg.n_joints
        names = ("camera", "state", "instruction", "latent", "stats")
        ep = {name: cfg.endpoint(name, self.run_dir) for name in names}
        self.sec = sec = BusSecurity(self.ctx, cfg, role="system2")  # CURVE on tcp:// links
        self.frames = Subscriber(
            self.ctx,
            ep["camera"],
            (CameraFrame,),
            curve=sec.curve(ep["camera"], bind=False),
            **receive_spec(cfg, "camera"),  # shapes and size limits of this robot
        )
        self.states = Subscriber(
            self.ctx,
            ep["state"],
            (RobotState,),
            curve=sec.curve(ep["state"], bind=False),
            **receive_spec(cfg, "state"),
        )
        self.instructions = Subscriber(
            self.ctx,
            ep["instruction"],
            (Instruction,),
            bind=True,
            latest=False,
            curve=sec.curve(ep["instruction"], bind=True),
            **receive_spec(cfg, "instruction"),
        )
        # ZeroMQ for every reader, plus the same-machine slot System 1 reads when configured
        self.latents = LatentOut(self.ctx, cfg, self.run_dir, sec, ROLE)
        self.stats = Publisher(
            self.ctx, ep["stats"], ROLE, bind=False, curve=sec.curve(ep["stats"], bind=False)
        )
        self.hello = Hello(ROLE, cfg.name, cfg.system2.latent_dim, n, os.getpid())

    def close(self) -> None:
        """Close every socket (LINGER 0) and stop the CURVE authenticator."""
        for s in (self.frames, self.states, self.instructions, self.latents, self.stats):
            s.close()
        self.sec.close()

    # ----------------------------------------------------------------- bus bookkeeping

    def dropped(self) -> dict[str, int]:
        """Every refused input, by topic and reason (codec drops and refused instructions)."""
        out: dict[str, int] = {}
        for topic, sub in (("camera", self.frames), ("state", self.states)):
            out.update({f"{topic}.{k}": v for k, v in sub.dropped.items()})
        out.update({f"instruction.{k}": v for k, v in self.instructions.dropped.items()})
        out.update({f"instruction.{k}": v for k, v in self.refused.items()})
        out.update({f"camera.{k}": v for k, v in self.other.items()})
        return out

    def _take_inputs(self) -> None:
        frame = self.frames.recv_latest()
        if frame is not None:
            if frame.camera == self.camera.name:
                self._frame, self._frame_rx = frame, time.monotonic_ns()
            else:
                self.other["unknown_camera"] += 1
        state = self.states.recv_latest()
        if state is not None:
            self._state, self._state_rx = state, time.monotonic_ns()

    def _inputs_stale(self) -> bool:
        """True (and said once per episode) when the newest frame or state arrived longer ago
        than budgets.latent_stale_ms: a latent from a dead camera or robot would look fresh to
        System 1, so none is published and System 1's own staleness handling takes over."""
        now = time.monotonic_ns()
        frame_ms, state_ms = (now - self._frame_rx) / 1e6, (now - self._state_rx) / 1e6
        stale = max(frame_ms, state_ms) > self.stale_ns / 1e6
        if stale != self._stale:
            self._stale = stale
            if stale:
                print(
                    f"system2: inputs stale (last frame {frame_ms:.0f} ms, last state "
                    f"{state_ms:.0f} ms ago): not publishing latents",
                    flush=True,
                )
            else:
                print("system2: inputs fresh again: publishing latents", flush=True)
        return stale

    def on_instruction(self, msg: Instruction) -> None:
        """Adopt a valid new instruction; refuse and count a bad one (the current one stays)."""
        try:
            text = validate_instruction(msg.text, self.cfg.system2.max_instruction_chars)
        except InstructionError as exc:
            if not self.refused[exc.reason]:
                warn_once(f"system2: refused an instruction ({exc}); keeping the current one")
            self.refused[exc.reason] += 1
            return
        if msg.id == self.instruction_id and text == self.instruction:
            return  # a resend (dualsys say repeats until it sees the instruction adopted)
        self.instruction, self.instruction_id = text, msg.id
        self.instruction_changes += 1
        self.switch.set()
        print(f"system2: instruction #{msg.id}: {text!r}", flush=True)

    # ----------------------------------------------------------------- tasks

    def take_instructions(self, max_msgs: int = MAX_INSTRUCTIONS_PER_POLL) -> int:
        """Handle the waiting instructions, reading at most max_msgs messages (valid or not):
        a flood waits for the next poll instead of holding the event loop. Returns how many
        messages were read."""
        sub, read = self.instructions, 0
        while read < max_msgs:
            before = sub.received + sub.dropped_total
            msg = sub.recv_nowait(max_msgs - read)
            read += sub.received + sub.dropped_total - before
            if msg is None:
                break
            self.on_instruction(msg)
        return read

    async def _instructions(self) -> None:
        while not self.stop.is_set():
            self.take_instructions()
            await asyncio.sleep(INSTRUCTION_POLL_S)

    async def _every(self, period_s: float, send) -> None:
        while not self.stop.is_set():
            send()
            await asyncio.sleep(period_s)

    def _send_stats(self) -> None:
        values = self.metrics.stats_values(
            self.instruction_id, sum(self.dropped().values()), self.stale_skips
        )
        self.stats.send(Stats(process=ROLE, values=values))

    async def _until_step(self, loop: asyncio.AbstractEventLoop, next_t: float) -> None:
        """Wait for the step due at `next_t`, or less once a new instruction has come in.

        After an early step `next_t` is a period past that step's own slot; until that slot
        has passed, a new instruction waits (at most one early step per slot)."""
        ahead = next_t - self.period_s - loop.time()
        if ahead > 0:
            await asyncio.sleep(ahead)
        delay = next_t - loop.time()
        if delay > 0 and not self.switch.is_set():
            with contextlib.suppress(TimeoutError):  # the deadline came first
                await asyncio.wait_for(self.switch.wait(), delay)
        self.switch.clear()

    async def _steps(self, pool: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        waited = False
        next_t = loop.time()
        while not self.stop.is_set():
            await self._until_step(loop, next_t)
            self._take_inputs()
            frame, state = self._frame, self._state
            if frame is None or state is None:
                if not waited:
                    waited = True
                    missing = "camera frames" if frame is None else "robot state"
                    print(f"system2: waiting for {missing}", flush=True)
                await asyncio.sleep(0.01)
                next_t = loop.time()
                continue
            if self._inputs_stale():
                self.stale_skips += 1
                next_t += self.period_s
                if next_t < loop.time():
                    next_t = loop.time()
                continue
            text, text_id = self.instruction, self.instruction_id
            start = time.monotonic_ns()
            try:
                res = await loop.run_in_executor(
                    pool, self.encoder.encode, frame.image, state.q, state.dq, text
                )
            except Exception as exc:  # report once with context, count, stop after a streak
                self.encode_errors += 1
                self.encode_errors_total += 1
                if self.encode_errors_total == 1:
                    warn_once(f"system2: encoder step failed: {type(exc).__name__}: {exc}")
                if self.encode_errors >= MAX_ENCODE_ERRORS_IN_A_ROW:
                    self.failed = f"encoder failed {self.encode_errors} steps in a row: {exc}"
                    self.stop.set()
                next_t += self.period_s
                continue
            self.encode_errors = 0
            end = time.monotonic_ns()
            self.latents.send(
                Latent(
                    vector=res.vector,
                    instruction_id=text_id,
                    instruction=text,
                    frame_t_mono_ns=frame.header.t_mono_ns,
                    state_t_mono_ns=state.header.t_mono_ns,
                    step=self.metrics.steps + 1,
                ),
                time.monotonic_ns(),
            )
            self.metrics.record(
                start,
                end - start,
                res,
                start - frame.header.t_mono_ns,
                start - state.header.t_mono_ns,
            )
            next_t += self.period_s
            if next_t < loop.time():  # overran: never catch up with a burst, restart from now
                self.metrics.overruns += 1
                next_t = loop.time()

    async def run(self, duration_s: float = 0.0) -> None:
        """Serve until `stop` is set (signal, failure) or `duration_s` (> 0) has passed."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="system2-encoder")
        tasks = [
            asyncio.create_task(self._steps(pool)),
            asyncio.create_task(self._instructions()),
            asyncio.create_task(self._every(1.0 / self.cfg.rates.stats_hz, self._send_stats)),
            asyncio.create_task(self._every(1.0, lambda: self.stats.send(self.hello))),
        ]
        end = time.monotonic() + duration_s if duration_s > 0 else float("inf")
        try:
            while not self.stop.is_set() and time.monotonic() < end:
                await asyncio.sleep(0.05)
                if any(t.done() for t in tasks):  # a task died: that is a bug, say so
                    for t in tasks:
                        if t.done() and t.exception() is not None:
                            self.failed = f"task failed: {t.exception()!r}"
                    break
        finally:
            self.stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            pool.shutdown(wait=True)

    def summary(self) -> dict[str, object]:
        """Contents of {run_dir}/system2.json."""
        out = self.metrics.summary()
        out.update(
            {
                "role": ROLE,
                "robot": self.cfg.name,
                "target_hz": self.cfg.rates.system2_target_hz,
                "cpus": current_cpus(),
                "dropped": self.dropped(),
                "instruction": self.instruction,
                "instruction_id": self.instruction_id,
                "instruction_changes": self.instruction_changes,
                "encoder": self.encoder.description,
                "latents_sent": self.latents.sent,
                "latents_slot_sent": self.latents.slot_sent,
                "stale_skips": self.stale_skips,
                "encode_errors": self.encode_errors_total,
                "failed": self.failed,
            }
        )
        return out
