"""A recording in the same view: every message of an MCAP file written by `dualsys record` /
`up --record` / `eval --record`, in send-time order on the ``time`` timeline (scrub it in the
viewer's time panel), saved as Rerun's .rrd file and/or served to the web viewer."""

from __future__ import annotations

from pathlib import Path

from dualsys.config import RobotConfig
from dualsys.replay import Recording


def messages_in_order(rec: Recording) -> list:
    """Every recorded message, by its header's wall send time."""
    items = [r.msg for items in rec.topics.values() for r in items]
    items.sort(key=lambda m: m.header.t_wall_ns)
    return items


def log_recording(cfg: RobotConfig, rec: Recording, stream) -> dict[str, int]:
    """Log a recording into a Rerun recording stream; returns messages shown per type."""
    import rerun as rr

    from dualsys.view.poses import RobotPoses
    from dualsys.view.sink import ViewSink

    sink = ViewSink(cfg, rr, stream, RobotPoses(cfg), pose_hz=30.0, plot_hz=100.0)
    sink.start()
    for msg in messages_in_order(rec):
        sink.on_message(msg)
    return sink.counts


def view_recording(
    cfg: RobotConfig,
    rec: Recording,
    save: Path | None,
    serve: tuple[int, int, str] | None,
) -> dict[str, int]:
    """Log `rec` to an .rrd file (`save`) and/or a served web viewer (`serve`: web port, data
    port, host; the caller keeps the process alive while a person looks)."""
    import rerun as rr

    from dualsys.view.layout import blueprint

    stream = rr.RecordingStream("dualsys", recording_id=f"replay-{rec.path.stem}")
    sinks = []
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        sinks.append(rr.FileSink(str(save)))
    if serve is not None:
        sinks.append(rr.GrpcServerSink(port=serve[1], server_memory_limit="2GiB"))
        rr.serve_web_viewer(web_port=serve[0], open_browser=False)
    stream.set_sinks(*sinks, default_blueprint=blueprint(cfg))
    counts = log_recording(cfg, rec, stream)
    stream.flush()
    return counts
