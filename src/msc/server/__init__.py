"""msc.server — listeners, sessions and the Switch that wires everything together."""

from msc.server.switch import Switch

__all__ = ["Switch"]
