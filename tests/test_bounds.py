"""The caps applied where input enters (fsbridge.bounds), and the memos that use them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsbridge.bounds import MAX_ID_CHARS, ShortKeyMemo, quote, short_key, user_id_text
from fsbridge.engine.mapping import as_iso_timestamp
from fsbridge.envelope import MISSING
from fsbridge.sources.fullstory import ShapeError, signal_name, stream_kind


def test_ids_are_trimmed_and_capped() -> None:
    """One rule for ids: trimmed, numbers as text, empty or over the cap or not text is no id."""
    assert "u_1842" == user_id_text("  u_1842 \n")
    assert "42" == user_id_text(42)
    assert user_id_text("   ") is None
    assert user_id_text(True) is None
    assert user_id_text({"id": 1}) is None
    assert user_id_text("u" * (MAX_ID_CHARS + 1)) is None
    assert "u" * MAX_ID_CHARS == user_id_text("u" * MAX_ID_CHARS)


@given(st.text(max_size=400))
def test_short_keys_stay_short_and_distinct(text: str) -> None:
    """A key is itself up to the limit, else a 71-character digest that still differs per value."""
    key = short_key(text)
    assert len(key) <= 128
    assert (key == text) == (len(text) <= 128)
    if len(text) > 128:
        assert key != short_key(text + "x")


@given(st.text(max_size=2000))
def test_a_quote_is_short(text: str) -> None:
    """An error quotes at most 80 characters of any value."""
    assert len(quote(text)) <= 80


def test_a_memo_remembers_only_short_keys() -> None:
    """Long arguments are computed each time and never held: the memo's size is bounded in bytes."""
    memo = ShortKeyMemo(str.upper, max_chars=8, maxsize=4)
    assert "ABC" == memo("abc")
    assert "X" * 100 == memo("x" * 100)
    assert 1 == memo.cache_info().currsize


def test_unique_long_timestamps_and_event_types_are_not_kept() -> None:
    """2 MiB timestamps and event types (the memory the outside test grew by GBs) leave no entry behind."""
    before = signal_name.cache_info().currsize, as_iso_timestamp_cache_size()
    for n in range(5):
        huge = f"{n}" + "2" * (2 * 1024 * 1024)
        assert MISSING == as_iso_timestamp(huge)
        with pytest.raises(ShapeError, match=r"^.{1,300}$"):
            stream_kind({"event": {"event_type": huge}})
    assert before == (signal_name.cache_info().currsize, as_iso_timestamp_cache_size())


def as_iso_timestamp_cache_size() -> int:
    from fsbridge.engine.mapping import _iso_from_text

    return int(_iso_from_text.cache_info().currsize)


def test_a_quote_of_a_huge_object_is_short() -> None:
    """A nested object of megabytes is quoted in at most 80 characters, without rendering it whole."""
    assert len(quote({"a": "x" * 1_000_000, "b": list(range(100_000)), "c": {"d": {"e": [1] * 1000}}})) <= 80
