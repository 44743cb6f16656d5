#!/usr/bin/env python3
"""Regenerate the config tables in docs/configuration.md and components/*/README.md
(see src/kfnlp/docs.py).

    python tools/gen_config_docs.py           # rewrite the generated parts
    python tools/gen_config_docs.py --check   # exit 1 if one is out of date
"""

import sys

from kfnlp.docs import main

if __name__ == "__main__":
    sys.exit(main())
