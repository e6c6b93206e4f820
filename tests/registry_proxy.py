"""A TCP proxy in front of the real schema registry that can cut it off: faults injected on the wire."""

from __future__ import annotations

import asyncio
import contextlib


class CuttableProxy:
    """Forwards TCP to the registry; `down()` refuses new connections and cuts the open ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.refusing = False
        self.server: asyncio.Server | None = None
        self.open: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.open -= {writer, up_writer}

    def down(self) -> None:
        self.refusing = True
        for writer in list(self.open):
            writer.transport.abort()

    def up(self) -> None:
        self.refusing = False

    async def stop(self) -> None:
        self.down()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
