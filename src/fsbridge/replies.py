"""The JSON answers fsbridge's endpoints give, `{"error": {"code", "message"}}` for errors: as a
`Reply` (status and encoded body, which the webhook fast path writes itself) or a Starlette response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response


@dataclass(frozen=True, slots=True)
class Reply:
    """A JSON answer: its status and its encoded body."""

    status: int
    body: bytes

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type="application/json")


def json_reply(status: int, body: dict[str, Any]) -> Reply:
    return Reply(status, orjson.dumps(body))


def error_reply(status: int, code: str, message: str, **extra: Any) -> Reply:
    return json_reply(status, {"error": {"code": code, "message": message, **extra}})


def json_response(status: int, body: dict[str, Any]) -> Response:
    return json_reply(status, body).response()


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    return error_reply(status, code, message, **extra).response()
