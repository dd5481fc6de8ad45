"""Bus latency: dualsys latest-value links (shm://, ipc://, tcp://) vs REQ/REP + pickle.

One run, all paths interleaved, at two message rates (10 Hz: System 2's rate; 200 Hz: the
control rate). A producer process sends one 1536-float32 latent every 1/rate s, rotating over
the paths, so each message has the machine to itself until the next is due:
- dualsys shm:// (shared-memory slot; the consumer sleeps in the kernel on the slot's futex);
- dualsys PUB/SUB ipc:// and tcp:// (CONFLATE; the consumer sleeps in the kernel in poll);
- baseline REQ/REP + pickle over tcp:// and ipc:// (as common VLA inference servers do): at the
  message's time the consumer sends a request and blocks in recv; the server sleeps in the
  kernel in poll until the request arrives;
- reference, not a contender: shm:// read by a spinning consumer (no sleep, so no wake-up):
  what the data path costs without any kernel wake-up.
Every waiting side is woken by the kernel, never by its own timer. Latency: send (the header's
monotonic time, taken before encoding) -> decoded and validated (pub/sub); request sent ->
reply unpickled (REQ/REP). Per stage: wake (send -> the consumer's wait returns), read (taking
the bytes: zmq recv / slot copy / reply recv), decode (the compiled check into preallocated
arrays, `Subscriber.take`, or unpickle).

    .venv/bin/python benchmarks/bus.py [--count10 250] [--count200 1500]
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
from dualsys.bus.fastcodec import MessageView
from dualsys.timing import Histogram

DIM = 1536
RATES = (10.0, 200.0)
#: (key, table label); the order is the rotation
PATHS = (
    ("shm", "dualsys shm:// slot, msgpack, futex wake"),
    ("ipc", "dualsys PUB/SUB ipc://, msgpack, CONFLATE"),
    ("tcp", "dualsys PUB/SUB tcp://, msgpack, CONFLATE"),
    ("rr_tcp", "baseline REQ/REP + pickle, tcp://"),
    ("rr_ipc", "baseline REQ/REP + pickle, ipc://"),
    ("spin", "reference: shm:// read by a spinning consumer (no wake-up)"),
)
PUB = ("shm", "ipc", "tcp", "spin")
STAGES = ("total", "wake", "read", "decode")


def endpoints(tmp: str) -> dict[str, str]:
    """Every path's endpoint."""
    return {
        "shm": f"shm://{tmp}/latent.slot",
        "spin": f"shm://{tmp}/spin.slot",
        "ipc": f"ipc://{tmp}/latent.sock",
        "tcp": "tcp://127.0.0.1:25601",
        "rr_tcp": "tcp://127.0.0.1:25602",
        "rr_ipc": f"ipc://{tmp}/rep.sock",
    }


def schedule(starts: list[float], counts: list[int]) -> list[tuple[float, int, str]]:
    """(time, step, path) of every message in both phases."""
    out = []
    for t0, n, rate in zip(starts, counts, RATES, strict=True):
        for i in range(n * len(PATHS)):
            out.append((t0 + i / rate, i, PATHS[i % len(PATHS)][0]))
    return out


def producer(eps: dict[str, str], ready: mp.Event, plans: mp.Queue) -> None:
    """Publish each pub/sub message at its time; serve REQ/REP requests, sleeping in poll."""
    ctx = zmq.Context()
    pubs = {k: Publisher(ctx, eps[k], "bench", max_bytes=16384) for k in PUB}
    reps = []
    poller = zmq.Poller()
    for k in ("rr_tcp", "rr_ipc"):
        s = ctx.socket(zmq.REP)
        s.setsockopt(zmq.LINGER, 0)
        s.bind(eps[k])
        poller.register(s, zmq.POLLIN)
        reps.append(s)
    vec = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    ready.set()
    plan = plans.get()
    todo = [(t, i, k) for t, i, k in plan if k in PUB]
    end = plan[-1][0] + 2.0
    j = 0
    while time.monotonic() < end:
        due = todo[j][0] if j < len(todo) else end
        wait_ms = max(0, int((due - time.monotonic()) * 1000) + 1)
        for sock, _ in poller.poll(wait_ms):
            sock.recv()
            sock.send(pickle.dumps({"latent": vec, "t": time.monotonic_ns()}))
        while j < len(todo) and time.monotonic() >= todo[j][0]:
            _, i, k = todo[j]
            pubs[k].send(Latent(vector=vec, step=i))
            j += 1
    for p in pubs.values():
        p.close()
    for s in reps:
        s.close(0)
    ctx.term()


def _us(t0: int, t1: int) -> float:
    return (t1 - t0) / 1000


def take_zmq(sub: Subscriber, view: MessageView, step: int) -> tuple[int, int, int, int] | None:
    """Wait in poll, then do what `Subscriber.take` does (the receive System 1 uses): (t_send,
    woke, read, decoded) ns."""
    while sub.sock.poll(2000):
        woke = time.monotonic_ns()
        data = sub.sock.recv(zmq.NOBLOCK)
        read = time.monotonic_ns()
        ok = sub.take_bytes(view, np.frombuffer(data, np.uint8), len(data))
        done = time.monotonic_ns()
        if ok and view.int("step") >= step:
            return view.t_mono_ns, woke, read, done
    return None


def take_slot(
    sub: Subscriber, view: MessageView, step: int, spin: bool
) -> tuple[int, int, int, int] | None:
    """Wait on the slot (futex, or spinning), then do what `Subscriber.take` does."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if not spin:
            sub.slot.wait(deadline - time.monotonic())
        woke = time.monotonic_ns()
        data = sub._slot_bytes()
        read = time.monotonic_ns()
        if data is None:
            continue
        ok = sub.take_bytes(view, sub.slot.arr, len(data))
        done = time.monotonic_ns()
        if ok and view.int("step") >= step:
            return view.t_mono_ns, woke, read, done
    return None


def take_reqrep(req: zmq.Socket, due: float) -> tuple[int, int, int, int] | None:
    """At the message's time, one request -> pickled reply round trip (None: timed out)."""
    left = due - time.monotonic()
    if left > 0:
        time.sleep(left)
    t0 = time.monotonic_ns()
    req.send(b"get_latent")
    try:
        raw = req.recv()
    except zmq.Again:
        return None
    got = time.monotonic_ns()
    reply = pickle.loads(raw)  # the baseline's way; never do this on a network
    done = time.monotonic_ns()
    assert reply["latent"].shape == (DIM,)
    return t0, got, got, done


def cold_vs_hot(n_hot: int = 2000, n_cold: int = 200) -> dict[str, Histogram]:
    """Validate one latent with the codec (Python objects) and with the compiled check into a
    view: back to back, and each after a 5 ms sleep (what a consumer woken by a message does).
    The gap is the machine's cost of running code that went cold while the process slept."""
    from dualsys.bus import decode, encode

    vec = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    data = encode(Latent(vector=vec), 1, "bench")
    buf = np.frombuffer(data, np.uint8)
    shapes = {"latent": {"vector": (DIM,)}}
    view = MessageView(Latent, shapes["latent"], array_field="vector")
    ways = {
        "codec": lambda: decode(data, (Latent,), shapes),
        "compiled": lambda: view.take(buf, len(data)),
    }
    out = {}
    for way, fn in ways.items():
        for key, n, nap in (("hot", n_hot, 0.0), ("after 5 ms sleep", n_cold, 0.005)):
            h = out[f"{way} {key}"] = Histogram()
            for _ in range(n):
                if nap:
                    time.sleep(nap)
                t = time.perf_counter_ns()
                fn()
                h.record((time.perf_counter_ns() - t) / 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count10", type=int, default=250, help="messages per path at 10 Hz")
    ap.add_argument("--count200", type=int, default=1500, help="messages per path at 200 Hz")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bus.md"))
    args = ap.parse_args()
    counts = [args.count10, args.count200]
    eps = endpoints(tempfile.mkdtemp(prefix="dualsys-bench-"))
    mpc = mp.get_context("spawn")
    ready, plans = mpc.Event(), mpc.Queue()
    proc = mpc.Process(target=producer, args=(eps, ready, plans))
    proc.start()
    if not ready.wait(60):
        raise SystemExit("producer did not start")
    ctx = zmq.Context()
    shapes = {"latent": {"vector": (DIM,)}}
    subs = {k: Subscriber(ctx, eps[k], (Latent,), shapes=shapes) for k in PUB}
    views = {k: subs[k].view(Latent, "vector") for k in PUB}
    reqs = {}
    for k in ("rr_tcp", "rr_ipc"):
        reqs[k] = ctx.socket(zmq.REQ)
        reqs[k].setsockopt(zmq.LINGER, 0)
        reqs[k].setsockopt(zmq.RCVTIMEO, 2000)
        reqs[k].connect(eps[k])
    t0 = time.monotonic() + 1.0  # subscribers connected
    starts = [t0, t0 + counts[0] * len(PATHS) / RATES[0] + 1.0]
    plan = schedule(starts, counts)
    plans.put(plan)
    hist = {(r, k, s): Histogram() for r in RATES for k, _ in PATHS for s in STAGES}
    lost = dict.fromkeys(((r, k) for r in RATES for k, _ in PATHS), 0)
    rate_of = {i: r for i, r in enumerate(RATES)}
    print(f"bus benchmark: {counts} messages per path at {RATES} Hz ...", flush=True)
    phase = 0
    for n, (due, step, key) in enumerate(plan):
        if n and step == 0:
            phase += 1
        rate = rate_of[phase]
        if key in ("rr_tcp", "rr_ipc"):
            got = take_reqrep(reqs[key], due)
            if got is None:  # a REQ socket that lost its reply cannot send again: replace it
                reqs[key].close(0)
                reqs[key] = ctx.socket(zmq.REQ)
                reqs[key].setsockopt(zmq.LINGER, 0)
                reqs[key].setsockopt(zmq.RCVTIMEO, 2000)
                reqs[key].connect(eps[key])
        elif key in ("shm", "spin"):
            got = take_slot(subs[key], views[key], step, spin=key == "spin")
        else:
            got = take_zmq(subs[key], views[key], step)
        if got is None:
            lost[(rate, key)] += 1
            continue
        sent, woke, read, done = got
        if step < 3 * len(PATHS):
            continue  # warm-up: first messages on each path
        for stage, a, b in (("total", sent, done), ("wake", sent, woke), ("read", woke, read)):
            hist[(rate, key, stage)].record(_us(a, b))
        hist[(rate, key, "decode")].record(_us(read, done))
    proc.join(10)
    write_table(args, counts, hist, lost, cold_vs_hot())
    ctx.destroy(0)


def write_table(
    args: argparse.Namespace,
    counts: list[int],
    hist: dict[tuple[float, str, str], Histogram],
    lost: dict[tuple[float, str], int],
    cold: dict[str, Histogram],
) -> None:
    """Print and save the markdown tables and where the time goes."""
    lines = [
        f"### Bus latency: 1536-float32 latent at 10 Hz and 200 Hz ({date.today()}, "
        f"{platform.node() or 'host'}, {os.cpu_count()} vCPU, `python benchmarks/bus.py "
        f"--count10 {counts[0]} --count200 {counts[1]}`)",
        "",
        "Producer and consumer are separate processes; all paths interleaved in one run (one "
        "message every 1/rate s, rotating over the paths), each waiting side woken by the "
        "kernel. Latency: send -> decoded + validated (pub/sub), request -> unpickled reply "
        "(REQ/REP). Stages (p50 / p99 µs): wake = send -> the consumer's wait returns; read = "
        "taking the bytes (the non-blocking receive); decode = the compiled check and copy "
        "into the receiver's preallocated arrays (pub/sub: `Subscriber.take`, what System 1 "
        "uses) or unpickle (REQ/REP). The spinning-consumer row is a reference (no "
        "wake-up), not a contender.",
    ]
    for r in RATES:
        base = {s: hist[(r, "rr_tcp", "total")].pct(p) for s, p in (("p50", 50), ("p99", 99))}
        lines += [
            "",
            f"**{r:g} Hz**",
            "",
            "| path | n | lost | p50 µs | p99 µs | p99.9 µs | max µs | p50 / p99 vs REQ/REP tcp "
            "| wake | read | decode |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, label in PATHS:
            h = hist[(r, key, "total")]
            s = h.summary()
            ratio = (
                f"{s['p50'] / base['p50']:.2f}x / {s['p99'] / base['p99']:.2f}x"
                if base["p50"]
                else "-"
            )
            st = [hist[(r, key, x)] for x in ("wake", "read", "decode")]
            stages = " | ".join(f"{x.pct(50):.0f} / {x.pct(99):.0f}" for x in st)
            lines.append(
                f"| {label} | {h.count} | {lost[(r, key)]} | {s['p50']:.0f} | {s['p99']:.0f} "
                f"| {s['p999']:.0f} | {s['max']:.0f} | {ratio} | {stages} |"
            )
    lines += where_the_time_goes(hist, cold)
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


def where_the_time_goes(
    hist: dict[tuple[float, str, str], Histogram], cold: dict[str, Histogram]
) -> list[str]:
    """The stage medians of this run, with what each stage is."""

    def p50(r: float, key: str, stage: str) -> str:
        return f"{hist[(r, key, stage)].pct(50):.0f}"

    r = RATES[0]
    return [
        "",
        "**Where the time goes** (10 Hz medians of this run, µs)",
        "",
        f"- Validation after a wake-up: {p50(r, 'ipc', 'decode')} (ipc), "
        f"{p50(r, 'shm', 'decode')} (shm), with the receive's bookkeeping (counts, sequence "
        "gaps). On this VM code that went cold while its process slept runs many times "
        "slower (caches and TLB gone cold while the vCPU idled), and the codec's Python decode "
        "(msgpack into Python objects, then checks) pays that on every instruction it runs: "
        f"{cold['codec hot'].pct(50):.0f} back to back, "
        f"{cold['codec after 5 ms sleep'].pct(50):.0f} after a 5 ms sleep in this run. The "
        "compiled check (dualsys.bus.fastcodec: the same checks on the raw bytes, the vector "
        "copied into a preallocated array, no objects) takes "
        f"{cold['compiled hot'].pct(50):.0f} and {cold['compiled after 5 ms sleep'].pct(50):.0f}. "
        f"The baseline's unpickle ({p50(r, 'rr_tcp', 'decode')}) validates nothing.",
        f"- ZeroMQ's thread hops: send -> the consumer's poll returns takes "
        f"{p50(r, 'ipc', 'wake')} over ipc:// (the sender's I/O thread, the receiver's I/O "
        "thread, then the receiving thread: three wake-ups) against "
        f"{p50(r, 'shm', 'wake')} for the slot (one futex wake of the receiving thread). "
        "That hop is what shm:// removes; with a spinning reader (no wake-up) the data is "
        f"visible {p50(r, 'spin', 'wake')} after the send stamp (the producer's own encode "
        "after its sleep).",
        f"- Taking the bytes: zmq recv {p50(r, 'ipc', 'read')}, slot copy "
        f"{p50(r, 'shm', 'read')} (6 KiB into the reader's preallocated buffer).",
        "- The previous table (ipc:// 1.57x slower than REQ/REP at p50) compared unlike "
        "waits: its REP server woke every 1 ms (poll(1)), keeping its vCPU warm, and the REQ "
        "consumer had just run, while the pub/sub consumer slept up to 100 ms and paid the "
        "cold wake-up. Now every waiting side sleeps in the kernel until the message wakes it, "
        "and each message has the machine to itself (no path's send overlaps another's).",
        "- Millisecond tails (on any path, the baseline's included) are stalls of "
        "the VM's vCPUs while other work shares the 2 cores; fewer wake-ups per message means "
        "fewer chances to meet one.",
    ]


if __name__ == "__main__":
    main()
