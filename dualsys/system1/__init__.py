"""dualsys.system1."""
