"""msc serve's garbage-collector watch (msc.ops.metrics.Metrics.watch_gc, PERFORMANCE.md "Where the
tail came from"): every collection's pause lands in ``msc_gc_pause_seconds`` under its generation,
nothing more once the watch is stopped, and ``msc_gc_frozen_objects`` is the process's frozen count."""

from __future__ import annotations

import gc

import pytest
from prometheus_client.parser import text_string_to_metric_families

from msc.ops.metrics import GC_GENERATIONS, Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(m.exposition()[0].decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def pauses(m: Metrics, generation: str) -> float:
    return samples(m)[("msc_gc_pause_seconds_count", (("generation", generation),))]


@pytest.mark.parametrize("collections", [(0,), (1,), (2,), (0, 2), (2, 2, 1), (0, 0, 0, 1)])
def test_each_collection_is_one_pause_of_its_generation(collections):
    m = Metrics()
    assert [pauses(m, g) for g in GC_GENERATIONS] == [0, 0, 0]  # the series exist before any pause
    stop = m.watch_gc()
    before = gc.isenabled()
    gc.disable()  # only the collections asked for below (an allocation could start another)
    try:
        for generation in collections:
            gc.collect(generation)
    finally:
        stop()
        if before:
            gc.enable()
    for g in GC_GENERATIONS:
        assert pauses(m, g) == collections.count(int(g)), (g, collections)
    total = sum(v for (name, _labels), v in samples(m).items() if name == "msc_gc_pause_seconds_sum")
    assert total >= 0


def test_a_stopped_watch_counts_nothing_more_and_stopping_twice_is_harmless():
    m = Metrics()
    stop = m.watch_gc()
    gc.collect(2)
    stop()
    stop()
    gc.collect(2)
    assert pauses(m, "2") == 1


def test_the_frozen_count_is_the_processes():
    m = Metrics()
    assert samples(m)[("msc_gc_frozen_objects", ())] == gc.get_freeze_count()
