#!/usr/bin/env python3
"""dhcpkit 1.0.7's DHCPv6 server (``ipv6-dhcpd``), patched at run time for Python 3.11.

Used by tests/common/dhcpkit_server.rs as a Leasequery/Bulk Leasequery server to test lqd's
requestor CLI against. Usage is the server's own: ``dhcpkit_server.py [-v...] CONFIG``.

dhcpkit 1.0.7 (the last release, 2017) does not run unpatched on Python >= 3.8/3.11:

1. ``LeasequerySqliteStore.create_tables()`` (run once in the main process at start-up) opens the
   database with ``isolation_level="IMMEDIATE"``, deletes expired rows, then runs ``VACUUM`` in the
   same ``with db:`` block. Since Python 3.6 the DELETEs implicitly open a transaction, and SQLite
   refuses ``VACUUM`` inside one: "cannot VACUUM from within a transaction", and the server dies
   before it listens. Patch: the connection create_tables() uses is put in autocommit mode
   (``isolation_level = None``); the workers' own connections are left as they are.
2. ``NonBlockingPool.apply_async()`` builds ``multiprocessing.pool.ApplyResult(self._cache, ...)``,
   the pre-3.8 signature; since 3.8 the first argument is the pool itself, so every received packet
   raises ``AttributeError: 'dict' object has no attribute '_cache'`` and, after
   ``max-exceptions`` of them in ``exception-window`` seconds, the server exits. Patch: the same
   method passing the pool.

Nothing in site-packages is modified. The patches are applied at import time, so they also hold
in the forkserver's worker processes, which import this file as ``__mp_main__``.
"""

import sys
from multiprocessing.pool import RUN, ApplyResult
from queue import Full

from dhcpkit.ipv6.server import main as server_main
from dhcpkit.ipv6.server.extensions.leasequery.sqlite import LeasequerySqliteStore
from dhcpkit.ipv6.server.nonblocking_pool import NonBlockingPool

_original_create_tables = LeasequerySqliteStore.create_tables


def _create_tables(self):
    """create_tables() on an autocommit connection, so its VACUUM is outside any transaction."""
    open_database = self.open_database

    def autocommit_database():
        db = open_database()
        db.isolation_level = None
        return db

    self.open_database = autocommit_database
    try:
        _original_create_tables(self)
    finally:
        # An instance attribute would be pickled into the workers: remove it.
        del self.open_database


def _apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None):
    """NonBlockingPool.apply_async() with the Python >= 3.8 ApplyResult signature."""
    if self._state != RUN:
        raise ValueError("Pool not running")
    try:
        result = ApplyResult(self, callback, error_callback)
        self._taskqueue.put(([(result._job, None, func, args, kwds or {})], None), block=False)
    except Full:
        return None
    return result


LeasequerySqliteStore.create_tables = _create_tables
NonBlockingPool.apply_async = _apply_async

if __name__ == "__main__":
    sys.argv[0] = "ipv6-dhcpd"
    sys.exit(server_main.run())
