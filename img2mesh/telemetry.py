"""No library we run reports to a third party: the switches, defined once.

ONNX Runtime 1.29 and later send 1DS telemetry on Linux (a DNS lookup of
`mobile.events.data.microsoft.com`, then HTTPS) a few seconds after their environment is created,
before any API call can stop it; only `ORT_DISABLE_TELEMETRY=1` in the environment *before* the
library initialises does (docs/facts.md, "Telemetry"). huggingface_hub reports each download to
the hub unless `HF_HUB_DISABLE_TELEMETRY=1`. These values are forced, not defaulted: an operator's
consent is not something an inherited environment variable can give on their behalf.

Every process of ours imports this package before any engine, so `img2mesh/__init__.py` applies
them to its own environment, which the processes it starts inherit; `local_triton` adds them to the
server's environment explicitly, and the images, compose and the Helm chart set the same pairs
(tests/ops check that they carry all of them).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

TELEMETRY_OFF: dict[str, str] = {
    "ORT_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def switch_off_telemetry(environment: MutableMapping[str, str] = os.environ) -> None:
    """Set every switch of `TELEMETRY_OFF` in ``environment`` (the process's own by default)."""
    environment.update(TELEMETRY_OFF)
