"""Seeing the robot: a web view of a running system or a recording (Rerun), and the robot's
link poses from its own model (used by the viewer and by the recorder's Foxglove channels).

The viewer needs `rerun-sdk`, an optional extra (`pip install 'dualsys[view]'` or
`bin/setup --view`); everything else here needs only what dualsys always installs.
"""

from __future__ import annotations

import importlib.util

#: What to run to get the viewer; printed by every --view without it.
INSTALL_HINT = (
    "the web view needs the optional 'view' extra (rerun-sdk, ~170 MB): "
    "pip install 'dualsys[view]'  (in this repo: bin/setup --view)"
)
#: Exit code of a --view without the extra (bad usage / missing optional part).
EXIT_NO_VIEWER = 2


class ViewerUnavailableError(RuntimeError):
    """rerun-sdk is not installed; the message says how to get it."""


def have_viewer() -> bool:
    """True when rerun-sdk can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("rerun") is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as none
        return False


def require_viewer() -> None:
    """Raise ViewerUnavailableError with INSTALL_HINT when rerun-sdk is missing."""
    if not have_viewer():
        raise ViewerUnavailableError(INSTALL_HINT)
