"""The control process's allocator set-up: freed heap stays mapped, large blocks avoid mmap."""

import subprocess
import sys

PROBE = """
import ctypes, ctypes.util, sys
from dualsys.system1 import rt

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    assert rt.tune_allocator() == ""
size = 4 << 20
mapped_before = libc.mallinfo2().hblkhd
block = libc.malloc(size)
ctypes.memset(block, 1, size)
mapped_alone = libc.mallinfo2().hblkhd - mapped_before
libc.free(block)
print(mapped_alone, libc.mallinfo2().arena)
"""


def _run(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    mapped, arena = out.stdout.split()
    return int(mapped), int(arena)


def test_tuned_allocator_keeps_large_blocks_in_the_reserved_heap() -> None:
    mapped, arena = _run("tuned")
    assert mapped == 0  # the 4 MiB block came from the heap, not its own mmap
    assert arena >= 16 << 20  # the reserve (and the freed block) stays in the process


def test_default_allocator_maps_large_blocks_alone() -> None:
    """The contrast the tuned test depends on: glibc's default maps a 4 MiB block by itself
    (and unmaps it on free), so the tuned assertions can fail."""
    mapped, arena = _run("default")
    assert mapped >= 4 << 20
    assert arena < 16 << 20
