"""tcp links are authenticated or refused; CURVE keys have roles; key files are checked.

Real ZeroMQ sockets with CURVE over tcp loopback (127.0.0.1, ports picked by the kernel), keys
made by `dualsys keys generate`, configs written as TOML and loaded the way every process does.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from dualsys import config
from dualsys.bus.curve import (
    BusSecurity,
    CurveConfig,
    CurveError,
    generate,
    load_pair,
    start_authenticator,
)
from dualsys.bus.messages import Instruction, Latent, Stats
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.cli import main as cli_main
from tests.reliability.fuzz_cases import GR1_DATA, dump_toml

ROOT = Path(__file__).resolve().parents[2]
REFUSAL = (
    "endpoints.latent: tcp:// link without CURVE; enable [security] curve or set "
    "[security] allow_insecure_tcp = true"
)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    assert cli_main(["keys", "generate", "--out", str(d)]) == 0
    return d


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.term()


def _write(tmp_path: Path, security: dict | None, **endpoints: str) -> Path:
    data = copy.deepcopy(GR1_DATA)
    data["endpoints"].update(endpoints)
    if "latent" in endpoints:  # a latent link off this computer has no same-machine slot
        data["endpoints"].pop("latent_local", None)
    if security is not None:
        data["security"] = security
    path = tmp_path / "secured.toml"
    path.write_text(dump_toml(data))
    return path


def _tcp_config(tmp_path: Path, keys: Path, **security) -> config.RobotConfig:
    # configured endpoints name the links; the tests bind their sockets on free ports
    links = {
        n: f"tcp://127.0.0.1:{i + 1}" for i, n in enumerate(("latent", "instruction", "stats"))
    }
    return config.load(
        _write(tmp_path, {"curve": True, "keys_dir": str(keys), **security}, **links)
    )


def _bound(sock_owner) -> str:
    return sock_owner.sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def _heard(sub: Subscriber, pubs: list[Publisher], make, seconds: float = 1.0) -> set[str]:
    """Sources of the messages `sub` receives while every publisher sends for `seconds`."""
    heard: set[str] = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for p in pubs:
            p.send(make(p))
        while (msg := sub.recv(timeout_ms=5)) is not None:
            heard.add(msg.header.source)
    return heard


# ----------------------------------------------------------------------------- tcp refused


def test_tcp_without_curve_fails_check_naming_the_key(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, None, latent="tcp://127.0.0.1:5611")
    assert cli_main(["check", str(path)]) == 2
    assert f"{path}: {REFUSAL}" in capsys.readouterr().err
    with pytest.raises(config.ConfigError, match="endpoints.latent: tcp:// link without CURVE"):
        config.load(path)  # the loader every process runs with refuses it too
    # and a real process start (`dualsys say`) stops at load with the same message, exit 2
    argv = [sys.executable, "-m", "dualsys.cli", "say", "--robot", str(path), "hi"]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and REFUSAL in proc.stderr, proc.stderr


def test_insecure_tcp_only_when_allowed_and_warned_at_start(tmp_path: Path, capsys) -> None:
    security = {"allow_insecure_tcp": True}
    path = _write(
        tmp_path, security, latent="tcp://127.0.0.1:5611", instruction="tcp://127.0.0.1:5612"
    )
    assert cli_main(["check", str(path)]) == 0
    assert (
        "allow_insecure_tcp = true: the tcp:// links latent, instruction" in capsys.readouterr().err
    )
    # every process start warns: `dualsys say` here (nothing listens, so it times out: exit 1)
    argv = [sys.executable, "-m", "dualsys.cli", "say", "--robot", str(path), "--timeout", "0.3"]
    proc = subprocess.run([*argv, "hi"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "dualsys: warning:" in proc.stderr and "allow_insecure_tcp = true" in proc.stderr
    assert "neither authenticated nor encrypted" in proc.stderr
    path = _write(tmp_path, {"curve": True, "keys_dir": "/k", "allow_insecure_tcp": True})
    with pytest.raises(config.ConfigError, match="security.allow_insecure_tcp: contradicts curve"):
        config.load(path)


# ----------------------------------------------------------------------------- roles


def test_robot_key_cannot_publish_to_a_socket_that_accepts_only_system2(ctx, keys: Path) -> None:
    """ZAP checks which public key may connect to which socket (the socket's ZAP domain)."""
    auth = start_authenticator(ctx, {"latent": [load_pair(keys, "system2", secret=False).public]})
    robot_pair = load_pair(keys, "robot", secret=True)
    server = CurveConfig(server=robot_pair, domain="latent")
    sub = Subscriber(ctx, "tcp://127.0.0.1:*", (Latent,), bind=True, latest=False, curve=server)
    ep = _bound(sub)

    def client(role: str) -> CurveConfig:
        return CurveConfig(
            client=load_pair(keys, role, secret=True), server_public=robot_pair.public
        )

    pubs = [
        Publisher(ctx, ep, "robot", bind=False, curve=client("robot")),
        Publisher(ctx, ep, "system2", bind=False, curve=client("system2")),
    ]
    try:
        heard = _heard(sub, pubs, lambda p: Latent(vector=np.ones(4, np.float32)))
        assert heard == {"system2"}, heard  # the robot's key never got a message through
    finally:
        for s in [*pubs, sub]:
            s.close()
        auth.stop()


def test_each_link_admits_only_its_roles(ctx, keys: Path, tmp_path: Path) -> None:
    """Through BusSecurity and a config: instructions only from the operator key, stats only
    from the stats key, latents only from a server holding the system2 key."""
    cfg = _tcp_config(tmp_path, keys)
    s2 = BusSecurity(ctx, cfg, role="system2")
    sup = BusSecurity(ctx, cfg)  # the robot computer's supervisor binds stats
    operator = BusSecurity(ctx, cfg, role="operator", binds=False)
    ins = Subscriber(
        ctx,
        "tcp://127.0.0.1:*",
        (Instruction,),
        bind=True,
        latest=False,
        curve=s2.curve(cfg.endpoints["instruction"], bind=True),
    )
    stats = Subscriber(
        ctx,
        "tcp://127.0.0.1:*",
        (Stats,),
        bind=True,
        latest=False,
        curve=sup.curve(cfg.endpoints["stats"], bind=True),
    )
    s2_public = load_pair(keys, "system2", secret=False).public
    robot_public = load_pair(keys, "robot", secret=False).public

    def key(role: str, server: bytes) -> CurveConfig:
        return CurveConfig(client=load_pair(keys, role, secret=True), server_public=server)

    ins_pubs = [
        Publisher(ctx, _bound(ins), "robot", bind=False, curve=key("robot", s2_public)),
        Publisher(ctx, _bound(ins), "stats", bind=False, curve=key("stats", s2_public)),
        Publisher(
            ctx,
            _bound(ins),
            "operator",
            bind=False,
            curve=operator.curve(_bound(ins), bind=False, link="instruction"),
        ),
    ]
    stats_pubs = [
        Publisher(ctx, _bound(stats), "system2", bind=False, curve=key("system2", robot_public)),
        Publisher(
            ctx,
            _bound(stats),
            "stats",
            bind=False,
            curve=s2.curve(_bound(stats), bind=False, link="stats"),  # System 2 uses stats key
        ),
    ]
    pubs = ins_pubs + stats_pubs
    try:
        end = time.monotonic() + 1.0
        heard_ins: set[str] = set()
        heard_stats: set[str] = set()
        while time.monotonic() < end:
            for p in ins_pubs:
                p.send(Instruction(text="wave", id=1))
            for p in stats_pubs:
                p.send(Stats(values={"x": 1.0}))
            while (m := ins.recv(timeout_ms=5)) is not None:
                heard_ins.add(m.header.source)
            while (m := stats.recv(timeout_ms=0)) is not None:
                heard_stats.add(m.header.source)
        assert heard_ins == {"operator"}, heard_ins
        assert heard_stats == {"stats"}, heard_stats
    finally:
        for s in [*pubs, ins, stats]:
            s.close()
        s2.close()
        sup.close()
    # a role may neither connect to nor serve a link that is not its own
    with pytest.raises(CurveError, match="role 'operator' may not connect to the state link"):
        operator.curve("tcp://127.0.0.1:9", bind=False, link="state")
    with pytest.raises(CurveError, match="role 'robot' may not bind the latent link"):
        sup.curve(cfg.endpoints["latent"], bind=True)


def test_robot_key_cannot_stand_in_for_system2_latents(ctx, keys: Path, tmp_path: Path) -> None:
    """A latent publisher holding the robot key is not heard by System 1 (it pins system2).

    The impostor's context runs no ZAP handler, so only the server-key check can stop it."""
    cfg = _tcp_config(tmp_path, keys)
    robot = BusSecurity(ctx, cfg, binds=False)  # connects only: no ZAP handler on ctx
    fake = Publisher(
        ctx,
        "tcp://127.0.0.1:*",
        "fake",
        curve=CurveConfig(server=load_pair(keys, "robot", secret=True)),
    )
    s2_ctx = zmq.Context()
    s2 = BusSecurity(s2_ctx, cfg, role="system2")
    real = Publisher(
        s2.ctx, "tcp://127.0.0.1:*", "system2", curve=s2.curve(cfg.endpoints["latent"], bind=True)
    )
    subs = {
        name: Subscriber(
            ctx,
            _bound(p),
            (Latent,),
            latest=False,
            curve=robot.curve(_bound(p), bind=False, link="latent"),
        )
        for name, p in (("fake", fake), ("real", real))
    }
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            for p in (fake, real):
                p.send(Latent(vector=np.ones(4, np.float32)))
            for s in subs.values():
                s.recv_latest()
            time.sleep(0.005)
        assert subs["fake"].received == 0 and subs["real"].received > 20, {
            k: s.received for k, s in subs.items()
        }
    finally:
        for s in [*subs.values(), fake, real]:
            s.close()
        s2.close()
        s2_ctx.term()


def test_keys_generate_makes_role_pairs_and_says_where_they_go(tmp_path: Path, capsys) -> None:
    out = tmp_path / "k"
    assert cli_main(["keys", "generate", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for role in ("robot", "system2", "operator", "stats"):
        assert (out / f"{role}.key").is_file()
        assert (out / f"{role}.key_secret").stat().st_mode & 0o777 == 0o600
    publics = {
        load_pair(out, r, secret=False).public for r in ("robot", "system2", "operator", "stats")
    }
    assert len(publics) == 4  # distinct keys per role
    lines = {line.split(":")[0].strip(): line for line in text.splitlines() if ":" in line}
    robot = next(v for k, v in lines.items() if k.startswith("robot computer"))
    gpu = next(v for k, v in lines.items() if k.startswith("System 2"))
    laptop = next(v for k, v in lines.items() if k.startswith("operator laptop"))
    assert "robot.key_secret" in robot and "system2.key_secret" not in robot
    assert "system2.key_secret" in gpu and "robot.key_secret" not in gpu
    assert laptop.split(": ", 1)[1] == "operator.key_secret system2.key", laptop


# ----------------------------------------------------------------------------- key files


def test_unprotected_key_files_and_dirs_are_refused(ctx, keys: Path, tmp_path: Path) -> None:
    cfg = _tcp_config(tmp_path, keys)
    cases = [
        (keys / "robot.key_secret", 0o640, "robot.key_secret: secret key readable or writable"),
        (keys / "system2.key", 0o666, "system2.key: file writable by group or others"),
        (keys, 0o777, "keys: directory writable by group or others"),
    ]
    for path, mode, message in cases:
        old = path.stat().st_mode & 0o777
        path.chmod(mode)
        try:
            with pytest.raises(config.ConfigError, match=f"secured.toml: security: .*{message}"):
                BusSecurity(ctx, cfg)
        finally:
            path.chmod(old)
    BusSecurity(ctx, cfg)  # all restored: accepted


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_key_file_owned_by_another_user_is_refused(ctx, keys: Path, tmp_path: Path) -> None:
    cfg = _tcp_config(tmp_path, keys)
    os.chown(keys / "operator.key", 54321, 54321)
    with pytest.raises(config.ConfigError, match="operator.key: owned by uid 54321"):
        BusSecurity(ctx, cfg, role="system2")


def test_authorized_dir_stays_inside_keys_dir(ctx, keys: Path, tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="security.authorized_dir: expected a path inside"):
        _tcp_config(tmp_path, keys, authorized_dir="../elsewhere")
    outside = tmp_path / "outside"
    (outside / "operator").mkdir(parents=True)
    (keys / "allowed").symlink_to(outside)
    cfg = _tcp_config(tmp_path, keys, authorized_dir="allowed")
    with pytest.raises(config.ConfigError, match="resolves to .*outside, outside"):
        BusSecurity(ctx, cfg, role="system2")


def test_authorized_dir_lists_the_keys_of_each_role(ctx, keys: Path, tmp_path: Path) -> None:
    """keys_dir/allowed/operator/*.key admits a second laptop; operator.key is not listed."""
    for role in ("robot", "operator"):
        (keys / "allowed" / role).mkdir(parents=True)
    generate(keys / "allowed" / "operator", "laptop2")
    (keys / "allowed" / "operator" / "laptop2.key_secret").rename(keys / "laptop2.key_secret")
    cfg = _tcp_config(tmp_path, keys, authorized_dir="allowed")
    s2 = BusSecurity(ctx, cfg, role="system2")
    ins = Subscriber(
        ctx,
        "tcp://127.0.0.1:*",
        (Instruction,),
        bind=True,
        latest=False,
        curve=s2.curve(cfg.endpoints["instruction"], bind=True),
    )
    server = load_pair(keys, "system2", secret=False).public
    pubs = [
        Publisher(
            ctx,
            _bound(ins),
            name,
            bind=False,
            curve=CurveConfig(client=load_pair(keys, name, secret=True), server_public=server),
        )
        for name in ("operator", "laptop2")
    ]
    try:
        heard = _heard(ins, pubs, lambda p: Instruction(text="wave", id=1))
        assert heard == {"laptop2"}, heard
    finally:
        for s in [*pubs, ins]:
            s.close()
        s2.close()
