"""GR-1 at the table: the behaviours its expert performs, their versions, the touch targets.

Light on purpose (no mujoco): the dataset writer and training read the versions.
"""

from __future__ import annotations

BEHAVIOURS = (
    "touch_red_cup",
    "touch_blue_box",
    "wave_right_hand",
    "wave_left_hand",
    "raise_both_arms",
    "point_forward",
    "bring_hands_together",
    "open_close_hands",
    "return_to_rest",
)
#: Version of each behaviour's demonstration (recorded per episode; `dualsys train` leaves out
#: episodes of an older version). Behaviours not listed are version 1.
EXPERT_VERSION = {"wave_right_hand": 2, "wave_left_hand": 2}


def expert_version(behaviour: str) -> int:
    """The current version of the expert's demonstration of `behaviour`."""
    return EXPERT_VERSION.get(behaviour, 1)


#: Which scene object a touch behaviour names.
TOUCH_OBJECT = {"touch_red_cup": "cup", "touch_blue_box": "box"}
