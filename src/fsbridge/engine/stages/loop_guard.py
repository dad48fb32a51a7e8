"""Loop guard (Part 2): a Segment message fsbridge itself sent (`context.library.name` is
fsbridge's), fed back by a Segment source into fsbridge's Segment destination, runs no flow and
claims nothing; it is recorded as filtered with the reason `sent by fsbridge`."""

from __future__ import annotations

from fsbridge.envelope import Envelope
from fsbridge.sources import segment
from fsbridge.store import DispatchResult, FlowSkip
from fsbridge.targets.segment import LIBRARY_NAME

NAME, SENT_BY_FSBRIDGE = "loop_guard", "sent by fsbridge"


class LoopGuard:
    name = NAME
    sources = frozenset({segment.SOURCE})

    def apply(self, envelope: Envelope, result: DispatchResult) -> bool:
        if envelope.get("context.library.name") != LIBRARY_NAME:
            return True
        result.filtered.append(FlowSkip(NAME, SENT_BY_FSBRIDGE))
        return False
