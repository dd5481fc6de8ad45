"""The runtime sits below the learning wing (issue 20.6): no runtime module imports
`dualsys.behaviours` (or a task pack, `dualsys.tasks`), the System 1 and System 2 processes
load neither the scripted expert nor MuJoCo, not even while System 2 loads its models, and the
robot process builds its scene from data without loading a task pack."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import dualsys

ROOT = Path(dualsys.__file__).parent
#: the runtime: bus, the processes, robot, supervisor, recording/replay, their base modules
RUNTIME = (
    "bus",
    "system1",
    "system2",
    "robot",
    "view",
    "doctor",
    "testing",
    "config.py",
    "timing.py",
    "registry.py",
    "rundir.py",
    "report.py",
    "vocabulary.py",
    "scene.py",
    "supervisor.py",
    "record.py",
    "replay.py",
    "liveview.py",
)
#: the learning wing and the per-robot task packs above it
LEARNING = ("dualsys.behaviours", "dualsys.tasks")
#: modules a System 1 / System 2 process must never hold
FORBIDDEN = ("mujoco", *LEARNING)
SYSTEM2 = ("main", "service", "text", "fusion", "server", "link", "encoders.builtin")
SYSTEM1 = ("control_proc", "policy_proc")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, module level or inside a function."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)]
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _runtime_files() -> list[Path]:
    files = []
    for name in RUNTIME:
        path = ROOT / name
        assert path.exists(), f"runtime module {path} is gone: update RUNTIME"
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def test_no_runtime_module_imports_the_learning_wing() -> None:
    edges: dict[str, str] = {}  # "file:line" -> the first learning module it imports
    for path in _runtime_files():
        for line, module in _imports(path):
            if module.startswith(LEARNING):
                edges.setdefault(f"{path.relative_to(ROOT.parent)}:{line}", module)
    assert not edges, "upward edges from the runtime:\n" + "\n".join(
        f"{where}: imports {module}" for where, module in edges.items()
    )


#: run in a fresh interpreter: import the process modules, then load System 2's models the way
#: its process does (encoder registry -> configure: text + vision + fusion + grounding bank)
_PROBE = """
import importlib, json, sys
from dualsys import config
mods = sys.argv[1].split(",")
for m in mods:
    importlib.import_module(m)
after_import = sorted(sys.modules)
if sys.argv[2] == "models":
    from dualsys.system2 import encoders
    enc = encoders.create(config.load_robot("gr1"))
    enc.configure()
    assert "grounded in" in enc.description, enc.description
print(json.dumps({"after_import": after_import, "after_models": sorted(sys.modules)}))
"""


def _probe(modules: list[str], models: bool) -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(modules), "models" if models else "-"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT.parent,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _forbidden(loaded: list[str]) -> list[str]:
    return [m for m in loaded if m.startswith(FORBIDDEN)]


@pytest.mark.parametrize(
    "modules",
    [
        [f"dualsys.system1.{m}" for m in SYSTEM1],
        [f"dualsys.system2.{m}" for m in SYSTEM2],
    ],
    ids=["system1", "system2"],
)
def test_process_modules_load_neither_mujoco_nor_the_expert(modules: list[str]) -> None:
    loaded = _probe(modules, models=False)["after_import"]
    assert set(modules) <= set(loaded)
    assert not _forbidden(loaded)


def test_system2_loading_its_models_loads_neither_mujoco_nor_the_expert() -> None:
    """Configuring the builtin encoder reads its phrase bank through `dualsys.vocabulary`
    (data), never through the learning wing's phrasings, which import the task pack."""
    loaded = _probe([f"dualsys.system2.{m}" for m in SYSTEM2], models=True)["after_models"]
    assert "torch" in loaded and "dualsys.vocabulary" in loaded
    assert not _forbidden(loaded)


#: the robot process's modules, then its simulation built (model, scene, cameras) and stepped
_PROBE_ROBOT = """
import json, sys
from dualsys import config
import dualsys.robot.process, dualsys.robot.scene_link
from dualsys.robot.simulation import Simulation
sim = Simulation(config.load_robot("gr1"))
sim.configure()
sim.activate()
sim.randomise_objects(__import__("numpy").random.default_rng(0))
sim.step(10)
assert sim.site_pos("cup")[2] > 0.7, sim.site_pos("cup")
print(json.dumps(sorted(sys.modules)))
"""


def test_robot_process_builds_its_scene_without_a_task_pack() -> None:
    """The table, objects and camera mount come from robots/gr1/scene.toml (dualsys.scene):
    building and stepping the simulation loads MuJoCo but no task pack, no learning wing."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE_ROBOT],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT.parent,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "mujoco" in loaded and "dualsys.scene" in loaded
    assert not [m for m in loaded if m.startswith(LEARNING)]


def _imported(importtime_log: str) -> list[str]:
    """Module names from a `python -X importtime` log (stderr)."""
    out = []
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            out.append(line.rsplit("|", 1)[1].strip())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("role", ["system2", "policy", "control"])
def test_the_processes_dualsys_up_starts_load_neither_mujoco_nor_the_expert(
    role: str, tmp_path: Path
) -> None:
    """Each process started exactly as the supervisor starts it (its argv, under
    `python -X importtime`), for 3 s: it loads its models, serves, stops cleanly, and never
    imports MuJoCo or the learning wing."""
    from dualsys import config
    from dualsys.rundir import make_run_dir
    from dualsys.supervisor import Supervisor, UpOptions

    run = make_run_dir(tmp_path / "run")
    argv = Supervisor(config.load_robot("gr1"), run, UpOptions(fifo=False))._argv(role)
    argv = [argv[0], "-X", "importtime", *argv[1:], "--duration", "3"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=ROOT.parent)
    loaded = _imported(out.stderr)
    errors = "\n".join(x for x in out.stderr.splitlines() if not x.startswith("import time:"))
    assert out.returncode == 0, errors[-3000:]
    assert "dualsys.config" in loaded  # the log is the process's own imports
    assert not _forbidden(loaded)
    if role == "system2":  # its models loaded: text, vision, fusion, grounded in the phrasings
        assert "grounded in" in json.loads((run / "system2.json").read_text())["encoder"]
