"""A local Hyperliquid exchange on loopback that speaks the real wire protocol (see README)."""
from .server import SimConfig, SimServer

__all__ = ["SimConfig", "SimServer"]
