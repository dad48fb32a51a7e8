"""The caps every value from outside meets where it enters, before it can reach a cache, a log
line, a stored error, a user's state document or an outbound message: how long an id, a URL or a
quoted excerpt may be, and a memo that keeps only short keys, so its size is bounded in bytes
(entries times the longest key), not only in entries."""

from __future__ import annotations

import functools
import hashlib
import reprlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

MAX_ID_CHARS = 512  # a userId, anonymousId or Fullstory uid longer than this names nobody
MAX_SESSION_ID_CHARS = 128  # Fullstory's are about 40; a longer one is kept as its digest
MAX_URL_CHARS = 2048
MAX_QUOTE_CHARS = 80  # what an error or a log line quotes of a value it names

R = TypeVar("R")


def user_id_text(value: Any) -> str | None:
    """The one rule for ids on every source: a string or number, trimmed of surrounding white
    space (Streams keeps it, Segment trims it), not empty and at most MAX_ID_CHARS; else None."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = (value if isinstance(value, str) else str(value)).strip()
    return text if text and len(text) <= MAX_ID_CHARS else None


def short_key(text: str, limit: int = MAX_SESSION_ID_CHARS) -> str:
    """`text` when it is at most `limit` characters, else `sha256:<hex>` (still one key per value)."""
    if len(text) <= limit:
        return text
    return "sha256:" + hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = MAX_QUOTE_CHARS + 1
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist = 2, 4, 4  # a huge object is never rendered whole first


def quote(value: Any, limit: int = MAX_QUOTE_CHARS) -> str:
    """A value as an error message or a log line may quote it: its repr, at most `limit` characters."""
    text = repr(value[: limit + 1]) if isinstance(value, str) else _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ShortKeyMemo(Generic[R]):
    """An LRU memo of a one-string function that remembers only arguments of at most `max_chars`
    characters (longer ones are computed each time): at most `maxsize` times `max_chars` characters of
    keys, whatever a sender makes up."""

    def __init__(self, function: Callable[[str], R], *, max_chars: int, maxsize: int) -> None:
        self.function = function
        self.max_chars = max_chars
        self._cached = functools.lru_cache(maxsize=maxsize)(function)
        functools.update_wrapper(self, function)

    def __call__(self, text: str) -> R:
        return self._cached(text) if len(text) <= self.max_chars else self.function(text)

    def cache_info(self) -> Any:
        return self._cached.cache_info()


def memo_of_short(max_chars: int, maxsize: int) -> Callable[[Callable[[str], R]], ShortKeyMemo[R]]:
    """`@memo_of_short(64, 8192)` over a function of one string: a ShortKeyMemo of it."""

    def wrap(function: Callable[[str], R]) -> ShortKeyMemo[R]:
        return ShortKeyMemo(function, max_chars=max_chars, maxsize=maxsize)

    return wrap
