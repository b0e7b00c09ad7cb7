"""Former home of the SQLite journal's layout, writer and reader, now split (ARCHITECTURE.md
"Storage interfaces"): :mod:`msc.journal.schema` (files, tables, row types), :mod:`msc.journal.writer`
(the single writer), :mod:`msc.journal.reader` (read-only access), :mod:`msc.journal.recovery`
(what a writer re-reads at open) and :mod:`msc.journal.retention` (purges).

Only re-exports remain, for code written against the old module; import from the modules above.
"""

from msc.journal.bundle_verifier import checkpoint_message  # noqa: F401
from msc.journal.reader import Reader  # noqa: F401
from msc.journal.schema import (  # noqa: F401
                                COLUMNS,
                                META_SCHEMA,
                                PARTITION_RE,
                                PARTITION_SCHEMA,
                                Checkpoint,
                                Row,
                                StoredRecord,
                                connect,
                                journal_id,
                                last_checkpoint,
                                list_partitions,
                                load_checkpoints,
                                load_gaps,
                                load_purge_seqs,
                                load_purged,
                                open_meta,
                                partition_path,
                                read_leaves_file,
)
from msc.journal.writer import GAP_US, MAX_ROWS_PER_STATEMENT, JournalBusy, Writer, insert_rows  # noqa: F401
