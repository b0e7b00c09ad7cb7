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
