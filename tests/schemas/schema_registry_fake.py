"""A small real HTTP server speaking the Confluent Schema Registry REST API (the parts we use)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RegistryState:
    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def register(self, subject: str, schema: str) -> int:
        # Like Confluent: one global id per distinct schema, whatever the subject.
        canonical = json.dumps(json.loads(schema), sort_keys=True)
        with self.lock:
            known = {json.dumps(json.loads(text), sort_keys=True): i for i, text in self.schemas.items()}
            schema_id = known.get(canonical, len(self.schemas) + 1)
            self.schemas.setdefault(schema_id, schema)
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id


def _handler(state: RegistryState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            state.requests.append(("POST", self.path))
            match = re.fullmatch(r"/subjects/([^/]+)/versions", self.path)
            if match is None:
                self._reply(404, {"error_code": 404, "message": "not found"})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._reply(200, {"id": state.register(match[1], body["schema"])})

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path))
            match = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
            if match is None or int(match[1]) not in state.schemas:
                self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                return
            self._reply(200, {"schema": state.schemas[int(match[1])]})

    return Handler


@contextmanager
def fake_registry() -> Iterator[tuple[str, RegistryState]]:
    state = RegistryState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
