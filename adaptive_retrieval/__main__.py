"""`python -m adaptive_retrieval`: the command line (see :mod:`adaptive_retrieval.cli`)."""

import sys

from .cli import main

sys.exit(main())
