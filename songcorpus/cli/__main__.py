"""``python -m songcorpus.cli``: the same command as the ``songcorpus`` script (songcorpus/cli/__init__.py)."""

import sys

from songcorpus.cli import main

sys.exit(main())
