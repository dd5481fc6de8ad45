"""dualsys: a dual-system real-time control runtime for humanoid robots."""

__version__ = "0.1.0"

#: Version of the wire schema; peers with another version are refused.
SCHEMA_VERSION = 1
