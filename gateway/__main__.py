"""`python -m gateway [--self-signed]`: run the gateway with settings from the environment."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from common.settings import settings_error_text
from gateway.server import ConfigError, run
from gateway.settings import GatewaySettings
from gateway.tls import ensure_self_signed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument(
        "--self-signed",
        action="store_true",
        help="create a self-signed certificate at the configured paths if missing",
    )
    args = parser.parse_args(argv)
    try:
        settings = GatewaySettings()  # secrets come from the environment
    except ValidationError as exc:
        # Fail fast, naming the variables and reasons only (the values may be secrets).
        print(f"gateway: {settings_error_text(exc) or 'invalid settings'}", file=sys.stderr)
        return 2
    if args.self_signed:
        ensure_self_signed(settings.tls_cert_file, settings.tls_key_file)
    try:
        run(settings)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
