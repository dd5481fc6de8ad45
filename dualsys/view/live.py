"""The viewer process (role "viewer"): a consumer on the bus like the recorder, streaming the
running system into Rerun's web viewer.

It subscribes latest-value (CONFLATE) to state, command, camera and latent, in order to the
few chunks, and to the supervisor's status (control misses and lateness), so a slow viewer
loses old values, never queues them and never makes a publisher wait. It runs at normal
priority (time-sharing, nice 10: System 2 wins the core they share) on System 2's core
(never System 1's), with its own rates (`pose_hz`, `plot_hz`);
the run report of `dualsys up --view` shows System 1's budgets with it on
(benchmarks/view.py). The page is served on `web_port`, the data on `grpc_port`, both on
every interface (the robot's network), and the URL is printed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from urllib.parse import quote

import zmq

from dualsys.bus.messages import ActionChunk, CameraFrame, Command, Hello, Latent, RobotState, Stats
from dualsys.bus.transport import Publisher, Subscriber
from dualsys.config import RobotConfig

ROLE = "viewer"
#: Niceness of the viewer (normal time-sharing class, below System 2's default 0).
VIEWER_NICE = 10
WEB_PORT, GRPC_PORT = 9090, 9876
#: Latest-value topics and their message types; chunks are read in order (few per second).
LATEST = {"state": RobotState, "command": Command, "camera": CameraFrame, "latent": Latent}


def page_url(host: str, web_port: int, grpc_port: int) -> str:
    """The address of the viewer page that connects to this viewer's data."""
    return (
        f"http://{host}:{web_port}/?url={quote(f'rerun+http://{host}:{grpc_port}/proxy', safe='')}"
    )


def run_viewer(
    cfg: RobotConfig,
    run_dir: Path,
    duration_s: float = 0.0,
    web_port: int = WEB_PORT,
    grpc_port: int = GRPC_PORT,
    host: str = "localhost",
    save: Path | None = None,
    grounding: bool = True,
) -> int:
    """Serve the live view until the duration ends or a stop signal; returns the exit code."""
    import rerun as rr

    from dualsys.bus.curve import BusSecurity
    from dualsys.rundir import exit_now
    from dualsys.supervisor import STATUS_SOCKET
    from dualsys.system1.control_proc import StopFlag
    from dualsys.timing import pin_to_core, warn_once
    from dualsys.view.layout import blueprint
    from dualsys.view.poses import RobotPoses
    from dualsys.view.sink import ViewSink

    stop = StopFlag()
    stop.install()
    note = pin_to_core(cfg.cores.system2)  # System 2's core, never System 1's
    if note:
        warn_once(note)
    os.nice(VIEWER_NICE)  # a person's view yields to System 2 on the core they share
    rec = rr.RecordingStream("dualsys", recording_id=f"live-{cfg.name}-{os.getpid()}")
    sinks = [rr.GrpcServerSink(port=grpc_port, server_memory_limit="512MiB", newest_first=True)]
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        sinks.append(rr.FileSink(str(save)))
    rec.set_sinks(*sinks, default_blueprint=blueprint(cfg))
    rr.serve_web_viewer(web_port=web_port, open_browser=False)
    sink = ViewSink(cfg, rr, rec, RobotPoses(cfg), pose_hz=10.0, plot_hz=20.0, live=True)
    sink.start()
    if grounding:
        from dualsys.view.grounding import Grounder

        if Grounder.available(cfg):
            sink.grounder = Grounder(cfg)
    url = page_url(host, web_port, grpc_port)
    print(f"dualsys view: open {url}", file=sys.stderr, flush=True)
    url_file = run_dir / "viewer.url"  # for `dualsys up` and tools; removed at exit
    url_file.write_text(url + "\n")

    ctx = zmq.Context()
    sec = BusSecurity(ctx, cfg, binds=False)

    def sub(topic: str, types: tuple, latest: bool = True) -> Subscriber:
        ep = cfg.endpoint(topic, run_dir)
        return Subscriber(ctx, ep, types, latest=latest, hwm=64, curve=sec.curve(ep, bind=False))

    subs = {t: sub(t, (cls,)) for t, cls in LATEST.items()}
    chunks = sub("chunk", (ActionChunk,), latest=False)
    status = Subscriber(ctx, f"ipc://{run_dir}/{STATUS_SOCKET}", (Stats,))
    stats_ep = cfg.endpoint("stats", run_dir)
    stats_pub = Publisher(ctx, stats_ep, ROLE, bind=False, curve=sec.curve(stats_ep, bind=False))
    hello = Hello(ROLE, cfg.name, cfg.system2.latent_dim, cfg.n_joints, os.getpid())
    period = 1.0 / 30  # the viewer's own loop: 30 Hz is plenty for a person
    start = time.monotonic()
    end = start + duration_s if duration_s > 0 else float("inf")
    next_hello = next_stats = start
    try:
        while not stop.set and time.monotonic() < end:
            t0 = time.monotonic()
            for s in subs.values():
                msg = s.recv_latest()
                if msg is not None:
                    sink.on_message(msg)
            for _ in range(16):
                msg = chunks.recv_nowait()
                if msg is None:
                    break
                sink.on_message(msg)
            sink.show_grounding(time.time_ns())
            st = status.recv_latest()
            if st is not None:
                sink.on_status(st.values, time.time_ns())
            if t0 >= next_hello:
                stats_pub.send(hello)
                next_hello = t0 + 1.0
            if t0 >= next_stats:
                values = {k: float(v) for k, v in sink.counts.items()}
                values["dropped"] = float(sum(sum(s.dropped.values()) for s in subs.values()))
                stats_pub.send(Stats(process=ROLE, values=values))
                next_stats = t0 + 1.0 / cfg.rates.stats_hz
            time.sleep(max(0.0, period - (time.monotonic() - t0)))
    finally:
        # bounded: a slow browser must not hold the stop (the supervisor waits ~1 s)
        try:
            rec.flush(timeout_sec=0.7)
        except RuntimeError as exc:  # "Flush timed out": what is left is lost, the view is not
            print(f"dualsys view: {exc}", file=sys.stderr)
        for s in (*subs.values(), chunks, status, stats_pub):
            s.close()
        sec.close()
        ctx.term()
    url_file.unlink(missing_ok=True)
    print(f"dualsys view: shown {sink.counts}", file=sys.stderr)
    exit_now(0)  # rerun's server threads need no teardown
    return 0
