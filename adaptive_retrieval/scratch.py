"""Scratch files beside a saved index, and the sweep of those a killed process left behind.

A loaded index that grows (``add`` after ``load``) copies its fine vectors, or its texts, to a scratch
file in the index folder and removes it when done. A process killed with SIGKILL cannot remove it, so
each scratch name carries its host and process id (``grow-[kind-]<host>-<pid>-<random><suffix>``, the host
with a digest of its full name and process-id namespace) and
:func:`sweep` removes those whose process, on this host, is gone. Files of other hosts (a shared folder)
and of live processes are left alone; so is everything on Windows, where no harmless liveness check of a
process id exists in the standard library.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import uuid
from pathlib import Path

PREFIX = "grow-"
# the suffix may be double: an add's coarse vectors beside a grown store are ``<store>.npy.pending``
_NAME = re.compile(r"^grow-(?:[a-z]+-)?(?P<host>[A-Za-z0-9.]+)-(?P<pid>\d+)-[0-9a-f]{12}(?:\.[a-z]+)+$")


def _host() -> str:
    """This host as a name part: its name (letters, digits, dots; at most 24) and a digest of its full
    name and process-id namespace, so that hosts whose names differ only in other characters, and
    containers that share a name but not their process ids, never take each other's files for theirs."""
    name = socket.gethostname()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino  # Linux; containers differ here
    except OSError:
        namespace = 0
    digest = hashlib.sha256(f"{name}\0{namespace}".encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9.]', '', name)[:24] or 'host'}.{digest}"


def scratch_path(beside: Path, suffix: str, kind: str = "") -> Path:
    """A new scratch file's path in ``beside``'s folder, named for this host and process."""
    tag = f"{kind}-" if kind else ""
    return Path(beside).with_name(f"{PREFIX}{tag}{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: checks the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def sweep(folder: Path) -> list[Path]:
    """Remove the scratch files in ``folder`` left by processes of this host that no longer run; return
    what was removed."""
    if os.name == "nt" or not Path(folder).is_dir():
        return []
    host, removed = _host(), []
    for path in Path(folder).glob(f"{PREFIX}*"):
        match = _NAME.match(path.name)
        if match is None or match["host"] != host or int(match["pid"]) == os.getpid():
            continue
        if not _alive(int(match["pid"])):
            try:
                path.unlink(missing_ok=True)
            except OSError:  # a read-only folder, another user's file: it stays, the load goes on
                continue
            removed.append(path)
    return removed
