"""The journal's 14 metadata fields are defined once (msc.journal.records.META_COLUMNS); every
other place that lists them follows that definition or is checked against it here."""

from __future__ import annotations

from msc.journal import bundle_verifier
from msc.journal.export import JSON_KEYS
from msc.journal.records import ENTRY_COLUMNS, META_COLUMNS, Entry, Meta, Record
from msc.journal.schema import COLUMNS, PARTITION_SCHEMA, connect


def test_the_sealed_metadata_is_the_definition():
    assert Meta.__struct_fields__ == ("v", *META_COLUMNS, "period", "commit")
    assert len(META_COLUMNS) == 14 and META_COLUMNS[:2] == ("seq", "ts")
    assert set(ENTRY_COLUMNS) <= set(Entry.__struct_fields__)
    assert set(META_COLUMNS) <= set(Record.__struct_fields__)


def test_the_stand_alone_verifier_reads_the_same_fields():
    # bundle_verifier ships inside export bundles and imports only the standard library: it keeps
    # its own list, checked here.
    assert bundle_verifier.META_FIELDS == ("v", *META_COLUMNS, "period", "commit")
    assert set(bundle_verifier.COMPARED) <= set(META_COLUMNS)


def test_the_records_table_has_the_columns_in_order(tmp_path):
    conn = connect(tmp_path / "2026-11.db")
    conn.executescript(PARTITION_SCHEMA)
    names = tuple(r[1] for r in conn.execute("PRAGMA table_info(records)"))
    conn.close()
    assert COLUMNS == META_COLUMNS
    assert names == (*META_COLUMNS, "blob", "leaf", "tokens")


def test_an_export_keeps_its_documented_keys():
    # JOURNAL.md "Search, print, export": the jsonl/csv keys, in this order, are a published format.
    assert JSON_KEYS == ("seq", "ts", "kind", "direction", "peer", "mnemonic", "user", "taf", "ori", "mke", "txn",
                         "code", "purpose", "requester", "recipient", "text")
