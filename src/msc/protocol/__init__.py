"""msc.protocol — the sans-IO wire codec (PROTOCOL.md).

No asyncio and no other msc package may be imported here: the protocol is tested with bytes
alone, and the stubs, the switch and independent clients share it.
"""

from msc.protocol.codes import ALL_CODES, FramingError, MscError, ProtocolError, Reject
from msc.protocol.framing import (
    ACK,
    DEFAULT_MAX_FRAME,
    HEARTBEAT,
    MSG,
    NAK,
    Frame,
    Framer,
    encode_frame,
)
from msc.protocol.message import (
    AdminText,
    Bind,
    Input,
    Logoff,
    Logon,
    PasswordChange,
    Transaction,
    UpstreamMessage,
    banner,
    format_output,
    format_pairs,
    format_upstream,
    msc_notice,
    output_bytes,
    parse_input,
    parse_nak,
    parse_notice,
    parse_pairs,
    parse_upstream,
    redact,
    wire_text,
)

__all__ = [
    "ACK", "ALL_CODES", "DEFAULT_MAX_FRAME", "HEARTBEAT", "MSG", "NAK",
    "AdminText", "Bind", "Frame", "Framer", "FramingError", "Input", "Logoff", "Logon",
    "MscError", "PasswordChange", "ProtocolError", "Reject", "Transaction", "UpstreamMessage",
    "banner", "encode_frame", "format_output", "format_pairs", "format_upstream", "msc_notice", "output_bytes",
    "parse_input", "parse_nak", "parse_notice", "parse_pairs", "parse_upstream", "redact", "wire_text",
]
