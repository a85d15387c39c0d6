"""litellm custom providers of the built-in strategy kinds, and their shared base (:mod:`.base`).

Importing this package imports neither litellm nor torch; the modules import litellm.
"""

import os

# Before any module of the package imports litellm: litellm fetches its price map from GitHub at
# import unless told to use the copy it ships (Triage prices calls itself; no network at start-up).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
