"""What the watchdog concludes from Pinwheel's `GET /v1/webhooks` answer: pure functions, no I/O.

Pinwheel pauses an endpoint that failed for 30 consecutive days (`status: paused`, resumed only by a PUT), a
webhook can be re-pointed or deleted from another tool, and a subscription created without an event type the
pipeline needs simply never delivers it. None of that shows at the gateway, which only sees what arrives:
docs/operations.md "Subscription watchdog".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from schemas import catalog

ACTIVE = "active"
PAUSED = "paused"


def normalise_url(url: str) -> str:
    """The form two endpoint URLs are compared in: scheme and host lowercased, the default port and a trailing
    slash dropped (Pinwheel may echo the URL as it was registered)."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    scheme = parts.scheme.lower()
    netloc = host if port is None or (scheme, port) in (("https", 443), ("http", 80)) else f"{host}:{port}"
    path = parts.path.rstrip("/") or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def required_events(rule_events: Iterable[str], extra: Iterable[str] = ()) -> frozenset[str]:
    """The event types the subscription must enable: the account events every deployment needs
    (`catalog.SUBSCRIPTION_BASE_EVENTS`), those of the readiness rule, and any the operator adds."""
    return catalog.SUBSCRIPTION_BASE_EVENTS | frozenset(rule_events) | frozenset(extra)


class SubscriptionReport(NamedTuple):
    """The subscription watched, as of one successful check."""

    found: bool  # a webhook to watch exists (the configured id, or one pointing at the gateway)
    webhook_id: str | None
    url: str | None
    status: str | None  # active | paused (or whatever newer value Pinwheel sends)
    version: str | None
    url_matches: bool  # its URL is the gateway's
    enabled_events: frozenset[str]
    required_events: frozenset[str]
    webhooks_seen: int  # webhooks of the API key (at most 10)

    @property
    def missing_events(self) -> frozenset[str]:
        return self.required_events - self.enabled_events if self.found else self.required_events


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _events(hook: Mapping[str, Any]) -> frozenset[str]:
    raw = hook.get("enabled_events")
    return frozenset(e for e in raw if isinstance(e, str)) if isinstance(raw, list) else frozenset()


def assess(
    hooks: Sequence[Any], *, gateway_url: str, webhook_id: str | None, required: frozenset[str]
) -> SubscriptionReport:
    """The subscription to watch among the API key's webhooks, and how it stands.

    With `webhook_id` (what the gateway sees as `x-pinwheel-webhook-id`): that webhook, wherever it points, so a
    re-pointed URL is told apart from a deleted webhook. Without: the webhooks pointing at `gateway_url`, the
    first active one (else the first), in the order the API lists them.
    """
    webhooks = [hook for hook in hooks if isinstance(hook, Mapping)]
    target = normalise_url(gateway_url)
    if webhook_id is not None:
        chosen = next((h for h in webhooks if h.get("id") == webhook_id), None)
    else:
        pointing = [h for h in webhooks if isinstance(h.get("url"), str) and normalise_url(h["url"]) == target]
        chosen = next((h for h in pointing if h.get("status") == ACTIVE), pointing[0] if pointing else None)
    if chosen is None:
        return SubscriptionReport(False, webhook_id, None, None, None, False, frozenset(), required, len(webhooks))
    url = _str(chosen.get("url"))
    return SubscriptionReport(
        found=True,
        webhook_id=_str(chosen.get("id")),
        url=url,
        status=_str(chosen.get("status")),
        version=_str(chosen.get("version")),
        url_matches=url is not None and normalise_url(url) == target,
        enabled_events=_events(chosen),
        required_events=required,
        webhooks_seen=len(webhooks),
    )
