"""Scratch files beside a saved index, and the sweep of those a killed process left behind.

A loaded index that grows (``add`` after ``load``) copies its fine vectors, or its texts, to a scratch
file in the index folder and removes it when done. A process killed with SIGKILL cannot remove it, so
each scratch name carries its host and process id (``grow-[kind-]<host>-<pid>-<random><suffix>``) and
:func:`sweep` removes those whose process, on this host, is gone. Files of other hosts (a shared folder)
and of live processes are left alone; so is everything on Windows, where no harmless liveness check of a
process id exists in the standard library.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from pathlib import Path

PREFIX = "grow-"
_NAME = re.compile(r"^grow-(?:[a-z]+-)?(?P<host>[A-Za-z0-9.]+)-(?P<pid>\d+)-[0-9a-f]{12}\.[a-z]+$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname()) or "host"


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
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
