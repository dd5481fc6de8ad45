"""The System 2 process: pin, load and warm the encoder, serve on uvloop, write the summary.

Exit codes: 0 clean stop (SIGTERM, SIGINT when standalone, or --duration reached), 1 the
service failed at run time, 2 bad configuration (missing checkpoint, model dir, encoder name).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from dualsys.config import RobotConfig
from dualsys.rundir import make_run_dir
from dualsys.system2.service import ROLE, System2Service
from dualsys.timing import pin_to_core, warn_once


def _install_signals(stop: threading.Event, supervised: bool) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if supervised:  # the supervisor handles Ctrl-C and sends SIGTERM in order
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, lambda *_: stop.set())


def write_summary(run_dir: Path, summary: dict[str, object]) -> Path:
    """Write {run_dir}/system2.json atomically."""
    path = run_dir / f"{ROLE}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def serve(
    cfg: RobotConfig,
    run_dir: Path,
    duration_s: float = 0.0,
    untrained: bool = False,
    encoder_name: str | None = None,
) -> int:
    """Run System 2 until signalled or for `duration_s` seconds (> 0); returns the exit code."""
    import uvloop
    import zmq

    t_start = time.monotonic()
    supervised = os.environ.get("DUALSYS_SUPERVISED") == "1"
    stop = threading.Event()
    _install_signals(stop, supervised)
    make_run_dir(run_dir)
    note = pin_to_core(cfg.cores.system2)
    if note:
        warn_once(f"system2: {note}")
    ctx = zmq.Context()

    import torch

    from dualsys.system2 import encoders
    from dualsys.system2.encoders.hf import ModelDirError
    from dualsys.system2.fusion import FusionError

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set when called twice in one process
        torch.set_num_interop_threads(1)
    try:
        encoder = encoders.create(cfg, untrained=untrained, name=encoder_name)
        encoder.configure()
        encoder.warmup()
    except (FusionError, ModelDirError, KeyError, ImportError, RuntimeError, OSError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) else exc
        print(f"dualsys system2: error: {msg}", file=sys.stderr)
        ctx.term()
        return 2
    gc.collect()
    gc.freeze()  # model objects never become garbage; keep full collections short
    service = System2Service(cfg, run_dir, encoder, ctx)
    service.stop = stop
    service.open()
    print(
        f"system2: ready in {time.monotonic() - t_start:.1f} s: {encoder.description}; "
        f"{cfg.rates.system2_target_hz:g} Hz, latent {cfg.system2.latent_dim}, run dir {run_dir}",
        flush=True,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        if not supervised:
            loop.add_signal_handler(signal.SIGINT, stop.set)
        await service.run(duration_s)

    try:
        if not stop.is_set():
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main())
    finally:
        service.close()
        ctx.term()
        summary = service.summary()
        path = write_summary(run_dir, summary)
    if service.failed:
        print(f"dualsys system2: error: {service.failed}", file=sys.stderr)
    print(
        f"system2: stopped after {summary['steps']} steps at {summary['rate_hz']:.2f} Hz "
        f"(step p50 {summary['step_ms']['p50']:.1f} ms, p99 {summary['step_ms']['p99']:.1f} ms); "
        f"summary {path}",
        flush=True,
    )
    return 1 if service.failed else 0
