"""Prefect Event Router: turn messages from queues into Prefect flow runs."""

import os

# The original tool read PREFECT_API_URI; Prefect reads PREFECT_API_URL. Alias it
# before anything imports prefect, whose settings are read at import time.
if not os.environ.get("PREFECT_API_URL") and os.environ.get("PREFECT_API_URI"):
    os.environ["PREFECT_API_URL"] = os.environ["PREFECT_API_URI"]

__version__ = "0.1.0"
