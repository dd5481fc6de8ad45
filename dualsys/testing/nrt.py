"""Counting the heap allocations of numba's compiled code (its runtime, NRT).

tracemalloc sees only Python's allocators; an array made inside compiled code comes from
numba's runtime and is invisible to it. numba counts its own allocations when its statistics
are on; `nrt_allocations` turns them on for one call and returns the count. Every array
argument a Python caller passes is counted once (numba wraps it on entry), so compiled code
that allocates nothing inside shows exactly one allocation per array argument per call.
"""

from __future__ import annotations

from collections.abc import Callable

from numba.core.runtime import _nrt_python, rtsys


def nrt_allocations(fn: Callable[..., object], *args: object) -> int:
    """numba runtime allocations made during fn(*args)."""
    _nrt_python.memsys_enable_stats()
    try:
        a0 = rtsys.get_allocation_stats().alloc
        fn(*args)
        return rtsys.get_allocation_stats().alloc - a0
    finally:
        _nrt_python.memsys_disable_stats()
