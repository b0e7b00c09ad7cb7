"""How long a test waits for something that should happen.

A bound for a hang, not a speed: the CI machine (2 cores, two test processes, other work beside
them) can take seconds for what takes milliseconds on an idle one, and a test that asserts a
speed fails there on a slow moment, not on a fault. A generous bound costs time only when the test
fails anyway (pytest-timeout's 120 s per test is the last resort). What a test measures it prints;
it asserts outcomes (docs: "performance is measured, not asserted").
"""

from __future__ import annotations

#: Seconds to wait for a condition, an answer, an output or a closed connection.
HANG_S = 30.0

#: Seconds to wait for a process to start (an `msc` command's ready file, a port it opens):
#: a Python start-up, a configuration check and a journal's self-check on a loaded machine.
START_S = 60.0

#: How long past its ``timeout`` (120 s unless marked) a test may still run — pytest-timeout fails
#: it once and then stops watching, also after any other failure — before its main thread is
#: interrupted with every thread's stack (tests/conftest.py): a teardown that hangs (an event loop
#: closing waits for ever for a worker thread that never returns) would otherwise stall the run.
AFTER_TIMEOUT_S = 60.0
