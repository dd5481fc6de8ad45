"""dualsys.robot."""
