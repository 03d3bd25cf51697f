"""Error answers: a bad request gets a small JSON 4xx naming the field, never an echo of its body.

FastAPI's own 422 copies each failing value into ``input`` whole (a huge batch
came back as an error about as large), and a value JSON cannot carry (NaN,
Infinity, a lone surrogate) made rendering the error fail, which answered 500. The handler
here keeps FastAPI's ``detail`` shape (``type``, ``loc``, ``msg``, ``input``,
``ctx``) so clients read it as before, with every value cut to a short excerpt
that is valid JSON, and at most ``MAX_ERRORS`` entries. Anything else that
escapes a route is a bug: it is a JSON 500, and the server logs the traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

# Characters of a rejected value shown back in an error: enough to recognise it.
EXCERPT_CHARS = 100
# Errors listed in one 422: a batch of 1,000 bad flights makes thousands, and the
# first ones tell the client what to fix.
MAX_ERRORS = 20


def add_error_handlers(app: FastAPI) -> None:
    """Answer validation errors with excerpts, and anything unexpected with a JSON 500."""
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's ``detail`` list, each entry's values cut to excerpts.

    ``errors_total`` appears when the list was cut to ``MAX_ERRORS``.
    """
    errors = exc.errors()
    content: dict[str, Any] = {"detail": [_entry(error) for error in errors[:MAX_ERRORS]]}
    if len(errors) > MAX_ERRORS:
        content["errors_total"] = len(errors)
    return JSONResponse(content, status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A JSON 500 for a bug; Starlette re-raises ``exc`` afterwards, so the server logs its traceback."""
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def _entry(error: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": _text(str(error.get("type", "value_error"))),
        "loc": [part if isinstance(part, int) else _text(str(part)) for part in error.get("loc", ())],
        "msg": _text(str(error.get("msg", "")), 2 * EXCERPT_CHARS),
        "input": excerpt(error.get("input")),
    }
    ctx = error.get("ctx")
    if isinstance(ctx, Mapping) and ctx:
        entry["ctx"] = {_text(str(key)): excerpt(value) for key, value in ctx.items()}
    return entry


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> Any:
    """``value`` as it can be shown back: itself when short, else at most ``limit`` characters of its JSON text.

    Non-finite floats become their JSON-extension spelling as a string
    (``"NaN"``, ``"Infinity"``). A container's JSON text is built only as far as
    ``limit``, so a huge value costs no more than a small one.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        text = _int_text(value)
        return value if len(text) <= limit else _cut(text, limit)
    if isinstance(value, float):
        return value if math.isfinite(value) else _float_text(value)
    if isinstance(value, str):
        return _text(value, limit)
    if isinstance(value, bytes | bytearray):
        return _text(bytes(value[: limit * 4]).decode("utf-8", "replace"), limit)
    if not isinstance(value, Mapping | list | tuple | set | frozenset):
        return _text(str(value), limit)  # a datetime, an exception in ``ctx``: its text
    text = _json_excerpt(value, limit)
    if len(text) < limit:  # whole: shown as the JSON value it is (NaN and Infinity as strings)
        return json.loads(text, parse_constant=str)
    return _text(text, limit)


def _text(value: str, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters that encode as UTF-8 (a lone surrogate is shown escaped)."""
    value = _cut(value, limit)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _cut(value.encode("utf-8", "backslashreplace").decode("utf-8"), limit)
    return value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # more digits than Python converts
        return f"<an integer of {value.bit_length()} bits>"


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


class _Piece(str):
    """Literal JSON text between values (brackets, commas, keys)."""


def _json_excerpt(value: Any, limit: int) -> str:
    """The start of ``value``'s JSON text, walked without recursion and only until ``limit`` is passed."""
    pieces: list[str] = []
    size = 0
    stack: list[Iterator[Any]] = [iter((value,))]
    while stack and size <= limit:
        try:
            item = next(stack[-1])
        except StopIteration:
            stack.pop()
            continue
        if isinstance(item, _Piece):
            piece: str = item
        elif isinstance(item, Mapping):
            piece = "{"
            stack.append(_mapping_items(item))
        elif isinstance(item, list | tuple | set | frozenset):
            piece = "["
            stack.append(_sequence_items(item))
        else:
            piece = _scalar_json(item, limit)
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces) if size < limit else _text("".join(pieces), limit)


def _mapping_items(mapping: Mapping[Any, Any]) -> Iterator[Any]:
    for index, (key, value) in enumerate(mapping.items()):
        yield _Piece(("," if index else "") + _scalar_json(str(key), EXCERPT_CHARS) + ":")
        yield value
    yield _Piece("}")


def _sequence_items(items: Any) -> Iterator[Any]:
    for index, item in enumerate(items):
        if index:
            yield _Piece(",")
        yield item
    yield _Piece("]")


def _scalar_json(value: Any, limit: int) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return _float_text(value)  # a JSON-extension token, as the client sent it
    if value is None or isinstance(value, bool | int | float | str | bytes | bytearray):
        return json.dumps(excerpt(value, limit), ensure_ascii=False)
    return json.dumps(_text(str(value), limit), ensure_ascii=False)
