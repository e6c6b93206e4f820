"""`pinwheel-connector webhooks ...` against a local fake of Pinwheel's API, including every error path."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest

from common.ports import free_port
from connector.cli import build_parser
from operate.webhooks import PinwheelApiSettings, error_message, webhooks_command
from tests.operate.pinwheel_api_fake import API_SECRET, FakePinwheelApi

ENDPOINT = "https://hooks.example.com/webhooks/pinwheel"


@pytest.fixture
def api() -> Iterator[FakePinwheelApi]:
    fake = FakePinwheelApi().start()
    yield fake
    fake.stop()


def cli(api_url: str, *argv: str, secret: str | None = API_SECRET) -> tuple[int, str, str]:
    args = build_parser().parse_args(["webhooks", *argv])
    out, err = io.StringIO(), io.StringIO()
    settings = PinwheelApiSettings(base_url=api_url, secret=secret, timeout_s=3)
    code = webhooks_command(args, settings=settings, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def create(api: FakePinwheelApi, events: str = "paystubs.added,income.added", **kw: str) -> str:
    extra = [x for k, v in kw.items() for x in (f"--{k}", v)]
    code, out, err = cli(api.url, "create", "--url", ENDPOINT, "--events", events, "--json", *extra)
    assert code == 0, err
    return str(orjson.loads(out)["id"])


def test_create_show_list_update_delete(api: FakePinwheelApi) -> None:
    hook_id = create(api, status="paused")
    stored = api.hooks[hook_id]
    assert stored["enabled_events"] == ["paystubs.added", "income.added"]
    assert stored["version"] == "2023-11-22"
    method, path, headers = api.app.state.calls[-1]
    assert (method, path) == ("POST", "/v1/webhooks")
    assert headers["x-api-secret"] == API_SECRET
    assert headers["pinwheel-version"] == "2023-11-22"

    code, out, _ = cli(api.url, "show", hook_id)
    assert code == 0
    assert "paused" in out
    assert "resume with" in out
    assert API_SECRET not in out

    # re-activating a paused webhook
    code, out, _ = cli(api.url, "update", hook_id, "--status", "active")
    assert code == 0
    assert api.hooks[hook_id]["status"] == "active"
    assert "updated" in out

    code, out, _ = cli(api.url, "list")
    assert code == 0
    assert hook_id in out
    assert "1 webhook(s)" in out

    code, out, _ = cli(api.url, "delete", hook_id)
    assert code == 0
    assert hook_id not in api.hooks


def test_list_follows_the_cursor_and_the_limit_of_ten_is_reported(api: FakePinwheelApi) -> None:
    ids = [create(api, version="2025-07-08") for _ in range(10)]
    code, out, _ = cli(api.url, "list", "--limit", "3", "--json")
    assert code == 0
    assert sorted(h["id"] for h in orjson.loads(out)) == sorted(ids)
    pages = [c for c in api.app.state.calls if c[0] == "GET"]
    assert len(pages) == 4  # 3 + 3 + 3 + 1
    code, _, err = cli(api.url, "create", "--url", ENDPOINT, "--events", "income.added")
    assert code == 1
    assert "HTTP 400 Bad Request" in err
    assert "WEBHOOK_LIMIT_REACHED" in err
    assert "At most 10 webhooks" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create", "--url", "http://hooks.example.com/x", "--events", "income.added"], "must be https://"),
        (
            ["create", "--url", ENDPOINT, "--events", "income.added,payroll.exploded"],
            "unknown event type(s): payroll.exploded",
        ),
        (["create", "--url", ENDPOINT, "--events", " , "], "at least one event type"),
        (["update", "some-id"], "nothing to update"),
        (["update", "some-id", "--url", "ftp://x"], "must be https://"),
        (["list", "--limit", "500"], "limit must be between 1 and 100"),
    ],
)
def test_invalid_requests_fail_before_any_call(api: FakePinwheelApi, argv: list[str], message: str) -> None:
    code, out, err = cli(api.url, *argv)
    assert code == 2
    assert message in err
    assert out == ""
    assert api.app.state.calls == []


def test_newer_event_types_are_accepted(api: FakePinwheelApi) -> None:
    hook_id = create(api, events="company_connect.status.updated,bill.added")
    assert api.hooks[hook_id]["enabled_events"] == ["company_connect.status.updated", "bill.added"]


def test_api_errors_carry_status_and_pinwheel_message(api: FakePinwheelApi) -> None:
    code, _, err = cli(api.url, "show", "no-such-hook")
    assert code == 1
    assert "HTTP 404 Not Found: NOT_FOUND: Webhook no-such-hook not found." in err
    code, _, err = cli(api.url, "list", secret="sk-wrong-secret")
    assert code == 1
    assert "HTTP 401 Unauthorized" in err
    assert "Invalid API secret" in err
    assert "sk-wrong-secret" not in err


def test_server_side_https_check_is_reported(api: FakePinwheelApi) -> None:
    hook_id = create(api)
    # bypass the client-side check to see the API's own answer is surfaced
    from operate.webhooks import WebhookClient, WebhookError

    client = WebhookClient(PinwheelApiSettings(base_url=api.url, secret=API_SECRET))
    with pytest.raises(WebhookError, match="HTTP 400 Bad Request: INVALID_URL: Webhook URL must use https://"):
        client.update(hook_id, {"url": "http://plain.example.com"})
    client.close()


def test_missing_secret_network_errors_and_insecure_base_url() -> None:
    code, _, err = cli("https://api.getpinwheel.com", "list", secret=None)
    assert code == 2
    assert "PINWHEEL_API_SECRET" in err
    port = free_port()  # nothing listens there
    code, _, err = cli(f"http://127.0.0.1:{port}", "list")
    assert code == 1
    assert "network error" in err
    assert "ConnectError" in err
    code, _, err = cli("http://api.example.com", "list")
    assert code == 2
    assert "must be an https:// URL" in err


def test_error_message_shapes() -> None:
    assert error_message(422, b'{"detail": [{"msg": "field required"}]}') == (
        "HTTP 422 Unprocessable Entity: field required"
    )
    assert error_message(500, b"upstream exploded") == "HTTP 500 Internal Server Error: upstream exploded"
    assert error_message(503, b"") == "HTTP 503 Service Unavailable"
    assert error_message(400, b'{"message": "bad"}') == "HTTP 400 Bad Request: bad"
