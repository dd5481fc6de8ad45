"""Bus latency: dualsys PUB/SUB (msgpack, latest-value) vs a REQ/REP + pickle baseline.

One run, interleaved: a producer process publishes a 1536-float32 latent at 10 Hz on ipc:// and
tcp:// (dualsys Publisher, CONFLATE subscribers) and serves the same payload the way common VLA
inference servers do (ZeroMQ REQ/REP, pickled dict). The consumer measures, per message:
- pub/sub: send time (header, monotonic) -> decoded and validated in the consumer;
- REQ/REP: request sent -> reply unpickled (the consumer waits this long for every latent).
Writes benchmarks/results/bus.md.

    .venv/bin/python benchmarks/bus.py [--count 600]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import zmq

from dualsys.bus import Latent, Publisher, Subscriber
from dualsys.timing import Histogram

DIM = 1536
RATE_HZ = 10.0


def producer(ipc: str, tcp: str, rep: str, count: int) -> None:
    """Publish on ipc and tcp (staggered) and answer REQ/REP requests, until count rounds."""
    ctx = zmq.Context()
    pub_ipc = Publisher(ctx, ipc, "bench")
    pub_tcp = Publisher(ctx, tcp, "bench")
    srv = ctx.socket(zmq.REP)
    srv.setsockopt(zmq.LINGER, 0)
    srv.bind(rep)
    vec = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    period = int(1e9 / RATE_HZ)
    t_next = time.monotonic_ns() + 1_000_000_000  # let subscribers connect
    t_tcp = 0
    sent = 0
    while sent < count + 20:
        now = time.monotonic_ns()
        if now >= t_next:
            pub_ipc.send(Latent(vector=vec, step=sent))
            t_tcp = now + 30_000_000  # tcp 30 ms later: the paths never contend
            t_next += period
        if t_tcp and now >= t_tcp:
            pub_tcp.send(Latent(vector=vec, step=sent))
            sent += 1
            t_tcp = 0
        if srv.poll(1):  # the REP side is served promptly, never behind a sleep
            srv.recv()
            srv.send(pickle.dumps({"latent": vec, "t": time.monotonic_ns()}))
    for s in (pub_ipc.sock, pub_tcp.sock, srv):
        s.close(0)
    ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=600, help="messages per path (10 Hz)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bus.md"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="dualsys-bench-")
    ipc, tcp, rep = f"ipc://{tmp}/latent.sock", "tcp://127.0.0.1:25601", "tcp://127.0.0.1:25602"
    proc = mp.get_context("spawn").Process(target=producer, args=(ipc, tcp, rep, args.count))
    proc.start()
    ctx = zmq.Context()
    subs = {
        "ipc://": Subscriber(ctx, ipc, (Latent,), shapes={"latent": {"vector": (DIM,)}}),
        "tcp://": Subscriber(ctx, tcp, (Latent,), shapes={"latent": {"vector": (DIM,)}}),
    }
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 2000)
    req.connect(rep)
    hist = {"ipc://": Histogram(), "tcp://": Histogram(), "reqrep": Histogram()}
    # time the consumer spends inside the call that hands it a latent
    blocked = {"ipc://": Histogram(), "tcp://": Histogram(), "reqrep": hist["reqrep"]}
    poller = zmq.Poller()
    for s in subs.values():
        poller.register(s.sock, zmq.POLLIN)
    next_req = time.monotonic() + 1.265  # between the pub/sub sends
    print(f"bus benchmark: {args.count} latents per path at {RATE_HZ:g} Hz ...", flush=True)
    while min(h.count for h in hist.values()) < args.count:
        for sock, _ in poller.poll(10):
            for name, sub in subs.items():
                if sub.sock is sock:
                    t_call = time.monotonic_ns()
                    msg = sub.recv_latest()
                    if msg is not None and msg.step >= 3:
                        done_ns = time.monotonic_ns()
                        hist[name].record((done_ns - msg.header.t_mono_ns) / 1000)
                        blocked[name].record((done_ns - t_call) / 1000)
        if time.monotonic() >= next_req:
            t0 = time.monotonic_ns()
            req.send(b"get_latent")
            reply = pickle.loads(req.recv())  # the baseline's way; never do this on a network
            assert reply["latent"].shape == (DIM,)
            hist["reqrep"].record((time.monotonic_ns() - t0) / 1000)
            next_req += 1 / RATE_HZ
        done = hist["reqrep"].count
        if done and done % 100 == 0:
            print(f"  {done}/{args.count}", flush=True)
    proc.terminate()
    proc.join(5)
    write_table(args, hist, blocked)
    ctx.destroy(0)


def write_table(
    args: argparse.Namespace, hist: dict[str, Histogram], blocked: dict[str, Histogram]
) -> None:
    """Print and save the markdown table."""
    rows = [
        ("dualsys PUB/SUB, msgpack, CONFLATE, ipc://", "ipc://"),
        ("dualsys PUB/SUB, msgpack, CONFLATE, tcp://", "tcp://"),
        ("baseline REQ/REP + pickle, tcp:// (GR00T/LeRobot-style)", "reqrep"),
    ]
    base = hist["reqrep"].pct(50)
    lines = [
        f"### Bus latency: 1536-float32 latent at {RATE_HZ:g} Hz ({date.today()}, "
        f"{platform.node() or 'host'}, {os.cpu_count()} vCPU, `python benchmarks/bus.py "
        f"--count {args.count}`)",
        "",
        "Producer and consumer are separate processes; all three paths interleaved in one run. "
        "Latency: send to decoded+validated (pub/sub), request to unpickled reply (REQ/REP). "
        "Blocked: time inside the call that hands the consumer its latent (pub/sub: the "
        "non-blocking `recv_latest`, the latent already waiting; REQ/REP: the whole round trip, "
        "which a control loop would stall on).",
        "",
        "| path | n | p50 µs | p99 µs | p99.9 µs | max µs | p50 vs baseline "
        "| consumer blocked per latent p50 / p99 µs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, key in rows:
        h, b = hist[key], blocked[key]
        s = h.summary()
        wait = f"{b.pct(50):.0f} / {b.pct(99):.0f}"
        ratio = f"{s['p50'] / base:.2f}x" if base else "-"
        lines.append(
            f"| {name} | {h.count} | {s['p50']:.0f} | {s['p99']:.0f} | {s['p999']:.0f} | "
            f"{s['max']:.0f} | {ratio} | {wait} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
