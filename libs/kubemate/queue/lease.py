"""Who holds a piece of work: a stream entry's lease, and the exception that ends a holder's run.

Apart from the streams (no Redis import), so code that leases other things (the model
manager's pull locks) shares the exception without the stream machinery.
"""

from __future__ import annotations

from enum import IntEnum


class Lease(IntEnum):
    """Where a pending entry stands for the consumer asking."""

    GONE = -1  # acknowledged: nothing is owed any more
    LOST = 0  # pending, but another consumer took it over
    HELD = 1  # pending and owned by the caller


class LeaseLost(Exception):
    """Another owner holds the work now (a consumer took the stream entry over, a replica the
    lock): stop without finishing, acknowledging or writing anything more for it."""
