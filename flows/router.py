"""The router flow's entrypoint: `python flows/router.py CONFIG`, or `flows/router.py:event_router`
in a deployment."""

import os
import sys

# This file shares its name with the package `router`. Run as a script (or loaded by a
# worker), its folder comes first on sys.path and `import router` would find this file:
# put the project root first instead, and forget any half-imported module named router.
_FLOWS_DIR = os.path.dirname(os.path.abspath(__file__))
_PROJECT_ROOT = os.path.dirname(_FLOWS_DIR)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _FLOWS_DIR]
sys.path.insert(0, _PROJECT_ROOT)
if getattr(sys.modules.get("router"), "__file__", None) == os.path.abspath(__file__):
    del sys.modules["router"]

from router.flow import event_router  # noqa: E402

__all__ = ["event_router"]

if __name__ == "__main__":
    from router.cli import main  # noqa: E402

    sys.exit(main(["run", *sys.argv[1:]]))
