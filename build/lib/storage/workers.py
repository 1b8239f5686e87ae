"""Names of the process that claims shared work (touch batches, sweep leases) and says so in logs."""

from __future__ import annotations

import os
import socket
import uuid


def worker_id() -> str:
    """Host and pid: the same for every call in one process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_holder() -> str:
    """Host, pid and a random suffix: tells apart two leases taken by one process."""
    return f"{worker_id()}:{uuid.uuid4().hex[:8]}"
