"""The journal's storage interfaces: what a backend implements (SQLite today; PostgreSQL next).

Two narrow, typed interfaces, checked by one contract suite (``tests/contract/``) that every
backend must pass:

* :class:`JournalWriter` — the single writer that the group commit
  (:class:`msc.journal.journal.Journal`) drives. Asynchronous: the SQLite backend runs its
  synchronous :class:`msc.journal.writer.Writer` in a worker thread
  (:class:`msc.journal.journal.ThreadWriter`) or a child process
  (:class:`msc.journal.writerproc.WriterProcess`); a database client with an asyncio API can
  implement it directly. Group commit stays the caller's: one :meth:`JournalWriter.commit` is one
  batch of many records, committed all or nothing per month.
* :class:`JournalReader` — read-only access to what was committed (search, verify, export,
  the self-check, store-and-forward's read-back). Synchronous, called from worker threads.
  A reader raises :class:`~msc.journal.records.JournalError` (PostgreSQL) or
  ``sqlite3.DatabaseError`` (SQLite) when the storage cannot be read.

Fencing (a second node, issue 16): :meth:`JournalWriter.commit` and :meth:`~JournalWriter.checkpoint`
are the only calls that make records or checkpoints durable, so an epoch check belongs inside
them, and a refusal surfaces as a :class:`~msc.journal.records.JournalError` (the caller fails
closed with E501 exactly as for a failed fsync).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from msc.journal.schema import Checkpoint, Row, StoredRecord

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@runtime_checkable
class JournalWriter(Protocol):
    """The journal's one writer (per journal, across processes: a second gets ``JournalBusy``).

    Sequence numbers are the caller's: a batch must start at ``last_seq + 1``, else
    :class:`~msc.journal.records.JournalError`. After any failed call ``last_seq``/``last_ts``
    reflect what is really durable (re-read from storage), so the caller re-numbers without a gap.
    """

    @property
    def last_seq(self) -> int:
        """The highest committed sequence number (0: empty journal)."""

    @property
    def last_ts(self) -> int:
        """The time (µs since the epoch, UTC) of the record ``last_seq``."""

    @property
    def checkpoint_size(self) -> int:
        """The tree size of the newest signed checkpoint (0: none)."""

    @property
    def journal_id(self) -> str | None:
        """The journal's random identity, made when it was created."""

    async def start(self) -> None:
        """Take the writer lock, finish an interrupted purge, rebuild the Merkle frontier."""

    async def commit(self, rows: Sequence[Row], poke_indexer: bool = False) -> None:
        """Make ``rows`` durable, in order (one transaction per month touched). Raises
        :class:`~msc.journal.records.JournalError` on any failure; never a partial month."""

    async def leaves(self, first: int, last: int) -> dict[int, bytes]:
        """The Merkle leaf hashes of the records ``first..last`` the storage holds, by sequence
        number (a number it does not hold is missing from the answer), read from the storage
        itself. After a failed commit the journal compares them with its batch's: a batch that
        landed although its commit reported an error, or records another process wrote while this
        writer's lock was lost (JOURNAL.md "Storage and durability": one writer). Raises
        :class:`~msc.journal.records.JournalError` when the storage cannot be read."""

    async def checkpoint(self, name: str, ts: int) -> Checkpoint | None:
        """Sign and store a checkpoint of everything committed (None: nothing new since the last)."""

    async def purge_period(self, period: str, purge_seq: int) -> tuple[int, int] | None:
        """Retention: keep the month's leaf hashes, mark it purged by record ``purge_seq``.
        Returns (first seq, last seq), or None when the month has no records."""

    async def delete_partition(self, period: str) -> None:
        """Delete a purged month's records (after its key was destroyed)."""

    async def close(self) -> None:
        """Release the writer lock and every file or connection."""


@runtime_checkable
class JournalStorage(Protocol):
    """A journal backend other than the SQLite directory (PostgreSQL: ``msc.storage.PgStorage``):
    what :class:`msc.journal.journal.Journal` opens its writer and its readers from."""

    def journal_writer(self, signing: Ed25519PrivateKey) -> JournalWriter:
        """The journal's one writer, signing checkpoints with ``signing``; not started."""

    def journal_reader(self) -> JournalReader:
        """A new reader (the caller closes it)."""

    def describe(self) -> str:
        """Where the journal is, for an operator's message (never a password)."""


@runtime_checkable
class JournalReader(Protocol):
    """Read-only view of a journal. Blocking; safe to use from one worker thread at a time."""

    def periods(self) -> list[str]:
        """Months ("YYYY-MM") with records, oldest first; a month being purged is excluded."""

    def period_range(self, period: str) -> tuple[int, int] | None:
        """(first seq, last seq) of a month, or None if it has no records."""

    def find_period(self, seq: int) -> str | None:
        """The month holding record ``seq``, or None."""

    def blob(self, seq: int) -> tuple[str, bytes] | None:
        """(month, sealed bytes) of record ``seq``, or None."""

    def blobs(self, seqs: Sequence[int]) -> dict[int, tuple[str, bytes]]:
        """(month, sealed bytes) of many records at once, by sequence number; those not in the
        journal (or in a purged month) are missing from the answer (store-and-forward's texts)."""

    def records(self, period: str, first_seq: int = 0, limit: int | None = None) -> Iterator[StoredRecord]:
        """A month's records with ``seq >= first_seq``, in sequence order; at most ``limit``."""

    def candidates(self, period: str, *, where: Mapping[str, object], tokens: Sequence[bytes],
                   start: int | None = None, end: int | None = None) -> Iterator[bytes]:
        """Sealed records of a month that may match a search, in sequence order: the metadata
        columns in ``where`` equal, every blind-index token in ``tokens`` present,
        ``start <= ts < end`` (µs). May include records whose tokens only seem to match (the
        caller decrypts and confirms); never leaves one out."""

    def checkpoints(self) -> list[Checkpoint]:
        """Every signed checkpoint, by tree size."""

    def last_checkpoint(self, at_most: int | None = None) -> Checkpoint | None:
        """The newest checkpoint (of tree size ``<= at_most`` if given)."""

    def purged(self) -> list[tuple[str, int, int]]:
        """(month, first seq, last seq) of every purged month, by first seq."""

    def gaps(self) -> list[tuple[int, int]]:
        """(from_ts, to_ts) in µs of each silence the writer recorded, in sequence order."""

    def next_checkpoint(self, after: int) -> Checkpoint | None:
        """The oldest checkpoint of tree size greater than ``after`` (verification walks them)."""

    def purge_seqs(self) -> dict[str, int | None]:
        """The purge record (its sequence number) that justifies each purged month; None for a
        month marked purged without one (the self-check reports it)."""

    def purged_leaf_count(self, period: str) -> int:
        """How many leaf hashes are kept of a purged month (0: none)."""

    def purged_leaves(self, period: str, start: int, count: int) -> bytes:
        """Kept leaf hashes of a purged month, 32 bytes each in sequence order: ``count`` of them
        from the ``start``-th (0: the month's first record); fewer if the month has fewer."""

    def kept(self) -> dict[int, bytes]:
        """Sealed bytes of the purge records whose own month was purged, by sequence number
        (the proof of a purge outlives the month it was written in)."""

    def journal_id(self) -> str | None:
        """The journal's identity, or None (no journal yet)."""

    # -- metadata read-backs (plaintext columns only: nothing is decrypted) -------------------

    def metadata(self, period: str, columns: Sequence[str], *, first_seq: int = 0, last_seq: int | None = None,
                 start: int | None = None, end: int | None = None, kinds: Sequence[str] | None = None,
                 where: Mapping[str, object] | None = None, not_null: Sequence[str] = ()) -> Iterator[tuple]:
        """The metadata ``columns`` (names of :data:`msc.journal.records.META_COLUMNS`) of a
        month's records, in sequence order: ``first_seq <= seq <= last_seq``, ``start <= ts < end``
        (µs), ``kind`` one of ``kinds``, the columns of ``where`` equal, those of ``not_null`` set.
        The switch's restart read-backs and the misuse report use it."""

    def seq_at(self, period: str, ts: int) -> int | None:
        """The smallest sequence number of the month whose time is ``>= ts`` (µs); one past its
        last record when all are earlier; None for an empty month (times never decrease)."""

    def end(self, period: str, up_to: int | None = None) -> tuple[int, int] | None:
        """(``up_to``, or the month's last sequence number, and the time of the newest record at or
        below it), or None when the month has no such record."""

    def txn_summary(self, period: str, first_seq: int, last_seq: int) -> list[TxnSummary]:
        """Per transaction id, over the month's ``FORWARDED``, ``RECEIVED`` and ``UNDELIVERED``
        records with ``first_seq <= seq <= last_seq`` that carry one: one grouped pass in the
        storage (the restart read-backs of :mod:`msc.journal.search`)."""

    def close(self) -> None:
        """Release every connection."""


class TxnSummary(NamedTuple):
    """One transaction's records in a range of the journal (:meth:`JournalReader.txn_summary`)."""

    txn: str
    fseq: int | None  # the last FORWARDED record
    fts: int | None  # the latest time of a FORWARDED record
    fmke: str | None  # the greatest message key of a FORWARDED record
    request_seq: int | None  # the last FORWARDED record that expects an answer (message key not AM)
    rseq: int | None  # the last RECEIVED record
    notices: int  # RECEIVED records of message key MSC (notices msc generated)
    outputs: int  # RECEIVED records with an OSN (outputs created)
    landed: int  # UNDELIVERED E501 records (outputs whose record landed while the commit failed)
    #: RECEIVED records msc did not make (peer other than MSC), less one per FORWARDED record
    #: (the request's own RECEIVED record, in the FORWARDED record's commit): the answer's parts
    #: as they came from the upstream (an answer split for the station's frames counts once).
    parts: int
    last_part: int | None  # the last RECEIVED record msc did not make (a part, or the request's own)


#: :meth:`JournalReader.txn_summary`'s aggregates, in :class:`TxnSummary` order after ``txn``
#: (standard SQL but for the null-safe not-equal tests, which the backend gives as ``{ne_am}``,
#: ``mke`` not AM, and ``{ne_msc}``, ``peer`` not MSC).
TXN_SUMMARY_SQL = (
    "MAX(CASE WHEN kind = 'FORWARDED' THEN seq END), "
    "MAX(CASE WHEN kind = 'FORWARDED' THEN ts END), "
    "MAX(CASE WHEN kind = 'FORWARDED' THEN mke END), "
    "MAX(CASE WHEN kind = 'FORWARDED' AND {ne_am} THEN seq END), "
    "MAX(CASE WHEN kind = 'RECEIVED' THEN seq END), "
    "SUM(CASE WHEN kind = 'RECEIVED' AND mke = 'MSC' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN kind = 'RECEIVED' AND osn IS NOT NULL THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN kind = 'UNDELIVERED' AND code = 'E501' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN kind = 'RECEIVED' AND {ne_msc} THEN 1 WHEN kind = 'FORWARDED' THEN -1 ELSE 0 END), "
    "MAX(CASE WHEN kind = 'RECEIVED' AND {ne_msc} THEN seq END)")
