"""Build the API reference with pdoc, every pdoc warning an error (run by ``.ci/run``).

    python docs/api.py -o DIR        # write the HTML
    python docs/api.py               # serve it at http://localhost:8080

The package's public names load on first use (PEP 562, ``adaptive_retrieval/__init__.py``), and pdoc
reads a module's namespace as it is: they are resolved here first. Every module is given by its file,
since ``__all__`` names only the public objects and pdoc follows no other submodule.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import adaptive_retrieval

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    for name in adaptive_retrieval.__all__:  # the lazy names, as pdoc expects to find them
        getattr(adaptive_retrieval, name)
    warnings.simplefilter("error", UserWarning)
    # a file whose module a package's page already documents: pdoc says so, harmlessly
    warnings.filterwarnings("ignore", "The module specification", UserWarning)
    from pdoc.__main__ import cli

    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "adaptive_retrieval").rglob("*.py"))
    sys.argv = ["pdoc", "--docformat", "google", *sys.argv[1:], *files, "!.*__main__"]
    cli()


if __name__ == "__main__":
    main()
