"""``python -m kfnlp`` is the ``kfnlp`` command."""

import sys

from kfnlp.cli import main

sys.exit(main())
