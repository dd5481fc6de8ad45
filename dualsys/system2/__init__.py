"""dualsys.system2."""
