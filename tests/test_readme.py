"""The README and docs/ name only what exists.

Every `pinwheel-connector ...` command shown in code (its subcommands, positional choices and flags) parses with
the real CLI parser; every `make <target>` is a target of the Makefile; every environment variable that looks like
one of ours is read by a settings class or defined by docker-compose.yml, docker/, the Makefile or the tests; every
relative link leads to a file, and to a heading of it when it names one. A renamed flag or variable fails here
instead of misleading a newcomer. The configuration table itself is checked in tests/test_deployment.py.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from common.settings import KafkaSettings, env_names
from connector.cli import build_parser
from connector.config_docs import settings_classes
from operate.subscription import required_events
from processors.logic.readiness import parse_rule
from schemas.catalog import DEFAULT_READINESS_RULE, KNOWN_EVENT_TYPES
from schemas.settings import SchemaSettings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "schemas" / "README.md"]
# Variables of ours start with one of these; others (SASL_SSL, AWS_MSK_IAM, Kafka's own) are not checked.
OUR_PREFIXES = (
    "KAFKA_",
    "GATEWAY_",
    "PROCESSOR_",
    "SCHEMA_REGISTRY_",
    "TOPICS_",
    "LOCAL_KAFKA_",
    "LOCAL_REGISTRY_",
    "SIMULATOR_",
    "RUN_",
    "WATCHDOG_",
    "READINESS_",
    "PINWHEEL_",
    "PUBLISH_",
    "METRICS_PUBLISH_",
)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
COMMAND = re.compile(r"(?<![\w-])pinwheel-connector(?![\w/.-])([^\n#|&;`]*)")
MAKE = re.compile(r"(?<![\w/.-])make\s+([a-z][\w-]*)")
VARIABLE = re.compile(r"(?<![\w$])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)(_\*)?(?![\w*])")
LINK = re.compile(r"\]\(([^)\s]+)\)")
WORD = re.compile(r"^[a-z][a-z0-9_-]*(\|[a-z][a-z0-9_-]*)*$")


def code_texts(markdown: str) -> Iterator[str]:
    """The text of every fenced block (backslash continuations joined) and of every inline code span."""
    for block in FENCE.findall(markdown):
        yield block.replace("\\\n", " ")
    prose = FENCE.sub("", markdown)
    for span in re.findall(r"`([^`]+)`", prose):
        yield span.replace("\n", " ")


def command_problems(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """Walk `words` through the parser as argparse would, checking what can be checked without values: each
    subcommand and positional choice (`a|b|c` meaning each of them) and each flag. Placeholders (`<id>`, `P:O`)
    and flag values are skipped."""
    problems: list[str] = []
    current, positionals = parser, parser._get_positional_actions()
    expects_value = False
    for raw in words:
        if ")" in raw and not raw.startswith("("):
            raw = raw.split(")", 1)[0]
            last = True
        else:
            last = False
        word = raw.strip("[]\"'`,.:")
        if not word:
            pass
        elif expects_value:
            expects_value = False
        elif word.startswith("-"):
            flag = word.split("=", 1)[0]
            action = current._option_string_actions.get(flag)
            if action is None:
                problems.append(f"{current.prog}: no flag {flag}")
            else:
                expects_value = action.nargs != 0 and "=" not in word
        elif positionals:
            action = positionals[0]
            if action.nargs not in ("*", "+"):
                positionals = positionals[1:]
            if WORD.match(word) and action.choices is not None:
                names = word.split("|")
                unknown = [name for name in names if name not in action.choices]
                if unknown:
                    problems.append(f"{current.prog}: {unknown} not among {sorted(action.choices)}")
                elif isinstance(action, argparse._SubParsersAction):
                    current = action.choices[names[0]]
                    positionals = current._get_positional_actions()
        if last:
            break
    return problems


def commands(markdown: str) -> Iterator[list[str]]:
    for text in code_texts(markdown):
        for match in COMMAND.finditer(text):
            yield match.group(1).split()


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


def known_variables() -> set[str]:
    """Every variable something of ours reads or defines."""
    known = {env for _, cls in settings_classes() for env in env_names(cls).values()}
    for path in [ROOT / "docker-compose.yml", *sorted((ROOT / "docker").glob("*.yml"))]:
        text = path.read_text()
        known |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
        for service in (yaml.safe_load(text).get("services") or {}).values():
            known |= set(service.get("environment") or {})
    for path in (ROOT / "docker").rglob("*.sh"):
        known |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", path.read_text()))
    known |= set(re.findall(r"\b([A-Z][A-Z0-9_]+)\b", (ROOT / "Makefile").read_text()))
    for path in (ROOT / "tests").rglob("*.py"):
        known |= set(re.findall(r"[\"'](PINWHEEL_TEST_[A-Z0-9_]+)[\"']", path.read_text()))
    return known


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_command_shown_parses(path: Path) -> None:
    parser = build_parser()
    problems = [
        f"`pinwheel-connector {' '.join(words)}`: {problem}"
        for words in commands(path.read_text())
        for problem in command_problems(parser, words)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_make_target_exists(path: Path) -> None:
    targets = makefile_targets()
    named = {match for text in code_texts(path.read_text()) for match in MAKE.findall(text)}
    assert named - targets == set(), f"no such make target: {sorted(named - targets)}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_variable_named_exists(path: Path) -> None:
    known = known_variables()
    unknown = set()
    for name, star in VARIABLE.findall(path.read_text()):
        if not f"{name}_".startswith(OUR_PREFIXES) or ("_" not in name and not star):
            continue
        if star:  # a family, `KAFKA_SSL_*`: some variable of ours has that prefix
            if not any(variable.startswith(f"{name}_") for variable in known):
                unknown.add(name + star)
        elif name not in known:
            unknown.add(name)
    assert not unknown, f"variables nothing reads or defines: {sorted(unknown)}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", markdown).splitlines():
        if match := re.match(r"^#{1,6} (.+)$", line):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(path: Path) -> None:
    markdown = path.read_text()
    broken = []
    for target in LINK.findall(FENCE.sub("", markdown)):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text())):
            broken.append(target)
    assert not broken, f"links to nothing: {broken}"


def test_the_readme_subscription_satisfies_the_watchdog() -> None:
    """The `webhooks create` the README shows enables what the default readiness rule and the watchdog need, and
    only event types the CLI accepts."""
    created = [words for words in commands(README.read_text()) if words[:2] == ["webhooks", "create"]]
    assert len(created) == 1
    events = set(created[0][created[0].index("--events") + 1].split(","))
    assert events <= KNOWN_EVENT_TYPES
    assert required_events(parse_rule(DEFAULT_READINESS_RULE).event_types) <= events


def test_compose_passes_through_what_the_readme_says() -> None:
    """README: every `KAFKA_*` setting but the secrets (those come as `KAFKA_*_FILE` paths), the
    `SCHEMA_REGISTRY_*` and `TOPICS_*` settings are passed through when set."""
    readme = " ".join(README.read_text().split())
    claim = "every other `KAFKA_*` setting you need but the secrets, which come as files: the `KAFKA_*_FILE` paths;"
    assert claim in readme
    secrets = {"KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD", "KAFKA_SASL_OAUTH_CLIENT_SECRET"}
    per_service = {"KAFKA_SASL_USERNAME"}
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("topics", "gateway", "processor"):
        environment = services[name]["environment"]
        assert set(env_names(SchemaSettings).values()) <= set(environment), name
        assert set(env_names(KafkaSettings).values()) - secrets - per_service <= set(environment), name
        assert not secrets & set(environment), name
        assert {"KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CA_FILE", "KAFKA_SSL_CERT_FILE", "KAFKA_SSL_KEY_FILE"} <= set(
            environment
        ), name
    topics = services["topics"]["environment"]
    assert {"TOPICS_PARTITIONS", "TOPICS_REPLICATION_FACTOR", "TOPICS_MIN_INSYNC_REPLICAS"} <= set(topics)
