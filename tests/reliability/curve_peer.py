"""A CURVE peer process for the network-namespace test (run with `ip netns exec NS ...`).

python -m tests.reliability.curve_peer pub ENDPOINT KEYS_DIR SECONDS
    binds a CURVE-server Publisher with the `system2` key (on ZAP domain "latent", admitting
    only the `robot` key) and
    publishes a Latent every 10 ms; prints {"sent": N, "auth": [...]} as JSON at the end.
python -m tests.reliability.curve_peer sub ENDPOINT KEYS_DIR SECONDS
    connects three Subscribers: the `robot` key, a `rogue` key, and no CURVE at all;
    prints {"good": N, "rogue": N, "plain": N} as JSON at the end.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import zmq

from dualsys.bus.curve import CurveConfig, load_pair, start_authenticator
from dualsys.bus.messages import Latent
from dualsys.bus.transport import Publisher, Subscriber


def client_config(keys: str, name: str) -> CurveConfig:
    """CurveConfig of a client using key pair `name` and System 2's public key."""
    return CurveConfig(
        client=load_pair(keys, name, secret=True),
        server_public=load_pair(keys, "system2", secret=False).public,
    )


def run_pub(endpoint: str, keys: str, seconds: float) -> dict:
    """Publish for `seconds`; returns counts."""
    ctx = zmq.Context()
    auth = start_authenticator(ctx, {"latent": [load_pair(keys, "robot", secret=False).public]})
    server = CurveConfig(server=load_pair(keys, "system2", secret=True), domain="latent")
    pub = Publisher(ctx, endpoint, "peer", curve=server)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pub.send(Latent(vector=np.arange(8, dtype=np.float32), step=pub.seq))
        time.sleep(0.01)
    out = {"sent": pub.sent}
    pub.close()
    auth.stop()
    ctx.term()
    return out


def run_sub(endpoint: str, keys: str, seconds: float) -> dict:
    """Receive for `seconds` on three subscribers; returns what each received."""
    ctx = zmq.Context()
    subs = {
        "good": Subscriber(
            ctx, endpoint, (Latent,), latest=False, curve=client_config(keys, "robot")
        ),
        "rogue": Subscriber(
            ctx, endpoint, (Latent,), latest=False, curve=client_config(keys, "rogue")
        ),
        "plain": Subscriber(ctx, endpoint, (Latent,), latest=False),
    }
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for s in subs.values():
            s.recv_latest()
        time.sleep(0.005)
    out = {k: s.received for k, s in subs.items()}
    for s in subs.values():
        s.close()
    ctx.term()
    return out


def main(argv: list[str]) -> int:
    """Entry point: pub|sub ENDPOINT KEYS_DIR SECONDS."""
    role, endpoint, keys, seconds = argv[0], argv[1], argv[2], float(argv[3])
    out = run_pub(endpoint, keys, seconds) if role == "pub" else run_sub(endpoint, keys, seconds)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
