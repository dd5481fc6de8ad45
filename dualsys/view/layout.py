"""The view's layout (a Rerun blueprint): the robot in 3D beside the head camera, the
commanded against the measured joints, the timing plots, the instruction and events."""

from __future__ import annotations

from dualsys.config import RobotConfig

#: Where the 3D view looks from and at (m, world; the robot stands at the origin, x forward).
EYE, LOOK_AT = [2.2, 1.4, 1.6], [0.1, 0.0, 0.9]
#: Joints plotted by default (the rest are logged too: add them in the viewer).
PLOTTED = ("right_shoulder_pitch_joint", "right_elbow_pitch_joint", "left_shoulder_pitch_joint")


def blueprint(cfg: RobotConfig):
    """The default layout for this robot."""
    import rerun.blueprint as rrb

    names = [cfg.joint_names[i] for i in cfg.controlled_indices]
    plotted = [n for n in PLOTTED if n in names] or names[:3]
    cameras = [rrb.Spatial2DView(origin=f"camera/{c.name}", name=c.name) for c in cfg.cameras]
    joints = [rrb.TimeSeriesView(origin=f"joints/{n}", name=n) for n in plotted]
    ages = rrb.TimeSeriesView(
        origin="timing",
        name="ms: latent age, System 2 period, chunk latency, chunk boundaries (x)",
        contents=[
            "timing/latent_age_ms",
            "timing/system2_period_ms",
            "timing/chunk_latency_ms",
            "timing/chunk_boundary",
        ],
    )
    control = rrb.TimeSeriesView(
        origin="timing",
        name="System 1: command lag behind its tick (us, max), misses, lateness p99 (us)",
        contents=[
            "timing/command_lag_max_us",
            "timing/misses",
            "timing/miss",
            "timing/control/misses",
            "timing/control/lateness_p99_us",
        ],
    )
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(
                rrb.Spatial3DView(
                    origin="world",
                    name="robot",
                    eye_controls=rrb.EyeControls3D(  # front-left, looking at the chest
                        position=EYE, look_target=LOOK_AT, eye_up=[0.0, 0.0, 1.0]
                    ),
                ),
                rrb.TextDocumentView(origin="instruction", name="instruction"),
                row_shares=[6, 1],
            ),
            rrb.Vertical(
                rrb.Horizontal(*cameras, rrb.TextLogView(origin="log", name="events")),
                rrb.Vertical(*joints, name="commanded vs measured"),
                ages,
                control,
                row_shares=[3, 4, 2, 2],
            ),
            column_shares=[1, 1],
        ),
        rrb.TimePanel(state="collapsed"),
        rrb.SelectionPanel(state="collapsed"),
        rrb.BlueprintPanel(state="collapsed"),
    )
