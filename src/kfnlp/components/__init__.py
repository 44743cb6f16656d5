"""KFP v2 components: thin wrappers that call the stage functions in kfnlp.stages.

Each component module imports only the standard library and kfp at its top level;
the body imports kfnlp inside the container (or the local subprocess).
"""

import os

# The runtime image every component runs in on a cluster (see images/).
IMAGE = os.environ.get("KFNLP_IMAGE", "ghcr.io/kfnlp/kfnlp:0.1.0")
