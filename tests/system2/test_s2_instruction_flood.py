"""System 2 reads at most a fixed number of instruction messages per poll: a flood waits for
the next poll instead of holding the event loop."""

from __future__ import annotations

import time

import zmq

from dualsys import config
from dualsys.bus.messages import Instruction
from dualsys.bus.transport import Publisher
from dualsys.system2.service import MAX_INSTRUCTIONS_PER_POLL, System2Service

CFG = config.load_robot("gr1")


def test_instruction_flood_is_read_in_bounded_polls(tmp_path) -> None:
    ctx = zmq.Context()
    svc = System2Service(CFG, tmp_path, encoder=None, ctx=ctx)  # the encoder is not used here
    svc.open()
    pub = Publisher(ctx, CFG.endpoint("instruction", tmp_path), "say", bind=False, hwm=10_000)
    try:
        for _ in range(30):  # both sockets process their connect commands (as polling does)
            svc.instructions.sock.getsockopt(zmq.EVENTS)
            pub.sock.getsockopt(zmq.EVENTS)
            time.sleep(0.01)
        for i in range(500):
            pub.send(Instruction(text="" if i % 2 else f"wave {i}", id=i + 1))
        time.sleep(0.5)
        reads = [svc.take_instructions() for _ in range(20)]
        assert max(reads) == MAX_INSTRUCTIONS_PER_POLL
        assert sum(reads) == 500  # every message read, over several polls
        assert svc.refused["empty"] == 250 and svc.instruction == "wave 498"
    finally:
        pub.close()
        svc.close()
        ctx.term()
