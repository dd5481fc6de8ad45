"""`dualsys doctor`: can this computer hold a robot config's timing budgets?

`checks` reads what the kernel and the CPU allow (scheduler rights, preemption model, isolation,
SMT, governor, idle states, virtualisation), `probe` measures the wake-up latency floor on the
configured cores (quiet and under a load it makes itself), `verdict` compares that floor with the
config's budgets and `fixes` says what to change. `machine_summary` is the cheap form the run
report of `dualsys up` includes.
"""

from __future__ import annotations

from dualsys.doctor.summary import last_doctor_path, machine_summary

__all__ = ["last_doctor_path", "machine_summary"]
