"""The real gateway app under uvicorn (HTTPS) on its own thread and event loop, for tests that need a live gateway.

A module of the tests package (`tests.threaded_gateway`), shared by the gateway and the
simulator tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn

from common.settings import KafkaSettings
from gateway.admin import bind_admin
from gateway.app import create_app
from gateway.connections import GuardedHttpToolsProtocol
from gateway.settings import GatewaySettings


class ThreadedServer:
    """A real uvicorn HTTPS server on its own thread and event loop."""

    def __init__(self, settings: GatewaySettings, kafka: str | KafkaSettings, **app_kwargs: Any) -> None:
        """`kafka`: a bootstrap address (plaintext), or the whole client settings (a secured cluster)."""
        self.settings = settings
        # As gateway.server.run: the admin listener's socket bound first, then served by the app's lifespan.
        self.admin_socket = bind_admin(settings.admin_host, settings.admin_port)
        self.app = create_app(
            settings,
            kafka if isinstance(kafka, KafkaSettings) else KafkaSettings(bootstrap_servers=kafka),
            admin_socket=self.admin_socket,
            **app_kwargs,
        )
        config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            ssl_certfile=str(settings.tls_cert_file),
            ssl_keyfile=str(settings.tls_key_file),
            log_config=None,
            access_log=False,
            lifespan="on",
            loop="asyncio",
            http=GuardedHttpToolsProtocol,  # as gateway.server.build_config: header caps, deadlines, limit
            timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.settings.port}"

    @property
    def admin_url(self) -> str:
        """The admin listener (/readyz, /metrics): plain HTTP."""
        return f"http://{self.settings.admin_host}:{self.settings.admin_port}"

    def admin_address(self) -> tuple[str, int]:
        """The address the admin listener is bound to (host, port)."""
        assert self.admin_socket is not None, "GATEWAY_ADMIN_PORT=0: no admin listener"
        host, port = self.admin_socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def webhook_url(self) -> str:
        return self.url + self.settings.route

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        if self.thread.is_alive():  # show where it hangs rather than leaking a thread silently
            import sys
            import traceback

            frame = sys._current_frames().get(self.thread.ident or 0)
            stack = "".join(traceback.format_stack(frame)) if frame else "?"
            raise RuntimeError(f"gateway server thread did not stop:\n{stack}")
