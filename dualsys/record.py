"""The recorder process: every bus topic, unconflated, into an MCAP file.

MCAP layout:

- decodable channels for Foxglove and other MCAP tools (`dualsys.view.foxglove`): JSON messages
  with JSON schemas: ``/robot/joint_states`` and ``/system1/command`` (joints by name, plottable,
  50 Hz), ``/tf`` (``foxglove.FrameTransforms``: every link's pose from the robot's own model,
  25 Hz), ``/camera/<name>`` (``foxglove.CompressedImage``, JPEG), ``/system1/chunk``,
  ``/system2/latent`` and ``/system2/instruction`` (``foxglove.Log``);
- the raw bus messages, one channel per topic: ``/dualsys/raw/state``, ``.../command``,
  ``.../camera``, ``.../latent``, ``.../chunk`` (what `dualsys replay` reads; recordings made
  before the decodable channels have them as ``/state``, ...);
  message encoding ``msgpack``; the message data is the exact bytes that travelled on the bus
  (the codec's ``[type, version, seq, t_mono_ns, t_wall_ns, source, body]`` envelope);
- one schema per message type, named ``dualsys.<type>``, encoding ``dualsys-fields+json``:
  a short JSON description of the envelope and of the body fields (kind, dtype kinds, rank);
- ``log_time`` = wall-clock receive time (ns), ``publish_time`` = the header's wall send time,
  ``sequence`` = the header's sequence number;
- a metadata record ``dualsys`` with the robot, schema version, and the monotonic and wall
  clocks read together at start (monotonic times in the messages map to wall time with it).

Only messages that pass the codec's validation are written; drops are counted per reason.
A recording is never overwritten: if the file already exists (a recorder restarted by the
supervisor, or a second run with the same --out), the new one goes to ``NAME.1.mcap``,
``NAME.2.mcap``, ... beside it (`fresh_path`).
Instructions are not recorded as their own topic: System 2 binds a SUB for them, which a
subscriber cannot listen to; every Latent carries the instruction text and id it came from.
On off-board tcp:// links it is a CURVE client like any other process (`[security]`).
The recorder runs at normal priority on the robot core, with large receive queues (HWM), so
publishers never wait for it (ZeroMQ PUB drops rather than blocks when a queue is full).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import zmq
from mcap.writer import CompressionType, Writer

from dualsys import SCHEMA_VERSION
from dualsys.bus.codec import MAX_BYTES, DropError, decode
from dualsys.bus.curve import BusSecurity, CurveConfig
from dualsys.bus.messages import (
    ActionChunk,
    CameraFrame,
    Command,
    Hello,
    Latent,
    RobotState,
    Stats,
)
from dualsys.bus.transport import Publisher
from dualsys.config import RobotConfig
from dualsys.rundir import write_summary

ROLE = "recorder"
#: Topic prefix of the raw bus channels.
RAW_PREFIX = "/dualsys/raw/"
MESSAGE_ENCODING = "msgpack"
SCHEMA_ENCODING = "dualsys-fields+json"
#: recorded topics: endpoint name -> message class
TOPICS = {
    "state": RobotState,
    "command": Command,
    "camera": CameraFrame,
    "latent": Latent,
    "chunk": ActionChunk,
}
ENVELOPE = ["type", "version", "seq", "t_mono_ns", "t_wall_ns", "source", "body"]
RECV_HWM = 100_000
#: Publishers (topic, source) whose sequence numbers are followed for gap counting; a source
#: past this is still recorded but not followed (the map cannot grow without bound).
MAX_SEQ_SOURCES = 64


def fresh_path(path: str | Path) -> Path:
    """`path` if nothing is there yet, else the first free NAME.N.SUFFIX (N = 1, 2, ...).

    The caller opens it exclusively (`open(.., "xb")`), so two recorders never share a file."""
    path = Path(path)
    if not path.exists():
        return path
    stem, suffix = path.name[: -len(path.suffix)] if path.suffix else path.name, path.suffix
    n = 1
    while True:
        candidate = path.with_name(f"{stem}.{n}{suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def schema_json(cls) -> bytes:
    """The JSON description of one message type stored as its MCAP schema."""
    fields = {
        name: {
            "kind": f.kind,
            **({"dtypes": f.dtypes, "ndim": f.ndim} if f.kind == "array" else {}),
        }
        for name, f in cls.FIELDS.items()
    }
    doc = {
        "type": cls.TYPE,
        "schema_version": SCHEMA_VERSION,
        "encoding": "msgpack array " + str(ENVELOPE) + "; arrays are msgpack ext type 1: "
        "u8 len, dtype string, u8 ndim, u32 shape[ndim], raw little-endian bytes",
        "fields": fields,
    }
    return json.dumps(doc, indent=1).encode()


class McapLog:
    """An MCAP file with one channel per recorded topic (not real-time; one writer thread)."""

    def __init__(
        self,
        path: str | Path,
        robot: str,
        endpoints: dict[str, str],
        decoded: dict[str, tuple[str, dict]] | None = None,
    ) -> None:
        """Create the file at `path`, or beside it if a file is already there (`fresh_path`;
        `self.path` says where). Never truncates an existing file. `decoded`: topic ->
        (schema name, JSON schema) of the decodable JSON channels (`foxglove.schemas`)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        while True:
            self.path = fresh_path(path)
            try:
                self.file = open(self.path, "xb")  # noqa: SIM115 - closed in close()
                break
            except FileExistsError:  # another recorder took the name first: next one
                continue
        self.writer = Writer(self.file, compression=CompressionType.LZ4)
        self.writer.start(profile="dualsys", library="dualsys-recorder")
        self.channels: dict[str, int] = {}
        for topic, cls in TOPICS.items():
            sid = self.writer.register_schema(
                f"dualsys.{cls.TYPE}", SCHEMA_ENCODING, schema_json(cls)
            )
            self.channels[topic] = self.writer.register_channel(
                RAW_PREFIX + topic, MESSAGE_ENCODING, sid, {"endpoint": endpoints.get(topic, "")}
            )
        self.json_channels: dict[str, int] = {}
        for topic, (name, schema) in (decoded or {}).items():
            sid = self.writer.register_schema(name, "jsonschema", json.dumps(schema).encode())
            self.json_channels[topic] = self.writer.register_channel(topic, "json", sid)
        self.writer.add_metadata(
            "dualsys",
            {
                "robot": robot,
                "schema_version": str(SCHEMA_VERSION),
                "clock_mono_ns": str(time.monotonic_ns()),
                "clock_wall_ns": str(time.time_ns()),
            },
        )

    def write(self, topic: str, data: bytes, log_time: int, publish_time: int, seq: int) -> None:
        """Append one message's raw bytes to its topic's channel."""
        self.writer.add_message(
            self.channels[topic],
            log_time=log_time,
            data=data,
            publish_time=publish_time,
            sequence=seq & 0xFFFFFFFF,
        )

    def write_json(self, topic: str, data: bytes, log_time: int, publish_time: int) -> None:
        """Append one JSON record to a decodable channel."""
        self.writer.add_message(
            self.json_channels[topic], log_time=log_time, data=data, publish_time=publish_time
        )

    def close(self) -> None:
        """Write the summary section and close the file."""
        self.writer.finish()
        self.file.close()


def raw_subscriber(ctx: zmq.Context, endpoint: str, curve: CurveConfig | None = None) -> zmq.Socket:
    """A SUB socket keeping every message's raw bytes: no conflation, a large queue, and a
    short reconnect interval so that a publisher binding after us is heard within ~10 ms.
    `curve`: CURVE client options for an off-board tcp:// link (dualsys/bus/curve.py)."""
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 100)
    sock.setsockopt(zmq.RCVHWM, RECV_HWM)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_BYTES)
    sock.setsockopt(zmq.RECONNECT_IVL, 10)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    if curve is not None:
        curve.apply(sock, bind=False)
    sock.connect(endpoint)
    return sock


class Recorder:
    """Subscribes to every topic without conflation and writes what arrives to a McapLog."""

    def __init__(
        self,
        cfg: RobotConfig,
        ctx: zmq.Context,
        run_dir: Path,
        out: Path,
        sec: BusSecurity | None = None,
    ) -> None:
        self.cfg = cfg
        endpoints = {t: cfg.endpoint(t, run_dir) for t in TOPICS}
        sec = sec or BusSecurity(ctx, cfg, binds=False)  # it only connects
        self.socks = {
            t: raw_subscriber(ctx, ep, sec.curve(ep, bind=False)) for t, ep in endpoints.items()
        }
        from dualsys.view import foxglove
        from dualsys.view.poses import RobotPoses

        self.fox = foxglove.FoxgloveChannels(cfg, RobotPoses(cfg))
        self.log = McapLog(out, cfg.name, endpoints, foxglove.schemas(cfg))
        self.poller = zmq.Poller()
        self.by_sock = {}
        for topic, sock in self.socks.items():
            self.poller.register(sock, zmq.POLLIN)
            self.by_sock[sock] = topic
        self.count: Counter[str] = Counter()
        self.bytes = 0
        self.dropped: Counter[str] = Counter()
        self.gaps: Counter[str] = Counter()
        self._last_seq: dict[tuple[str, str], int] = {}

    def poll(self, timeout_ms: int) -> int:
        """Receive and write everything waiting (waits up to timeout_ms). Returns messages."""
        n = 0
        for sock, _ in self.poller.poll(timeout_ms):
            topic = self.by_sock[sock]
            while True:
                try:
                    data = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                n += self._record(topic, data, time.time_ns())
        return n

    def _record(self, topic: str, data: bytes, t_recv_wall: int) -> int:
        try:
            msg = decode(data, (TOPICS[topic],), None, MAX_BYTES)
        except DropError as exc:
            self.dropped[f"{topic}:{exc.reason}"] += 1
            return 0
        h = msg.header
        key = (topic, h.source)
        prev = self._last_seq.get(key)
        if prev is not None and h.seq > prev + 1:
            self.gaps[topic] += h.seq - prev - 1
        if prev is not None or len(self._last_seq) < MAX_SEQ_SOURCES:
            self._last_seq[key] = h.seq
        self.log.write(topic, data, t_recv_wall, h.t_wall_ns, h.seq)
        for fox_topic, record in self.fox.records(msg, t_recv_wall):
            self.log.write_json(fox_topic, record, t_recv_wall, h.t_wall_ns)
        self.count[topic] += 1
        self.bytes += len(data)
        return 1

    def stats_values(self, elapsed_s: float) -> dict[str, float]:
        """Numbers for the Stats message."""
        total = sum(self.count.values())
        values = {
            "messages": float(total),
            "rate_hz": total / max(elapsed_s, 1e-9),
            "mbytes": self.bytes / 1e6,
            "dropped": float(sum(self.dropped.values())),
            "gaps": float(sum(self.gaps.values())),
        }
        values.update({f"{t}_messages": float(self.count[t]) for t in TOPICS})
        return values

    def summary(self, elapsed_s: float) -> dict:
        """The run summary written to {run_dir}/recorder.json."""
        return {
            "path": str(self.log.path),
            "duration_s": elapsed_s,
            "messages": dict(self.count),
            "total_messages": sum(self.count.values()),
            "bytes": self.bytes,
            "file_bytes": self.log.path.stat().st_size if self.log.path.exists() else 0,
            "dropped": dict(self.dropped),
            "sequence_gaps": dict(self.gaps),
        }

    def close(self) -> None:
        """Finish the MCAP file and close the sockets."""
        self.log.close()
        for sock in self.socks.values():
            sock.close(0)


def run_recorder(cfg: RobotConfig, run_dir: Path, out: Path, duration_s: float) -> int:
    """Record until the duration ends or a stop signal; returns the exit code."""
    import sys

    from dualsys.system1.control_proc import StopFlag
    from dualsys.timing import pin_to_core, warn_once

    stop = StopFlag()
    stop.install()
    ctx = zmq.Context()
    note = pin_to_core(cfg.cores.robot)  # normal priority, beside the robot / System 2
    if note:
        warn_once(note)
    sec = BusSecurity(ctx, cfg, binds=False)  # CURVE client keys for tcp:// links, if set
    rec = Recorder(cfg, ctx, run_dir, out, sec)
    if rec.log.path != Path(out):
        print(f"dualsys record: {out} exists (kept); recording to {rec.log.path}", file=sys.stderr)
    stats_ep = cfg.endpoint("stats", run_dir)
    stats_pub = Publisher(ctx, stats_ep, ROLE, bind=False, curve=sec.curve(stats_ep, bind=False))
    hello = Hello(ROLE, cfg.name, cfg.system2.latent_dim, cfg.n_joints, os.getpid())
    stats_period = int(1e9 / cfg.rates.stats_hz)
    start = time.monotonic_ns()
    end = start + int(duration_s * 1e9) if duration_s > 0 else 1 << 62
    next_stats = next_hello = start
    while not stop.set and time.monotonic_ns() < end:
        rec.poll(timeout_ms=50)
        now = time.monotonic_ns()
        if now >= next_hello:
            stats_pub.send(hello)
            next_hello = now + 1_000_000_000
        if now >= next_stats:
            stats_pub.send(Stats(process=ROLE, values=rec.stats_values((now - start) / 1e9)))
            next_stats = now + stats_period
    rec.poll(timeout_ms=0)  # what is already queued
    elapsed = (time.monotonic_ns() - start) / 1e9
    rec.close()
    summary = rec.summary(elapsed)
    path = write_summary(run_dir, ROLE, summary)
    stats_pub.close()
    ctx.term()
    print(
        f"dualsys record: {summary['total_messages']} messages "
        f"({summary['file_bytes'] / 1e6:.1f} MB) in {out}; summary in {path}",
        file=sys.stderr,
    )
    return 0
