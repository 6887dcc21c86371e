"""Where an add's coarse vectors wait for their commit (:class:`CoarseSpill`): in RAM, or in a locked
scratch file beside an on-disk fine store, so that a failed add leaves the FAISS index untouched."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .errors import RetrieverBusy
from .fine_store import as_matrix

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


class CoarseSpill:
    """Coarse vectors of an add in progress, held until every document is encoded, so that a failed
    add leaves the FAISS index untouched. In RAM, or (``path`` given) in a scratch file that
    :meth:`close` deletes, so that a streamed build's RAM does not grow with the corpus.

    The scratch file is locked (``flock``) while the add runs, so one left by a killed process (whose
    lock died with it) is emptied and reused, with a warning, and one in use by another add is refused.
    Where ``flock`` is missing (Windows), any existing file is refused with a message instead."""

    def __init__(self, dim: int, path: Path | None = None) -> None:
        self.dim, self.path, self.count = dim, path, 0
        self._parts: list[np.ndarray] = []
        self._fd: int | None = None
        if path is not None:
            self._fd = _lock_scratch(path)

    def append(self, vectors: np.ndarray) -> None:
        vectors = as_matrix(vectors, self.dim, "coarse vectors")
        if self.path is None:
            self._parts.append(vectors)
        else:
            with open(self.path, "ab") as fh:
                fh.write(vectors.data)  # the array's own bytes, not a copy
        self.count += len(vectors)

    def _matrix(self) -> np.ndarray:
        if self.path is None:
            self._parts = [np.concatenate(self._parts)] if len(self._parts) > 1 else self._parts
            return self._parts[0] if self._parts else np.empty((0, self.dim), np.float32)
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.count, self.dim))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` rows drawn at random without replacement (all rows, if there are no more than ``n``),
        in row order: a training sample for IVF/PQ indexes that does not depend on the corpus order."""
        matrix = self._matrix()
        if self.count <= n:
            return np.asarray(matrix)
        rows = np.sort(np.random.default_rng(seed).choice(self.count, n, replace=False))
        return np.asarray(matrix[rows])

    def blocks(self, size: int = 262_144):
        """The rows in order, ``size`` at a time; from a scratch file by plain reads (not a memory map,
        whose pages would count in the process's RSS until it is closed)."""
        if self.path is None:
            for part in self._parts:  # as appended: no joined copy
                for start in range(0, len(part), size):
                    yield part[start : start + size]
            return
        with open(self.path, "rb") as fh:
            for start in range(0, self.count, size):
                n = min(size, self.count - start)
                yield np.fromfile(fh, dtype=np.float32, count=n * self.dim).reshape(n, self.dim)

    def close(self) -> None:
        self._parts = []
        if self.path is not None:
            self.path.unlink(missing_ok=True)  # before the lock goes: no one else takes this file
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock_scratch(path: Path) -> int | None:
    """Create or take ``path`` as this process's scratch file, holding an exclusive ``flock`` on it
    (returned: the descriptor, to close when done). A file whose lock another process holds is refused;
    one nobody holds was left by a killed add: emptied, with a warning."""
    busy = (
        f"{path} is in use: another add or build into this fine store is running now. One add at a time: "
        "wait for it (or, if no other process uses this index, delete that file and retry)"
    )
    if fcntl is None:  # pragma: no cover - Windows: no flock; refuse any leftover
        try:
            open(path, "xb").close()
        except FileExistsError:
            raise RetrieverBusy(
                f"{path} exists: an add or build into this fine store was killed, or another process is "
                "adding to it now. If no other process uses it, delete that file and retry; nothing of "
                "the index depends on it"
            ) from None
        return None
    for _ in range(100):
        existed = path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RetrieverBusy(busy) from None
            except OSError:  # a file system without flock: as on Windows, refuse a leftover
                if existed:
                    raise RetrieverBusy(
                        f"{path} exists: an add or build into this fine store was killed, or another process "
                        "is adding to it now. If no other process uses it, delete that file and retry"
                    ) from None
                os.close(fd)
                return None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                left = os.fstat(fd).st_size
                if left:
                    logger.warning(
                        "%s: emptied a scratch file of %d bytes left by an add or build that was killed (the "
                        "index never depended on it)", path, left,
                    )  # fmt: skip
                    os.ftruncate(fd, 0)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder deleted it between our open and our lock: take the path anew
    raise RetrieverBusy(busy)  # pragma: no cover - a path deleted under us 100 times over


__all__ = ["CoarseSpill"]
