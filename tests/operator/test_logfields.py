"""JSON log lines carry what they are about as fields."""

from __future__ import annotations

import asyncio
import json
import logging

from dagwright.operator import logfields
from dagwright.operator.__main__ import JsonFormatter


def test_json_log_lines_carry_the_execution_and_attempt_of_their_task() -> None:
    formatter = JsonFormatter()

    def line(message: str) -> dict[str, object]:
        record = logging.LogRecord("dagwright.test", logging.INFO, __file__, 1, message, (), None)
        parsed: dict[str, object] = json.loads(formatter.format(record))
        return parsed

    async def runner() -> tuple[dict[str, object], dict[str, object]]:
        logfields.EXECUTION.set(("ml", "nightly"))

        async def create() -> dict[str, object]:
            logfields.ATTEMPT.set(("train", 2))
            return line("creating")

        created = await asyncio.create_task(create())
        return line("a pass"), created

    passed, created = asyncio.run(runner())
    assert passed == {
        "time": passed["time"],
        "level": "INFO",
        "logger": "dagwright.test",
        "message": "a pass",
        "namespace": "ml",
        "execution": "nightly",
    }
    assert (created["execution"], created["job"], created["attempt"]) == ("nightly", "train", 2)
    assert "execution" not in line("outside any runner")
