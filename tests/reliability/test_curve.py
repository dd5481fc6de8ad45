"""CURVE on off-board links: the right key is heard, a wrong or missing key never is.

Loopback tcp:// in one process, then across two network namespaces joined by a veth pair
(created here when running as root with `ip netns`; skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
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
from dualsys.bus.messages import Instruction, Latent
from dualsys.bus.roles import ROLES
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.cli import main as cli_main
from dualsys.config import SecurityConfig
from dualsys.rundir import make_run_dir
from dualsys.testing.netns import ADDR

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keys") / "k"
    assert cli_main(["keys", "generate", "--out", str(d)]) == 0
    generate(d, "rogue")
    return d


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.term()


def _client(keys: Path, name: str, server_public: bytes | None = None) -> CurveConfig:
    return CurveConfig(
        client=load_pair(keys, name, secret=True),
        server_public=server_public or load_pair(keys, "system2", secret=False).public,
    )


def _pump(pub: Publisher, subs: dict[str, Subscriber], seconds: float) -> dict[str, int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pub.send(Latent(vector=np.ones(4, np.float32)))
        for s in subs.values():
            s.recv_latest()
        time.sleep(0.005)
    return {k: s.received for k, s in subs.items()}


def test_key_files_are_owner_only_and_round_trip(keys: Path) -> None:
    assert keys.stat().st_mode & 0o777 == 0o700
    for name in (*ROLES, "rogue"):
        assert (keys / f"{name}.key_secret").stat().st_mode & 0o777 == 0o600
        pair = load_pair(keys, name, secret=True)
        assert len(pair.public) == 40 and len(pair.secret) == 40
        assert load_pair(keys, name, secret=False).public == pair.public
        assert b"secret" not in (keys / f"{name}.key").read_bytes().split(b"curve")[1]
    assert cli_main(["keys", "generate", "--out", str(keys), "--name", "robot"]) == 2  # no clobber


def test_unsafe_or_missing_keys_are_refused_by_name(keys: Path, tmp_path: Path) -> None:
    shutil.copy(keys / "robot.key_secret", tmp_path / "leaky.key_secret")
    os.chmod(tmp_path / "leaky.key_secret", 0o644)
    with pytest.raises(CurveError, match="leaky.key_secret: secret key readable or writable by"):
        load_pair(tmp_path, "leaky", secret=True)
    with pytest.raises(CurveError, match="nothere.key: no such key file"):
        load_pair(tmp_path, "nothere", secret=False)
    (tmp_path / "junk.key").write_text("not a certificate\n")
    with pytest.raises(CurveError, match="junk.key"):
        load_pair(tmp_path, "junk", secret=False)


def test_right_key_heard_wrong_or_no_key_never(ctx, keys: Path) -> None:
    auth = start_authenticator(ctx, {"latent": [load_pair(keys, "robot", secret=False).public]})
    server = CurveConfig(server=load_pair(keys, "system2", secret=True), domain="latent")
    pub = Publisher(ctx, "tcp://127.0.0.1:*", "s2", curve=server)
    ep = pub.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    rogue_public = load_pair(keys, "rogue", secret=False).public
    subs = {
        "good": Subscriber(ctx, ep, (Latent,), latest=False, curve=_client(keys, "robot")),
        # a key pair the server does not know, with the right server key: ZAP refuses it
        "rogue": Subscriber(ctx, ep, (Latent,), latest=False, curve=_client(keys, "rogue")),
        # the right client pair but the wrong server public key: the handshake fails
        "wrong_server": Subscriber(
            ctx, ep, (Latent,), latest=False, curve=_client(keys, "robot", rogue_public)
        ),
        "plain": Subscriber(ctx, ep, (Latent,), latest=False),  # no CURVE at all
    }
    try:
        got = _pump(pub, subs, 1.0)
        assert got["good"] > 50, got
        assert got["rogue"] == got["wrong_server"] == got["plain"] == 0, got
        # the server survived the refused peers: a new good client is still served
        late = Subscriber(ctx, ep, (Latent,), latest=False, curve=_client(keys, "robot"))
        subs["late"] = late
        assert _pump(pub, {"late": late}, 0.5)["late"] > 20
        assert sum(s.dropped_total for s in subs.values()) == 0  # refused, not garbled
    finally:
        for s in subs.values():
            s.close()
        pub.close()
        auth.stop()


def test_binding_subscriber_never_hears_a_rogue_publisher(ctx, keys: Path) -> None:
    """Instruction-style link: the server binds a SUB; only the right client's PUB is heard."""
    auth = start_authenticator(
        ctx, {"instruction": [load_pair(keys, "operator", secret=False).public]}
    )
    sub = Subscriber(
        ctx,
        "tcp://127.0.0.1:*",
        (Instruction,),
        bind=True,
        latest=False,
        curve=CurveConfig(server=load_pair(keys, "system2", secret=True), domain="instruction"),
    )
    ep = sub.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    rogue = Publisher(ctx, ep, "rogue", bind=False, curve=_client(keys, "rogue"))
    plain = Publisher(ctx, ep, "plain", bind=False)
    good = Publisher(ctx, ep, "say", bind=False, curve=_client(keys, "operator"))
    try:
        heard: list[str] = []
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            for p in (rogue, plain, good):
                p.send(Instruction(text=p.source, id=1))
            msg = sub.recv(timeout_ms=10)
            while msg is not None:
                heard.append(msg.header.source)
                msg = sub.recv(timeout_ms=0)
        assert heard and set(heard) == {"say"}, set(heard)
    finally:
        for s in (rogue, plain, good, sub):
            s.close()
        auth.stop()


def _tcp_config(tmp_path: Path, security: dict) -> config.RobotConfig:
    from tests.reliability.fuzz_cases import GR1_DATA, dump_toml

    data = dict(GR1_DATA, security=security)
    data["endpoints"] = dict(GR1_DATA["endpoints"], latent="tcp://127.0.0.1:5999")
    del data["endpoints"]["latent_local"]  # a tcp:// latent has no same-machine slot
    path = tmp_path / "gr1_tcp.toml"
    path.write_text(dump_toml(data))
    return config.load(path)


def test_security_table_drives_sockets(ctx, keys: Path, tmp_path: Path) -> None:
    cfg = _tcp_config(tmp_path, {"curve": True, "keys_dir": str(keys)})
    s2 = BusSecurity(ctx, cfg, role="system2")
    robot = BusSecurity(ctx, cfg, binds=False)
    assert s2.curve("ipc:///tmp/x.sock", bind=True) is None  # local links: no CURVE
    server = s2.curve("tcp://127.0.0.1:5999", bind=True)
    assert server.domain == "latent" and s2.auth is not None
    pub = Publisher(ctx, "tcp://127.0.0.1:*", "s2", curve=server)
    ep = pub.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    sub = Subscriber(
        ctx, ep, (Latent,), latest=False, curve=robot.curve(ep, bind=False, link="latent")
    )
    try:
        assert _pump(pub, {"s": sub}, 0.5)["s"] > 20
    finally:
        sub.close()
        pub.close()
        s2.close()
    with pytest.raises(config.ConfigError, match="none: keys_dir is not a directory"):
        BusSecurity(ctx, _tcp_config(tmp_path, {"curve": True, "keys_dir": str(keys / "none")}))


def test_security_section_in_robot_toml(tmp_path: Path, keys: Path) -> None:
    from tests.reliability.fuzz_cases import GR1_DATA, dump_toml  # checkpoint paths absolute

    assert config.load_robot("gr1").security == SecurityConfig()  # optional, off by default
    base = dump_toml(GR1_DATA)
    path = tmp_path / "gr1_secure.toml"
    path.write_text(base + f'[security]\ncurve = true\nkeys_dir = "{keys}"\n')
    sec = config.load(path).security
    assert sec.curve and sec.keys_dir == keys and not sec.allow_insecure_tcp
    path.write_text(base + "[security]\ncurve = true\n")
    with pytest.raises(config.ConfigError, match=r"gr1_secure.toml: security.keys_dir: required"):
        config.load(path)


def test_ipc_socket_files_in_run_dir_are_owner_only(ctx, tmp_path: Path) -> None:
    cfg = config.load_robot("gr1")
    run = make_run_dir(tmp_path / "run")
    pub = Publisher(ctx, cfg.endpoint("latent", run), "s2")
    sub = Subscriber(ctx, cfg.endpoint("stats", run), (Latent,), bind=True, latest=False)
    try:
        assert run.stat().st_mode & 0o777 == 0o700
        for name in ("latent", "stats"):
            sock = Path(cfg.endpoint(name, run)[len("ipc://") :])
            assert sock.stat().st_mode & 0o077 == 0, (name, oct(sock.stat().st_mode))
    finally:
        pub.close()
        sub.close()


# ----------------------------------------------------------------------------- namespaces


@pytest.mark.slow
def test_across_network_namespaces(netns, keys: Path) -> None:
    ep = f"tcp://{ADDR[0]}:5791"
    py = str(Path(sys.executable))
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def peer(ns: str, *args: str) -> subprocess.Popen:
        cmd = ["ip", "netns", "exec", ns, py, "-m", "tests.reliability.curve_peer", *args]
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)

    pub = peer(netns[0], "pub", ep, str(keys), "3.5")
    time.sleep(0.5)
    sub = peer(netns[1], "sub", ep, str(keys), "2")
    try:
        got = json.loads(sub.communicate(timeout=30)[0].strip().splitlines()[-1])
        sent = json.loads(pub.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        for p in (pub, sub):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert pub.returncode == 0 and sub.returncode == 0
    assert sent["sent"] > 100
    assert got["good"] > 50, got  # ~2 s of <= 100 Hz through the veth pair, with CURVE
    assert got["rogue"] == 0 and got["plain"] == 0, got
