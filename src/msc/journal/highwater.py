"""The journal's high-water mark: how long the journal has been, kept outside the journal files.

The records written after the last signed checkpoint are signed by nothing yet: someone with a
shell on the box can stop the switch, delete them, and the journal still verifies. Three things
notice it:

* off the box, ``msc_journal_committed_size`` (exported after every commit) going backwards —
  the alert rules in ``config/prometheus/alerts.yml``, and ``msc journal verify --min-tree-size``;
* on the box, this file: the committed size and the journal's identity, rewritten by the writer
  after **every commit** (one ``pwrite`` of 256 bytes, no fsync: it survives a crash of the
  process, and a power loss loses at most what the journal's own fsync did not make durable
  either) and made durable at every checkpoint and close. At start the journal refuses to open
  if it is shorter than this mark, or is another journal;
* the journal's writer itself, while running, refuses to write a batch that does not continue
  the files where it left them.

The file stops the naive cut (delete the tail, restart); someone who also edits this file is
still caught by the off-box monitoring. Format: two 256-byte slots written alternately (a torn
write leaves the other), each ``<crc32 hex> <JSON>`` padded with spaces and ended by a newline::

    3a0f12bc {"journal_id": "…", "size": 123456, "ts": 1764492000000000, "checkpoint": 123000}
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

SLOT = 256


@dataclass(frozen=True)
class Mark:
    """``size``: records committed (the last sequence number); ``ts``: the last record's time (µs);
    ``checkpoint``: the last signed tree size; ``journal_id``: the journal these belong to.
    A size of -1 means the file exists but no slot could be read."""

    journal_id: str | None
    size: int
    ts: int = 0
    checkpoint: int = 0


def default_path(journal_dir: Path) -> Path:
    """Beside the journal directory (``data/journal`` → ``data/journal.hwm``), not inside it."""
    return journal_dir.parent / f"{journal_dir.name}.hwm"


def _encode(mark: Mark) -> bytes:
    body = json.dumps({"journal_id": mark.journal_id, "size": mark.size, "ts": mark.ts, "checkpoint": mark.checkpoint},
                      sort_keys=True).encode()
    line = b"%08x %s" % (zlib.crc32(body), body)
    if len(line) > SLOT - 1:
        raise ValueError("high-water mark too long")
    return line.ljust(SLOT - 1) + b"\n"


def _decode(slot: bytes) -> Mark | None:
    line = slot.rstrip(b"\n ").rstrip()
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        doc = json.loads(body)
        return Mark(doc.get("journal_id"), int(doc["size"]), int(doc.get("ts", 0)), int(doc.get("checkpoint", 0)))
    except (ValueError, KeyError, TypeError):
        return None


class HighWater:
    """Reading (anyone) and writing (the journal's single writer) the mark file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._slot = 0
        self._written: Mark | None = None
        self.errors = 0

    def read(self) -> Mark | None:
        """The newest valid slot; None if there is no file; size -1 if nothing in it is readable."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return Mark(None, -1)
        marks = [m for i in range(0, min(len(data), 2 * SLOT), SLOT) if (m := _decode(data[i : i + SLOT])) is not None]
        if not marks:
            return Mark(None, -1)
        return max(marks, key=lambda m: m.size)

    def write(self, mark: Mark, *, sync: bool = False) -> None:
        """Record ``mark`` (alternating slots). Raises OSError; the caller decides how loud."""
        if mark == self._written and not sync:
            return
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            # The first write of a writer fills both slots: nothing of an earlier writer (a mark an
            # administrator has since accepted a loss against) may outlive it.
            os.pwrite(self._fd, _encode(mark) * 2, 0)
            os.ftruncate(self._fd, 2 * SLOT)
            self._slot = 0
        os.pwrite(self._fd, _encode(mark), self._slot * SLOT)
        self._slot ^= 1
        self._written = mark
        if sync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
