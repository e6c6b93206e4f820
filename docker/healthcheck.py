"""HEALTHCHECK of the connector image: /livez of the service this container runs.

The gateway's /livez stays on its webhook port (GATEWAY_PORT): liveness is about that port answering. Its
/readyz and /metrics are on the admin listener (GATEWAY_ADMIN_PORT), for the orchestrator and Prometheus.

The gateway (HTTPS, its self-signed or mounted certificate: liveness, not identity, is checked) or the
processors (plain HTTP); a container running another command (`topics`, ...) has no server and is healthy.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from pathlib import Path


# The settings classes are imported only when the variable is unset: pydantic's import alone can outlast a
# healthcheck's timeout on a busy host.
def _default_gateway_port() -> object:
    from gateway.settings import GatewaySettings

    return GatewaySettings.model_fields["port"].default


def _default_processor_port() -> object:
    from processors.settings import ProcessorSettings

    return ProcessorSettings.model_fields["health_port"].default


def main() -> int:
    command = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    context = None
    if b"gateway" in command:
        port = os.environ.get("GATEWAY_PORT") or _default_gateway_port()
        url = f"https://127.0.0.1:{port}/livez"
        context = ssl._create_unverified_context()  # noqa: S323
    elif b"processor" in command:
        port = os.environ.get("PROCESSOR_HEALTH_PORT") or _default_processor_port()
        if str(port) == "0":
            return 0
        url = f"http://127.0.0.1:{port}/livez"
    else:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
