"""The argparse part of `pinwheel-connector acls` (operate/acls.py derives the ACLs): light, so the CLI's parser
is built without importing the components' settings and topics."""

from __future__ import annotations

import argparse

COMPONENTS: tuple[str, ...] = (
    "gateway",
    "processors",
    "topics",
    "tail",
    "verify",
    "deadletter-list",
    "deadletter-show",
    "deadletter-replay",
    "processor-reset",
)
"""Every component that talks to Kafka: the two services, the topics job, and each operator command
(`deadletter list|show|replay`, `processor reset`, `tail`, `verify`; `spool status`, `simulate`, `webhooks` and
`config` never reach Kafka)."""


def _principal(value: str) -> tuple[str, str]:
    component, sep, principal = value.partition("=")
    if not sep or component not in COMPONENTS or ":" not in principal:
        raise argparse.ArgumentTypeError(
            f"expected COMPONENT=User:NAME with COMPONENT one of {', '.join(COMPONENTS)}, got {value!r}"
        )
    return component, principal


def add_acls_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    acl = sub.add_parser("acls", help="print the Kafka ACLs each component needs (kafka-acls command lines or JSON)")
    acl.add_argument(
        "--component", action="append", choices=COMPONENTS, help="only this component (repeatable; default: all)"
    )
    acl.add_argument(
        "--principal", action="append", type=_principal, default=[], metavar="COMPONENT=User:NAME",
        help="the principal of a component (repeatable; default User:pinwheel-COMPONENT)",
    )  # fmt: skip
    acl.add_argument(
        "--application-id", default=None, help="the processors' application id (default PROCESSOR_APPLICATION_ID)"
    )
    acl.add_argument("--format", choices=["commands", "json"], default="commands", help="output format")
    acl.set_defaults(func=_acls_command)


def _acls_command(args: argparse.Namespace) -> int:
    from operate.acls import acls_command

    return acls_command(args)
