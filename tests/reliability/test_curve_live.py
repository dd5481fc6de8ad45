"""The live system over CURVE: every link tcp:// on loopback with `[security] curve = true`.

`dualsys up` (robot, System 2, policy, control, recorder, supervisor) runs on a config copy
whose endpoints are all tcp://127.0.0.1 and whose keys come from `dualsys keys generate`.
While it runs, the test listens to the latent link without a key and with a key the system
does not know, and sends instructions to System 2 the same two ways and with the robot's key
(a role that may not instruct): none of it is heard. With the robot key, latents arrive, and
`dualsys say` (operator key) gets its instruction adopted. Afterwards
the summaries show System 1 at 200 Hz on chunks and latents that flowed over CURVE, and the
recorder (a CURVE client too) holds every topic.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from dualsys import config
from dualsys.bus.curve import BusSecurity, CurveConfig, generate, load_pair
from dualsys.bus.messages import Instruction, Latent, Stats
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.cli import main as cli_main
from dualsys.config import ConfigError
from dualsys.supervisor import STATUS_SOCKET
from dualsys.system2.client import send_instruction
from dualsys.testing.ports import free_ports
from tests.reliability.fuzz_cases import GR1_DATA, dump_toml

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 6.0
ROGUE_TEXT = "rogue words"


def _secure_config(tmp_path: Path) -> tuple[config.RobotConfig, Path]:
    keys = tmp_path / "keys"
    assert cli_main(["keys", "generate", "--out", str(keys)]) == 0
    generate(keys, "rogue")
    data = copy.deepcopy(GR1_DATA)
    names = [n for n in data["endpoints"] if n != "latent_local"]  # tcp://: no slot
    ports = free_ports(len(names))
    data["endpoints"] = {n: f"tcp://127.0.0.1:{p}" for n, p in zip(names, ports, strict=True)}
    data["security"] = {"curve": True, "keys_dir": str(keys)}
    path = tmp_path / "gr1_curve.toml"
    path.write_text(dump_toml(data))
    return config.load(path), keys


def _wait_running(run_dir: Path, proc: subprocess.Popen, timeout_s: float) -> None:
    """Until the supervisor's status (ipc, local) shows the control loop ticking on latents."""
    ctx = zmq.Context()
    sub = Subscriber(ctx, f"ipc://{run_dir}/{STATUS_SOCKET}", (Stats,), latest=False)
    try:
        end = time.monotonic() + timeout_s
        while True:
            assert time.monotonic() < end, "the system did not come up over CURVE"
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            msg = sub.recv(timeout_ms=200)
            v = msg.values if msg is not None else {}
            if v.get("control.rate_hz", 0) > 150 and v.get("latent_age_ms", 1e9) < 1000:
                return
    finally:
        sub.close()
        ctx.term()


def _probe(cfg: config.RobotConfig, run_dir: Path, keys: Path, seconds: float) -> dict:
    """Listen on the latent link and talk to System 2 with no key, a rogue key, the right key."""
    ctx = zmq.Context()
    ep_lat, ep_ins = cfg.endpoint("latent", run_dir), cfg.endpoint("instruction", run_dir)
    server_public = load_pair(keys, "system2", secret=False).public
    rogue = CurveConfig(client=load_pair(keys, "rogue", secret=True), server_public=server_public)
    robot = CurveConfig(client=load_pair(keys, "robot", secret=True), server_public=server_public)
    good = BusSecurity(ctx, cfg, binds=False).curve(ep_lat, bind=False)
    subs = {
        "plain": Subscriber(ctx, ep_lat, (Latent,), latest=False),
        "rogue": Subscriber(ctx, ep_lat, (Latent,), latest=False, curve=rogue),
        "good": Subscriber(ctx, ep_lat, (Latent,), latest=False, curve=good),
    }
    pubs = [
        Publisher(ctx, ep_ins, "plain", bind=False),
        Publisher(ctx, ep_ins, "rogue", bind=False, curve=rogue),
        Publisher(ctx, ep_ins, "robot", bind=False, curve=robot),  # wrong role for instructions
    ]
    instructions: set[str] = set()
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for p in pubs:
                p.send(Instruction(text=ROGUE_TEXT, id=p.seq + 1))
            for s in subs.values():
                while (m := s.recv_nowait()) is not None:
                    instructions.add(m.instruction)
            time.sleep(0.02)
        got = {k: s.received for k, s in subs.items()}
    finally:
        for s in [*subs.values(), *pubs]:
            s.close()
        ctx.term()
    return {"received": got, "instructions": instructions}


@pytest.mark.slow
def test_live_system_requires_curve_keys(tmp_path: Path) -> None:
    cfg, keys = _secure_config(tmp_path)
    run_dir, mcap = tmp_path / "run", tmp_path / "run.mcap"
    argv = [sys.executable, "-m", "dualsys.cli", "up", "--robot", str(cfg.path), "--headless"]
    argv += ["--duration", str(SECONDS), "--untrained", "--record", str(mcap)]
    argv += ["--run-dir", str(run_dir)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_running(run_dir, proc, timeout_s=90)
        probe = _probe(cfg, run_dir, keys, 2.0)
        ident, adopted = send_instruction(cfg, run_dir, "wave hello", timeout_s=5.0)
        out = proc.communicate(timeout=90)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(json.dumps({"received": probe["received"], "say_adopted": adopted is not None}))
    assert proc.returncode == 0, out[-3000:]

    # a peer without the right key is never heard, in either direction
    got = probe["received"]
    assert got["good"] >= 10, got  # ~10 Hz for 2 s with the robot key
    assert got["plain"] == 0 and got["rogue"] == 0, got
    assert ROGUE_TEXT not in probe["instructions"], probe["instructions"]
    assert adopted is not None and adopted.instruction_id == ident  # `dualsys say` over CURVE

    # System 1 ran at 200 Hz on latents and chunks that crossed CURVE links
    ctl = json.loads((run_dir / "control.json").read_text())
    s2 = json.loads((run_dir / "system2.json").read_text())
    assert abs(ctl["rate_hz"] - cfg.rates.control_hz) < 0.01 * cfg.rates.control_hz, ctl
    assert ctl["chunks"] >= 10 and any(e["state"] == "run" for e in ctl["safe_state_events"])
    assert ctl["latent_age_ms"]["p50"] < cfg.budgets.latent_stale_ms
    assert s2["steps"] >= 5 * SECONDS
    rec = json.loads((run_dir / "recorder.json").read_text())
    for topic in ("state", "command", "camera", "latent", "chunk"):
        assert rec["messages"].get(topic, 0) > 0, rec


def test_bus_security_only_on_tcp_and_names_bad_keys(tmp_path: Path) -> None:
    cfg, keys = _secure_config(tmp_path)
    ctx = zmq.Context()
    try:
        sec = BusSecurity(ctx, cfg)
        assert sec.curve("ipc:///tmp/x.sock", bind=True) is None and sec.auth is None
        assert sec.curve(cfg.endpoint("latent", tmp_path), bind=False) is not None
        assert sec.auth is None  # connecting needs no authenticator
        assert sec.curve(cfg.endpoint("state", tmp_path), bind=True).server is not None
        assert sec.auth is not None  # the first binding CURVE socket started it
        sec.close()
        assert BusSecurity(ctx, config.load_robot("gr1")).curve("ipc://x", bind=True) is None
        (keys / "stats.key_secret").chmod(0o644)
        with pytest.raises(ConfigError, match=r"gr1_curve.toml: security: .*stats.key_secret"):
            BusSecurity(ctx, cfg)
        BusSecurity(ctx, cfg, connects=False)  # a binding-only process needs no stats secret
        BusSecurity(ctx, cfg, role="operator")  # `dualsys say` never talks to the supervisor
    finally:
        ctx.term()
