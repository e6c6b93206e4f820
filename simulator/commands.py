"""The `simulate` and `verify` subcommands of `pinwheel-connector` (argument handling only)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson
from pydantic import ValidationError

from common.settings import KafkaSettings, settings_error_text
from simulator.ledger import read_ledger
from simulator.settings import SimulatorSettings
from simulator.simulate import print_result, simulate
from simulator.verify import format_report, run_verify


def simulate_command(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("url", "accounts", "seed", "rate", "concurrency", "time_scale", "ledger", "ca_file")
        if getattr(args, name, None) is not None
    }
    if args.no_capture:
        overrides["include_capture"] = False
    if args.no_progress:
        overrides["progress"] = False
    try:
        settings = SimulatorSettings(**overrides)
        settings.traffic()
    except ValidationError as exc:
        print(f"simulate: {settings_error_text(exc) or 'invalid settings'}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    if settings.secret is None:
        print("simulate: set SIMULATOR_SECRET to the secret the gateway verifies with", file=sys.stderr)
        return 2
    if settings.ca_file is not None and not settings.ca_file.is_file():
        print(
            f"simulate: no CA file {settings.ca_file} to trust the gateway's certificate with: pass --ca-file "
            "(the gateway's certificate; `pinwheel-connector gateway --self-signed` creates one) or set "
            "SIMULATOR_CA_FILE empty for the system trust store",
            file=sys.stderr,
        )
        return 2
    try:
        run = asyncio.run(simulate(settings))
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    print_result(run)
    print(f"ledger: {settings.ledger}")
    r = run.result
    return 0 if r.rejected_deliveries == 0 and r.gave_up_deliveries == 0 else 1


def verify_command(args: argparse.Namespace) -> int:
    try:
        ledger = read_ledger(args.ledger)
    except FileNotFoundError:
        print(f"verify: no ledger at {args.ledger}; run `pinwheel-connector simulate` first", file=sys.stderr)
        return 2
    report = run_verify(ledger, KafkaSettings(), args.wait)
    if args.json:
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_report(report))
    return 0 if report.ok else 1
