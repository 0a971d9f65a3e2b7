"""The ASGI ``lifespan`` protocol: startup before serving, shutdown after."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ._asgi import ASGIApp, Message

logger = logging.getLogger("aiopquic.h3.server")


class LifespanFailed(RuntimeError):
    """The app reported ``lifespan.startup.failed`` (or raised during startup)."""


class Lifespan:
    """Runs the app's lifespan task; :meth:`startup` and :meth:`shutdown` wait for its answers.

    An app that raises before answering the startup event does not speak the
    lifespan protocol: serving goes on without it (as uvicorn's "auto" mode).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.supported = True
        self._to_app_send, self._to_app = anyio.create_memory_object_stream[Message](2)
        self._from_app_send, self._from_app = anyio.create_memory_object_stream[Message](2)
        # The lifespan task outlives the server's cancellation: shutdown comes after it.
        self._scope = anyio.CancelScope(shield=True)

    async def startup(self, task_group: TaskGroup) -> None:
        """Start the lifespan task and wait for the app's startup answer."""
        task_group.start_soon(self._run, name="aiopquic lifespan")
        await self._to_app_send.send({"type": "lifespan.startup"})
        answer = await self._answer()
        if answer is None:
            return
        if answer["type"] == "lifespan.startup.failed":
            raise LifespanFailed(f"the app's startup failed: {answer.get('message', '')}")

    async def shutdown(self) -> None:
        """Send the shutdown event, wait for the app's answer, end the lifespan task."""
        try:
            if self.supported:
                await self._to_app_send.send({"type": "lifespan.shutdown"})
                answer = await self._answer()
                if answer is not None and answer["type"] == "lifespan.shutdown.failed":
                    logger.error("the app's shutdown failed: %s", answer.get("message", ""))
        finally:
            self.abandon()

    def abandon(self) -> None:
        """End the lifespan task without a shutdown event (serving never began)."""
        self._scope.cancel()

    async def _answer(self) -> Message | None:
        try:
            return await self._from_app.receive()
        except anyio.EndOfStream:
            return None  # the app returned or raised instead of answering

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        started = False

        async def send(message: Message) -> None:
            nonlocal started
            started = True
            await self._from_app_send.send(message)

        try:
            with self._scope:
                async with self._from_app_send:
                    await self.app(scope, self._to_app.receive, send)
        except Exception:
            if started:
                logger.exception("the app's lifespan task raised")
            else:
                logger.info("the app does not speak the lifespan protocol; serving without it")
            self.supported = started
