"""Which refusals of the lease's database are a configuration error (``msc serve`` of a node exits
2) and which an outage (the node waits as a standby): msc.ha.pglease.is_configuration_error.
The processes and a real PostgreSQL: tests/e2e/test_node_database_errors.py."""

from __future__ import annotations

import asyncpg.exceptions as pgx
import pytest

from msc.ha.pglease import LeaseMisconfigured, LeaseUnavailable, is_configuration_error

#: (the error, is it the configuration's)
ERRORS = [
    (pgx.InvalidPasswordError("password authentication failed for user \"msc\""), True),        # 28P01
    (pgx.InvalidAuthorizationSpecificationError("no pg_hba.conf entry for host"), True),         # 28000
    (pgx.InvalidCatalogNameError("database \"nosuchdb\" does not exist"), True),                 # 3D000
    (pgx.InsufficientPrivilegeError("permission denied for database \"msc\""), True),            # 42501
    (pgx.ClientConfigurationError("invalid sslmode"), True),
    (LeaseMisconfigured("lease database: …"), True),
    (ConnectionRefusedError(111, "Connect call failed"), False),                                  # nothing listens
    (TimeoutError(), False),
    (OSError(113, "No route to host"), False),
    (pgx.CannotConnectNowError("the database system is starting up"), False),                   # 57P03
    (pgx.AdminShutdownError("terminating connection due to administrator command"), False),      # 57P01
    (pgx.CrashShutdownError("terminating connection because of crash of another process"), False),
    (pgx.TooManyConnectionsError("sorry, too many clients already"), False),                     # 53300
    (pgx.ConnectionDoesNotExistError("connection was closed in the middle of operation"), False),
    (pgx.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"), False),  # a replica
    (pgx.TargetServerAttributeNotMatched("none of the hosts is read-write"), False),             # Patroni failover
    (pgx.InternalClientError("unexpected connection_lost() call"), False),
    (LeaseUnavailable("lease database: …"), False),
]


@pytest.mark.parametrize(("exc", "configuration"), ERRORS, ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_configuration_errors_are_told_from_outages(exc, configuration):
    assert is_configuration_error(exc) is configuration


# -- the reason a lease call gives (/readyz lease_error, lease.unavailable): never empty -------------

class _Conn:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def is_closed(self) -> bool:
        return False

    async def fetch(self, *_a, **_k):
        raise self.exc

    def terminate(self) -> None:
        pass


#: (what the database did, the reason after "lease database: ")
CALL_FAILURES = [
    ("connect-hangs", None, "no answer within 0.05 s while connecting (TimeoutError)"),
    ("query-times-out", TimeoutError(), "no answer within 0.05 s during the lease query (TimeoutError)"),
    ("reset", ConnectionResetError(), "the connection was reset during the lease query (ConnectionResetError)"),
    ("refused", ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
     "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 5432)"),
    ("shutdown", pgx.AdminShutdownError("terminating connection\nDETAIL: admin"),
     "AdminShutdownError: terminating connection DETAIL: admin"),
    ("no-message", pgx.InternalClientError(), "no reason given during the lease query (InternalClientError)"),
]


@pytest.mark.parametrize(("failure", "exc", "reason"), CALL_FAILURES, ids=[c[0] for c in CALL_FAILURES])
async def test_a_failed_lease_call_says_why_in_words(failure, exc, reason):
    import asyncio

    from msc.ha.pglease import PgLease

    async def connect():
        if exc is None:
            await asyncio.Event().wait()  # a frozen server: the handshake never answers
        return _Conn(exc)

    lease = PgLease(connect, holder="msc-a", ttl_s=5, timeout_s=0.05)  # the call's bound, not a speed
    lease._schema_ready = True  # (the schema is the integration tests'; this is the reason's wording)
    with pytest.raises(LeaseUnavailable) as e:
        await lease.acquire()
    assert str(e.value) == f"lease database: {reason}"
