"""A local fake of Pinwheel's webhook subscription API (the test machine has no route to Pinwheel).

Enforces what Pinwheel documents: X-API-SECRET auth, a Pinwheel-Version header, https endpoints, at least one
enabled event, status active|paused, at most 10 webhooks per API key, cursor paging (limit 1-100).
Answers `{"data": ...}` (lists with `meta.next_cursor`) and errors as `{"error": {"code", "message"}}`.
What Pinwheel does on its own side is a method: `pause` (its pause policy: an endpoint failing for 30 consecutive
days is set to `status: paused`, and stays so until a PUT sets it back to `active`).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

API_SECRET = "sk-fake-test-5b1e"
MAX_WEBHOOKS = 10


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": "INVALID_REQUEST_ERROR", "code": code, "message": message, "status_code": status}},
        status_code=status,
    )


def build_app() -> FastAPI:
    app = FastAPI()
    hooks: dict[str, dict[str, Any]] = {}
    app.state.hooks = hooks
    app.state.calls = []

    def check(request: Request) -> JSONResponse | None:
        app.state.calls.append((request.method, request.url.path, dict(request.headers)))
        if request.headers.get("x-api-secret") != API_SECRET:
            return _error(401, "UNAUTHORIZED", "Invalid API secret.")
        if not request.headers.get("pinwheel-version"):
            return _error(400, "MISSING_VERSION", "Pinwheel-Version header is required.")
        return None

    def check_hook(request: Request, hook_id: str) -> JSONResponse | None:
        if (failure := check(request)) is not None:
            return failure
        return None if hook_id in hooks else _error(404, "NOT_FOUND", f"Webhook {hook_id} not found.")

    def validate(body: dict[str, Any], partial: bool) -> JSONResponse | None:
        if "url" in body or not partial:
            url = body.get("url")
            if not isinstance(url, str) or not url.startswith("https://"):
                return _error(400, "INVALID_URL", "Webhook URL must use https://.")
        if "enabled_events" in body or not partial:
            events = body.get("enabled_events")
            if not isinstance(events, list) or not events:
                return _error(400, "INVALID_EVENTS", "enabled_events must contain at least one event.")
        if ("status" in body or not partial) and body.get("status") not in ("active", "paused"):
            return _error(400, "INVALID_STATUS", "status must be active or paused.")
        return None

    @app.post("/v1/webhooks")
    async def create(request: Request) -> JSONResponse:
        if (failure := check(request)) is not None:
            return failure
        body = await request.json()
        if (failure := validate(body, partial=False)) is not None:
            return failure
        if len(hooks) >= MAX_WEBHOOKS:
            return _error(400, "WEBHOOK_LIMIT_REACHED", f"At most {MAX_WEBHOOKS} webhooks per API key.")
        now = datetime.now(UTC).isoformat()
        hook = {
            "id": str(uuid.uuid4()),
            "url": body["url"],
            "status": body["status"],
            "enabled_events": body["enabled_events"],
            "version": body.get("version") or "2023-11-22",
            "created_at": now,
            "last_updated": now,
        }
        hooks[hook["id"]] = hook
        return JSONResponse({"data": hook}, status_code=201)

    @app.get("/v1/webhooks")
    async def listing(request: Request, limit: int = 25, cursor: str | None = None) -> JSONResponse:
        if (failure := check(request)) is not None:
            return failure
        if not 1 <= limit <= 100:
            return _error(400, "INVALID_LIMIT", "limit must be between 1 and 100.")
        ids = sorted(hooks, key=lambda i: hooks[i]["created_at"] + i)
        start = ids.index(cursor) if cursor in ids else 0
        page = ids[start : start + limit]
        nxt = ids[start + limit] if start + limit < len(ids) else None
        return JSONResponse({"meta": {"count": len(page), "next_cursor": nxt}, "data": [hooks[i] for i in page]})

    @app.get("/v1/webhooks/{hook_id}")
    async def show(request: Request, hook_id: str) -> JSONResponse:
        if (failure := check_hook(request, hook_id)) is not None:
            return failure
        return JSONResponse({"data": hooks[hook_id]})

    @app.put("/v1/webhooks/{hook_id}")
    async def update(request: Request, hook_id: str) -> JSONResponse:
        if (failure := check_hook(request, hook_id)) is not None:
            return failure
        body = await request.json()
        if (failure := validate(body, partial=True)) is not None:
            return failure
        hooks[hook_id] |= {k: v for k, v in body.items() if k in ("url", "status", "enabled_events", "version")}
        hooks[hook_id]["last_updated"] = datetime.now(UTC).isoformat()
        return JSONResponse({"data": hooks[hook_id]})

    @app.delete("/v1/webhooks/{hook_id}")
    async def delete(request: Request, hook_id: str) -> JSONResponse:
        if (failure := check_hook(request, hook_id)) is not None:
            return failure
        del hooks[hook_id]
        return JSONResponse({"data": {"id": hook_id, "deleted": True}})

    return app


class FakePinwheelApi:
    """uvicorn serving the fake on 127.0.0.1 in a thread."""

    def __init__(self) -> None:
        self.app = build_app()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=0, log_config=None, access_log=False, loop="asyncio")
        )
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def start(self) -> FakePinwheelApi:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake API did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    @property
    def hooks(self) -> dict[str, dict[str, Any]]:
        return self.app.state.hooks  # type: ignore[no-any-return]

    def add(self, url: str, events: list[str], status: str = "active", version: str = "2023-11-22") -> str:
        """A webhook created by some other tool (the dashboard, a script): its id."""
        now = datetime.now(UTC).isoformat()
        hook_id = str(uuid.uuid4())
        self.hooks[hook_id] = {
            "id": hook_id,
            "url": url,
            "status": status,
            "enabled_events": list(events),
            "version": version,
            "created_at": now,
            "last_updated": now,
        }
        return hook_id

    def pause(self, hook_id: str) -> None:
        """Pinwheel's pause policy: 30 consecutive days of failed deliveries set the endpoint to `paused`."""
        self.hooks[hook_id] |= {"status": "paused", "last_updated": datetime.now(UTC).isoformat()}

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
