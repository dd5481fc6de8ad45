"""Embodiment configs: one TOML file per robot, loaded into frozen dataclasses.

Every error names the file, the key and what was expected (`ConfigError`). Joints are keyed by
name; their order in the file is the order of every joint vector on the bus.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROBOTS_DIR = Path(__file__).resolve().parent.parent / "robots"
PRECISIONS = ("fp32", "bf16", "int8", "fp32-ort")
ENDPOINT_NAMES = (
    "state",
    "command",
    "camera",
    "latent",
    "chunk",
    "instruction",
    "stats",
    "scene_reset",
    "scene_truth",
)
#: Optional same-machine shared-memory slots (shm://, dualsys/bus/shm.py) and the ipc:// link
#: each mirrors: the latent slot System 1 reads (dualsys/bus/latent_link.py).
SLOT_ENDPOINTS = {"latent_local": "latent"}
#: The simulation's evaluation links (SceneReset in, SceneTruth out: dualsys/robot/scene_link.py)
#: and where they are when `[endpoints]` leaves them out (a hardware robot has no scene).
SIM_ENDPOINTS = {
    "scene_reset": "ipc://{run}/scene_reset.sock",
    "scene_truth": "ipc://{run}/scene_truth.sock",
}

# Bounds that keep a config that loads a config that runs: sizes that allocate, rates the
# loops can serve, budgets the processes can meet. Far outside any real robot, never near one.
#: highest integer rate (control, action, state, camera), Hz
MAX_RATE_HZ = 10_000
#: System 2 and stats rates: slowest and fastest, Hz
MIN_SLOW_HZ, MAX_SLOW_HZ = 0.01, 1000.0
#: stats are sent every control_hz / stats_hz ticks: at least this many ticks apart
MIN_TICKS_PER_STATS = 10
#: the control loop spins for at most this fraction of its period
MAX_SPIN_FRACTION = 0.5
#: the robot's command watchdog: at least this many control periods, at most this long (ms)
MIN_TIMEOUT_PERIODS, MAX_COMMAND_TIMEOUT_MS = 2, 1000.0
#: the stale-latent limit covers at least this many periods of System 2 at its slowest rate
MIN_STALE_PERIODS = 2
#: physics steps per control tick
MAX_STEPS_PER_TICK = 1000
#: camera image side (pixels), and model sizes (policy, latent)
MAX_IMAGE_SIDE = 4096
MAX_CHUNK_HORIZON, MAX_EULER_STEPS, MAX_WIDTH, MAX_LAYERS = 1024, 100, 8192, 64
MAX_LATENT_DIM, MAX_THREADS, MAX_CORE = 65_536, 256, 1023
#: latent age limits (ms): an hour
MAX_LATENT_MS = 3_600_000.0


class ConfigError(ValueError):
    """A robot config is invalid. The message names file, key and what was expected."""

    def __init__(self, path: Path | str, key: str, reason: str) -> None:
        self.path, self.key, self.reason = str(path), key, reason
        super().__init__(f"{path}: {key}: {reason}")


@dataclass(frozen=True)
class Joint:
    """One actuated joint: limits (rad, rad/s, N·m) and its default pose."""

    name: str
    group: str
    min: float
    max: float
    velocity: float
    effort: float
    default: float


@dataclass(frozen=True)
class Group:
    """A joint group (arm, hand, …): gains, joint dynamics, acceleration limit and ownership."""

    name: str
    controlled: bool
    kp: float
    kd: float
    armature: float
    damping: float
    accel: float
    joints: tuple[str, ...]


@dataclass(frozen=True)
class Rates:
    """Loop rates in Hz; derived periods and ratios are checked at load time."""

    control_hz: int
    action_hz: int
    state_hz: int
    camera_hz: int
    system2_min_hz: float
    system2_max_hz: float
    system2_target_hz: float
    stats_hz: float

    @property
    def ticks_per_action(self) -> int:
        return self.control_hz // self.action_hz

    @property
    def control_period_ns(self) -> int:
        return 1_000_000_000 // self.control_hz


@dataclass(frozen=True)
class PolicyConfig:
    """System 1's flow-matching policy: chunking, integration steps and inference form."""

    chunk_horizon: int
    euler_steps: int
    replan_below: int
    precision: str
    threads: int
    width: int
    layers: int
    heads: int
    checkpoint: Path | None
    #: after a new instruction, chunks are planned in settling mode for this long
    #: (`dualsys.system1.chunks.plan_next`); 0 = never
    switch_settle_ms: float = 1000.0


@dataclass(frozen=True)
class System2Config:
    """System 2's encoder choice and latent size."""

    encoder: str
    latent_dim: int
    checkpoint: Path | None
    device: str
    max_instruction_chars: int
    default_instruction: str
    model_dir: Path | None = None
    phrasings: Path | None = None  # the fusion head's training phrasings: grounding bank
    grounding_temperature: float = 0.02  # softmax temperature of the grounding; 0 = off


@dataclass(frozen=True)
class Budgets:
    """Timing budgets every run is judged against."""

    miss_rate: float
    max_consecutive_misses: int
    latent_age_p99_ms: float
    latent_stale_ms: float
    latent_dead_ms: float
    command_timeout_ms: float
    spin_margin_us: int


@dataclass(frozen=True)
class Cores:
    """CPU placement of each process (core indices)."""

    system2: int
    robot: int
    system1: int


@dataclass(frozen=True)
class Camera:
    """A camera the simulation renders and System 2 consumes."""

    name: str
    width: int
    height: int
    fovy: float


@dataclass(frozen=True)
class SimConfig:
    """The MuJoCo simulation of the embodiment; `scene` names its scene file (dualsys/scene.py:
    a path ending in .toml relative to the config, a shipped robot's scene name, or "none")."""

    model: str
    timestep: float
    fixed_base: bool
    scene: str


@dataclass(frozen=True)
class SecurityConfig:
    """Optional ZeroMQ CURVE on tcp:// links (`[security]`; see dualsys/bus/curve.py).

    keys_dir holds one certificate pair per key role (ROLE.key public, ROLE.key_secret
    owner-only; roles robot, system2, operator, stats: dualsys/bus/roles.py), made by
    `dualsys keys generate`. Each link admits only the public keys of the roles allowed on it:
    keys_dir/ROLE.key, or with `authorized_dir` (a directory inside keys_dir) every
    authorized_dir/ROLE/*.key. A tcp:// link with curve off is refused at load unless
    `allow_insecure_tcp` (then every process start warns).
    """

    curve: bool = False
    keys_dir: Path | None = None
    authorized_dir: str = ""
    allow_insecure_tcp: bool = False


@dataclass(frozen=True)
class RobotConfig:
    """A whole embodiment config, validated."""

    path: Path
    name: str
    description: str
    driver: str
    rates: Rates
    policy: PolicyConfig
    system2: System2Config
    budgets: Budgets
    cores: Cores
    endpoints: dict[str, str]
    cameras: tuple[Camera, ...]
    sim: SimConfig
    groups: dict[str, Group]
    joints: tuple[Joint, ...]
    security: SecurityConfig = SecurityConfig()
    #: `section.key=value` overrides applied on top of the file (`dualsys up --set`)
    overrides: tuple[str, ...] = ()
    #: `[task] pack`: the registry name of the robot's task pack (`dualsys.tasks`): its scripted
    #: expert, scoring and lead-ins; "" = none. Only the learning wing reads it.
    task_pack: str = ""

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    @property
    def controlled_indices(self) -> np.ndarray:
        """Indices (into the full joint vector) of the joints System 1's policy drives."""
        return np.array(
            [i for i, j in enumerate(self.joints) if self.groups[j.group].controlled],
            dtype=np.int64,
        )

    def limits(self) -> dict[str, np.ndarray]:
        """Per-joint limit arrays (float64, joint order): min, max, velocity, accel, default."""
        return {
            "min": np.array([j.min for j in self.joints]),
            "max": np.array([j.max for j in self.joints]),
            "velocity": np.array([j.velocity for j in self.joints]),
            "effort": np.array([j.effort for j in self.joints]),
            "accel": np.array([self.groups[j.group].accel for j in self.joints]),
            "default": np.array([j.default for j in self.joints]),
        }

    def endpoint(self, name: str, run_dir: str | Path) -> str:
        """The endpoint of a link (ZeroMQ, or a shm:// slot), with {run} replaced by the run
        directory."""
        return self.endpoints[name].replace("{run}", str(run_dir))


# --------------------------------------------------------------------------- reading helpers


class _Table:
    """A TOML table being consumed: typed getters, and unknown keys reported at the end."""

    def __init__(self, path: Path, prefix: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, prefix, f"expected a table, got {type(data).__name__}")
        self.path, self.prefix, self.data, self.used = path, prefix, data, set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def raw(self, name: str, default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise ConfigError(self.path, self.key(name), "missing required key")
            return default
        return self.data[name]

    def _typed(self, name: str, types: tuple[type, ...], label: str, default: Any) -> Any:
        value = self.raw(name, default)
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(self.path, self.key(name), f"expected {label}, got a boolean")
        if not isinstance(value, types):
            raise ConfigError(
                self.path, self.key(name), f"expected {label}, got {type(value).__name__} {value!r}"
            )
        return value

    def str(self, name: str, default: Any = ...) -> str:
        return self._typed(name, (str,), "a string", default)

    def bool(self, name: str, default: Any = ...) -> bool:
        return self._typed(name, (bool,), "true or false", default)

    def int(
        self, name: str, default: Any = ..., lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self._typed(name, (int,), "an integer", default)
        if lo is not None and value < lo:
            raise ConfigError(
                self.path, self.key(name), f"expected an integer >= {lo}, got {value}"
            )
        if hi is not None and value > hi:
            raise ConfigError(
                self.path, self.key(name), f"expected an integer <= {hi}, got {value}"
            )
        return value

    def float(
        self,
        name: str,
        default: Any = ...,
        positive: bool = False,
        lo: float = -math.inf,
        hi: float = math.inf,
    ) -> float:
        value = float(self._typed(name, (int, float), "a number", default))
        if not math.isfinite(value):
            raise ConfigError(self.path, self.key(name), f"expected a finite number, got {value}")
        if positive and value <= 0:
            raise ConfigError(self.path, self.key(name), f"expected a number > 0, got {value}")
        if value < lo:
            raise ConfigError(self.path, self.key(name), f"expected a number >= {lo}, got {value}")
        if value > hi:
            raise ConfigError(self.path, self.key(name), f"expected a number <= {hi}, got {value}")
        return value

    def table(self, name: str) -> _Table:
        return _Table(self.path, self.key(name), self.raw(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            key = self.key(unknown[0])
            near = difflib.get_close_matches(unknown[0], sorted(self.used), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(self.path, key, f"unknown key{hint}")


def _resolve(t: _Table, name: str, value: str, base: Path) -> Path:
    """base / value, resolved; an unusable path (e.g. a NUL byte) is a ConfigError."""
    try:
        return (base / value).resolve()
    except (ValueError, OSError) as exc:
        raise ConfigError(t.path, t.key(name), f"not a usable path {value!r}: {exc}") from None


def _stays_inside(path: Path, key: str, value: str) -> None:
    """A relative path may not climb out of the config's directory ("../x"); absolute is fine.

    The test is on the text (normalised), so a config cannot point a relative name at files
    elsewhere by stacking "..". A path that must live elsewhere is written absolute.
    """
    if os.path.isabs(value):
        return
    parts = Path(os.path.normpath(value)).parts
    if parts and parts[0] == "..":
        raise ConfigError(
            path,
            key,
            f"relative path {value!r} leaves the config's directory; write it absolute",
        )


def _dir(t: _Table, name: str, value: str, base: Path) -> Path | None:
    """An optional directory named relative to the config (or absolute); "" is None."""
    if not value:
        return None
    _stays_inside(t.path, t.key(name), value)
    return _resolve(t, name, value, base)


def _checkpoint(t: _Table, name: str, base: Path) -> Path | None:
    value = t.str(name, "")
    if not value:
        return None
    _stays_inside(t.path, t.key(name), value)
    path = _resolve(t, name, value, base)
    if not path.exists():
        # a relative path not found beside the config falls back to the shipped robots/ dir,
        # so a copy of robots/gr1.toml elsewhere still finds robots/gr1/*.safetensors
        shipped = _resolve(t, name, value, ROBOTS_DIR)
        if Path(value).is_absolute() or not shipped.exists():
            raise ConfigError(t.path, t.key(name), f"file {path} does not exist")
        return shipped
    return path


# --------------------------------------------------------------------------- sections


def _rates(t: _Table) -> Rates:
    r = Rates(
        control_hz=t.int("control_hz", lo=1, hi=MAX_RATE_HZ),
        action_hz=t.int("action_hz", lo=1, hi=MAX_RATE_HZ),
        state_hz=t.int("state_hz", lo=1, hi=MAX_RATE_HZ),
        camera_hz=t.int("camera_hz", lo=1, hi=MAX_RATE_HZ),
        system2_min_hz=t.float("system2_min_hz", lo=MIN_SLOW_HZ, hi=MAX_SLOW_HZ),
        system2_max_hz=t.float("system2_max_hz", lo=MIN_SLOW_HZ, hi=MAX_SLOW_HZ),
        system2_target_hz=t.float("system2_target_hz", lo=MIN_SLOW_HZ, hi=MAX_SLOW_HZ),
        stats_hz=t.float("stats_hz", positive=True),
    )
    t.done()
    # the control loop sends Stats every control_hz / stats_hz ticks; faster than every
    # MIN_TICKS_PER_STATS ticks the stats work crowds the tick it shares the thread with
    stats_max = r.control_hz / MIN_TICKS_PER_STATS
    if not MIN_SLOW_HZ <= r.stats_hz <= stats_max:
        raise ConfigError(
            t.path,
            t.key("stats_hz"),
            f"must lie in [{MIN_SLOW_HZ}, control_hz / {MIN_TICKS_PER_STATS}] = "
            f"[{MIN_SLOW_HZ}, {stats_max:g}] Hz (a rate the loops can serve), got {r.stats_hz}",
        )
    if r.control_hz % r.action_hz:
        raise ConfigError(
            t.path,
            t.key("action_hz"),
            f"control_hz ({r.control_hz}) must be a whole multiple of action_hz ({r.action_hz})",
        )
    if 1_000_000_000 % r.control_hz:
        raise ConfigError(
            t.path, t.key("control_hz"), "must divide 1e9 so the period is a whole number of ns"
        )
    if r.system2_min_hz > r.system2_max_hz:
        raise ConfigError(
            t.path, t.key("system2_min_hz"), f"must be <= system2_max_hz ({r.system2_max_hz})"
        )
    if not r.system2_min_hz <= r.system2_target_hz <= r.system2_max_hz:
        raise ConfigError(
            t.path,
            t.key("system2_target_hz"),
            f"must lie in [system2_min_hz, system2_max_hz] = "
            f"[{r.system2_min_hz}, {r.system2_max_hz}], got {r.system2_target_hz}",
        )
    if r.camera_hz < r.system2_max_hz:
        raise ConfigError(
            t.path, t.key("camera_hz"), f"must be >= system2_max_hz ({r.system2_max_hz})"
        )
    return r


def _policy(t: _Table, base: Path) -> PolicyConfig:
    p = PolicyConfig(
        chunk_horizon=t.int("chunk_horizon", lo=2, hi=MAX_CHUNK_HORIZON),
        euler_steps=t.int("euler_steps", lo=1, hi=MAX_EULER_STEPS),
        replan_below=t.int("replan_below", lo=1),
        precision=t.str("precision"),
        threads=t.int("threads", 1, lo=1, hi=MAX_THREADS),
        width=t.int("width", lo=8, hi=MAX_WIDTH),
        layers=t.int("layers", lo=1, hi=MAX_LAYERS),
        heads=t.int("heads", lo=1),
        checkpoint=_checkpoint(t, "checkpoint", base),
        switch_settle_ms=t.float("switch_settle_ms", 1000.0, lo=0.0),
    )
    t.done()
    if p.precision not in PRECISIONS:
        raise ConfigError(t.path, t.key("precision"), f"expected one of {PRECISIONS}")
    if p.replan_below >= p.chunk_horizon:
        raise ConfigError(
            t.path, t.key("replan_below"), f"must be < chunk_horizon ({p.chunk_horizon})"
        )
    if p.width % p.heads:
        raise ConfigError(t.path, t.key("heads"), f"must divide width ({p.width})")
    return p


def _system2(t: _Table, base: Path) -> System2Config:
    model_dir = t.str("model_dir", "")
    s = System2Config(
        encoder=t.str("encoder"),
        latent_dim=t.int("latent_dim", lo=1, hi=MAX_LATENT_DIM),
        checkpoint=_checkpoint(t, "checkpoint", base),
        device=t.str("device", "cpu"),
        max_instruction_chars=t.int("max_instruction_chars", 512, lo=1),
        default_instruction=t.str("default_instruction", "stand still"),
        model_dir=_dir(t, "model_dir", model_dir, base),
        phrasings=_checkpoint(t, "phrasings", base),
        grounding_temperature=t.float("grounding_temperature", 0.02, lo=0.0),
    )
    t.done()
    return s


def _budgets(t: _Table, rates: Rates) -> Budgets:
    b = Budgets(
        miss_rate=t.float("miss_rate", lo=0.0),
        max_consecutive_misses=t.int("max_consecutive_misses", lo=1),
        latent_age_p99_ms=t.float("latent_age_p99_ms", positive=True, hi=MAX_LATENT_MS),
        latent_stale_ms=t.float("latent_stale_ms", positive=True, hi=MAX_LATENT_MS),
        latent_dead_ms=t.float("latent_dead_ms", positive=True, hi=MAX_LATENT_MS),
        command_timeout_ms=t.float("command_timeout_ms", positive=True),
        spin_margin_us=t.int("spin_margin_us", lo=0),
    )
    t.done()
    if b.miss_rate >= 1:
        raise ConfigError(t.path, t.key("miss_rate"), "expected a fraction of ticks in [0, 1)")
    period_ms = 1000.0 / rates.control_hz
    # the loop sleeps until spin_margin before each deadline and spins the rest: a margin near
    # the period turns the loop into a busy wait that starves the policy process on its core
    spin_max_us = int(MAX_SPIN_FRACTION * period_ms * 1000)
    if b.spin_margin_us > spin_max_us:
        raise ConfigError(
            t.path,
            t.key("spin_margin_us"),
            f"must be <= {MAX_SPIN_FRACTION:g} of the control period "
            f"({spin_max_us} us at {rates.control_hz} Hz), got {b.spin_margin_us}",
        )
    # the robot's watchdog: shorter than two periods trips on one late tick; longer than
    # MAX_COMMAND_TIMEOUT_MS lets a dead controller's last command drive the robot too long
    timeout_min = MIN_TIMEOUT_PERIODS * period_ms
    if not timeout_min <= b.command_timeout_ms <= MAX_COMMAND_TIMEOUT_MS:
        raise ConfigError(
            t.path,
            t.key("command_timeout_ms"),
            f"must lie in [{MIN_TIMEOUT_PERIODS} control periods, {MAX_COMMAND_TIMEOUT_MS:g}] = "
            f"[{timeout_min:g}, {MAX_COMMAND_TIMEOUT_MS:g}] ms, got {b.command_timeout_ms:g}",
        )
    # System 2 may legally run at system2_min_hz: a stale limit under two of its periods
    # makes System 1 hold between two on-time latents
    stale_min = MIN_STALE_PERIODS * 1000.0 / rates.system2_min_hz
    if b.latent_stale_ms < stale_min:
        raise ConfigError(
            t.path,
            t.key("latent_stale_ms"),
            f"must be >= {MIN_STALE_PERIODS} System 2 periods at system2_min_hz "
            f"({stale_min:g} ms at {rates.system2_min_hz:g} Hz), got {b.latent_stale_ms:g}",
        )
    if b.latent_dead_ms <= b.latent_stale_ms:
        raise ConfigError(
            t.path,
            t.key("latent_dead_ms"),
            f"must be > latent_stale_ms ({b.latent_stale_ms:g}), got {b.latent_dead_ms:g}",
        )
    return b


def _security(t: _Table, base: Path) -> SecurityConfig:
    keys_dir = t.str("keys_dir", "")
    authorized = t.str("authorized_dir", "")
    sec = SecurityConfig(
        curve=t.bool("curve", False),
        keys_dir=_resolve(t, "keys_dir", keys_dir, base) if keys_dir else None,
        authorized_dir=authorized,
        allow_insecure_tcp=t.bool("allow_insecure_tcp", False),
    )
    t.done()
    parts = Path(authorized).parts
    if authorized and (Path(authorized).is_absolute() or "\0" in authorized or ".." in parts):
        raise ConfigError(
            t.path, t.key("authorized_dir"), f"expected a path inside keys_dir, got {authorized!r}"
        )
    if sec.curve and sec.keys_dir is None:
        raise ConfigError(t.path, t.key("keys_dir"), "required when curve = true")
    if sec.curve and sec.allow_insecure_tcp:
        raise ConfigError(
            t.path, t.key("allow_insecure_tcp"), "contradicts curve = true; set only one of them"
        )
    return sec


def _tcp_needs_curve(path: Path, endpoints: dict[str, str], sec: SecurityConfig) -> None:
    """A tcp:// link without CURVE is refused unless the config allows it explicitly."""
    if sec.curve or sec.allow_insecure_tcp:
        return
    for name, value in endpoints.items():
        if value.startswith("tcp://"):
            raise ConfigError(
                path,
                f"endpoints.{name}",
                "tcp:// link without CURVE; enable [security] curve or set "
                "[security] allow_insecure_tcp = true",
            )


def _check_security_paths(path: Path, raw: Any) -> None:
    """[security] keys_dir written relative may not climb out of the config's directory."""
    value = raw.get("keys_dir") if isinstance(raw, dict) else None
    if isinstance(value, str) and value:
        _stays_inside(path, "security.keys_dir", value)


def _endpoints(t: _Table) -> dict[str, str]:
    out = {}
    for name in ENDPOINT_NAMES:
        value = t.str(name, SIM_ENDPOINTS.get(name, ...))
        if not value.startswith(("ipc://", "tcp://", "inproc://")):
            shm = value.startswith("shm://")
            only = f"; shm:// only for {', '.join(SLOT_ENDPOINTS)}" if shm else ""
            raise ConfigError(
                t.path, t.key(name), f"expected ipc://, tcp:// or inproc://, got {value!r}{only}"
            )
        out[name] = value
    for name, mirrors in SLOT_ENDPOINTS.items():  # optional same-machine fast paths
        value = t.str(name, "")
        if not value:
            continue
        if not value.startswith("shm://"):
            raise ConfigError(t.path, t.key(name), f"expected shm://PATH, got {value!r}")
        if not out[mirrors].startswith("ipc://"):
            raise ConfigError(
                t.path,
                t.key(name),
                f"a shm:// slot is same-machine, but endpoints.{mirrors} is {out[mirrors]!r} "
                f"(not ipc://): remove {name} when {mirrors} leaves this computer",
            )
        out[name] = value
    t.done()
    return out


def _groups_and_joints(path: Path, doc: _Table) -> tuple[dict[str, Group], tuple[Joint, ...]]:
    gt = doc.table("groups")
    jt = doc.table("joints")
    members: dict[str, list[str]] = {g: [] for g in gt.data}
    joints = []
    for name in jt.data:
        j = jt.table(name)
        joint = Joint(
            name=name,
            group=j.str("group"),
            min=j.float("min"),
            max=j.float("max"),
            velocity=j.float("velocity", positive=True),
            effort=j.float("effort", positive=True),
            default=j.float("default"),
        )
        j.done()
        if joint.group not in members:
            raise ConfigError(
                path, j.key("group"), f"unknown group {joint.group!r}; groups: {sorted(members)}"
            )
        if joint.min > joint.max:
            raise ConfigError(path, j.key("min"), f"min ({joint.min}) > max ({joint.max})")
        if not joint.min <= joint.default <= joint.max:
            raise ConfigError(
                path,
                j.key("default"),
                f"default {joint.default} outside limits [{joint.min}, {joint.max}]",
            )
        members[joint.group].append(name)
        joints.append(joint)
    if not joints:
        raise ConfigError(path, "joints", "expected at least one joint")
    groups = {}
    for name in gt.data:
        g = gt.table(name)
        groups[name] = Group(
            name=name,
            controlled=g.bool("controlled"),
            kp=g.float("kp", positive=True),
            kd=g.float("kd", lo=0.0),
            armature=g.float("armature", lo=0.0),
            damping=g.float("damping", lo=0.0),
            accel=g.float("accel", positive=True),
            joints=tuple(members[name]),
        )
        g.done()
        if not members[name]:
            raise ConfigError(path, g.prefix, "group has no joints")
    if not any(g.controlled for g in groups.values()):
        raise ConfigError(path, "groups", "no group has controlled = true")
    return groups, tuple(joints)


def _cameras(path: Path, doc: _Table) -> tuple[Camera, ...]:
    raw = doc.raw("cameras")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "cameras", "expected a non-empty array of tables [[cameras]]")
    out = []
    for i, item in enumerate(raw):
        c = _Table(path, f"cameras[{i}]", item)
        out.append(
            Camera(
                name=c.str("name"),
                width=c.int("width", lo=16, hi=MAX_IMAGE_SIDE),
                height=c.int("height", lo=16, hi=MAX_IMAGE_SIDE),
                fovy=c.float("fovy", positive=True, hi=179.0),
            )
        )
        c.done()
    return tuple(out)


#: environment variable carrying `--set` overrides to every process of a run
OVERRIDES_ENV = "DUALSYS_SET"
MAX_OVERRIDES = 32


def parse_overrides(path: Path, items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Parse `section.key=value` overrides (value in TOML syntax, or a bare string)."""
    if len(items) > MAX_OVERRIDES:
        raise ConfigError(path, "--set", f"{len(items)} overrides; at most {MAX_OVERRIDES}")
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(p.replace("_", "").isalnum() for p in parts):
            raise ConfigError(path, "--set", f"{item!r}: expected section.key=value")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out[".".join(parts)] = value
    return out


def env_overrides() -> list[str]:
    """The overrides a supervisor handed to this process (DUALSYS_SET, ';'-separated)."""
    raw = os.environ.get(OVERRIDES_ENV, "")
    return [item for item in raw.split(";") if item.strip()]


def rate_overrides(cfg: RobotConfig, control_hz: int) -> list[str]:
    """`--set` items that run `cfg`'s control loop at `control_hz` with its rate-bound budgets
    kept in time: the miss streak allowed before hold covers the same milliseconds, and the
    spin margin stays within 20% of the (shorter) period."""
    b = budgets_at(cfg, control_hz)
    return [
        f"rates.control_hz={control_hz}",
        f"budgets.spin_margin_us={b.spin_margin_us}",
        f"budgets.max_consecutive_misses={b.max_consecutive_misses}",
    ]


def budgets_at(cfg: RobotConfig, control_hz: int) -> Budgets:
    """`cfg`'s budgets with its control loop at `control_hz`, as `--control-hz` sets them
    (`rate_overrides`): the spin margin within 20% of the period, the miss streak covering the
    same milliseconds; the configured budgets at the configured rate."""
    if control_hz <= 0:
        raise ConfigError(cfg.path, "--control-hz", f"must be positive, got {control_hz}")
    b = cfg.budgets
    if control_hz == cfg.rates.control_hz:
        return b
    margin = min(b.spin_margin_us, int(1e6 / control_hz * 0.2))
    streak = max(1, round(b.max_consecutive_misses * control_hz / cfg.rates.control_hz))
    return replace(b, spin_margin_us=margin, max_consecutive_misses=streak)


def _apply_overrides(path: Path, data: dict[str, Any], items: list[str]) -> None:
    for key, value in parse_overrides(path, items).items():
        section, name = key.split(".")
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(path, "--set", f"{section} is not a table")
        table[name] = value


def read_toml(path: Path) -> dict:
    """The TOML document at `path`; ConfigError naming the file when unreadable or not TOML."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, "<file>", f"cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "<toml>", f"not valid TOML: {exc}") from None


def load(path: str | Path, overrides: list[str] | None = None) -> RobotConfig:
    """Load and validate one robot config file. Raises ConfigError naming file and key.

    `overrides` (`section.key=value`, default: $DUALSYS_SET) replace values of the file before
    validation, so an overridden config is checked like a written one.
    """
    path = Path(path)
    data = read_toml(path)
    items = env_overrides() if overrides is None else list(overrides)
    _apply_overrides(path, data, items)
    base = path.resolve().parent
    doc = _Table(path, "", data)
    robot = doc.table("robot")
    name, description = robot.str("name"), robot.str("description", "")
    driver = robot.str("driver", "mujoco")
    robot.done()
    rates = _rates(doc.table("rates"))
    policy = _policy(doc.table("policy"), base)
    system2 = _system2(doc.table("system2"), base)
    budgets = _budgets(doc.table("budgets"), rates)
    ct = doc.table("cores")
    cores = Cores(
        system2=ct.int("system2", lo=0, hi=MAX_CORE),
        robot=ct.int("robot", lo=0, hi=MAX_CORE),
        system1=ct.int("system1", lo=0, hi=MAX_CORE),
    )
    ct.done()
    endpoints = _endpoints(doc.table("endpoints"))
    cameras = _cameras(path, doc)
    st = doc.table("sim")
    sim = SimConfig(
        model=st.str("model"),
        timestep=st.float("timestep", positive=True),
        fixed_base=st.bool("fixed_base", True),
        scene=st.str("scene", "none"),
    )
    st.done()
    steps_per_tick = 1.0 / (sim.timestep * rates.control_hz)
    if (
        not math.isfinite(steps_per_tick)
        or abs(steps_per_tick - round(steps_per_tick)) > 1e-9
        or round(steps_per_tick) < 1
    ):
        raise ConfigError(
            path,
            "sim.timestep",
            f"1/control_hz must be a whole multiple of the physics timestep ({sim.timestep})",
        )
    if round(steps_per_tick) > MAX_STEPS_PER_TICK:
        raise ConfigError(
            path,
            "sim.timestep",
            f"{round(steps_per_tick)} physics steps per control tick; at most {MAX_STEPS_PER_TICK}",
        )
    if not sim.model.startswith("fourier:"):
        _stays_inside(path, "sim.model", sim.model)
    if sim.scene.endswith(".toml"):
        _stays_inside(path, "sim.scene", sim.scene)
    groups, joints = _groups_and_joints(path, doc)
    task_pack = ""
    if "task" in doc.data:
        tt = doc.table("task")
        task_pack = tt.str("pack")
        tt.done()
    security = _security(doc.table("security"), base) if "security" in doc.data else None
    _tcp_needs_curve(path, endpoints, security or SecurityConfig())
    _check_security_paths(path, doc.data.get("security"))
    doc.done()
    return RobotConfig(
        path=path.resolve(),
        name=name,
        description=description,
        driver=driver,
        rates=rates,
        policy=policy,
        system2=system2,
        budgets=budgets,
        cores=cores,
        endpoints=endpoints,
        cameras=cameras,
        sim=sim,
        groups=groups,
        joints=joints,
        security=security or SecurityConfig(),
        overrides=tuple(items),
        task_pack=task_pack,
    )


def available(robots_dir: Path = ROBOTS_DIR) -> list[Path]:
    """The robot config files shipped in `robots/`."""
    return sorted(robots_dir.glob("*.toml"))


def resolve(robot: str, robots_dir: Path = ROBOTS_DIR) -> Path:
    """Turn a `--robot` argument (a name in robots/ or a path to a TOML file) into a path."""
    candidate = Path(robot)
    if candidate.suffix == ".toml" or "/" in robot:
        if not candidate.exists():
            raise ConfigError(candidate, "<file>", "no such file")
        return candidate
    names = {p.stem: p for p in available(robots_dir)}
    if robot in names:
        return names[robot]
    near = difflib.get_close_matches(robot, list(names), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise ConfigError(
        robots_dir / f"{robot}.toml",
        "--robot",
        f"no robot named {robot!r} (known: {', '.join(sorted(names)) or 'none'}){hint}",
    )


def load_robot(robot: str, robots_dir: Path = ROBOTS_DIR) -> RobotConfig:
    """Load a robot by name (from robots/) or by path."""
    return load(resolve(robot, robots_dir))
