"""What a connection's state machine (:class:`msc.server.machine.SessionMachine`) asks its adapter
(:class:`msc.server.session.Session`) to do: the machine's vocabulary, as small frozen values.

One class per kind of action — frames to send, a message for the session's rules, an output
acknowledged or refused, reading to pause or resume, a logoff, a close. The machine returns
them; the adapter performs each (``Session._perform_one``, one ``match``). No I/O here, and
nothing but the protocol's own vocabulary (PROTOCOL.md §1–§5).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes (one or more frames) to the client."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Message:
    """A complete ``M`` frame for the session's rules (rate-checked, not yet parsed)."""

    xid: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class RateLimited:
    """An ``M`` frame over the connection's rate: refuse it (E307); reading is paused with it."""

    xid: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class BannerAcknowledged:
    """The client acknowledged the banner (CJIS AC-8): journal it."""


@dataclass(frozen=True, slots=True)
class OutputAcked:
    """The client acknowledged output ``osn`` (PROTOCOL.md §5)."""

    osn: int


@dataclass(frozen=True, slots=True)
class OutputRefused:
    """The client refused output ``osn`` with ``code``/``reason``."""

    osn: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class FramingFailed:
    """The byte stream broke framing (E101, PROTOCOL.md §1): count it; the ``N`` and the close
    follow as their own actions."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class PauseReading:
    """Stop reading; ``resume_after`` seconds later resume (``None``: when told)."""

    resume_after: float | None = None


@dataclass(frozen=True, slots=True)
class ResumeReading:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    """Write what is queued, then close."""


@dataclass(frozen=True, slots=True)
class Abort:
    """Drop the connection now (a dead peer)."""


@dataclass(frozen=True, slots=True)
class Logoff:
    """Log the operator off (``why``: IDLE, SESSION MAXIMUM)."""

    why: str


Action = (Send | Message | RateLimited | BannerAcknowledged | OutputAcked | OutputRefused | FramingFailed
          | PauseReading | ResumeReading | Close | Abort | Logoff)

__all__ = ["Abort", "Action", "BannerAcknowledged", "Close", "FramingFailed", "Logoff", "Message", "OutputAcked",
           "OutputRefused", "PauseReading", "RateLimited", "ResumeReading", "Send"]
