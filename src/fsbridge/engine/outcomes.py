"""What an attempt's answer makes of each delivery in its batch: the update to record, decided from
the verdict, the retry policy and the batch it was sent in. No I/O
but a log line: the worker records what this returns."""

from __future__ import annotations

from fsbridge.engine.retry import RetryPolicy, Verdict
from fsbridge.log import get_logger
from fsbridge.store import AttemptRecord, Delivery, DeliveryUpdate
from fsbridge.store.deletion import DELETION_CALL
from fsbridge.targets import Destination

log = get_logger(__name__)


def dry_run_update(destination: Destination, delivery: Delivery) -> DeliveryUpdate:
    """Recorded as it would be sent; a message the destination would refuse for its size (a dead
    letter replayed as it was) stays dead, with its reason."""
    limit = destination.max_message_bytes
    if limit is not None and not delivery.awaiting and len(delivery.body) > limit:
        error = f"the message is {len(delivery.body):,} bytes, over {destination.name}'s limit of {limit:,} bytes"
        return DeliveryUpdate(delivery.id, "dead", delivery.next_attempt_at, None, last_error=error)
    return DeliveryUpdate(
        delivery.id, "dry_run", delivery.next_attempt_at, None, ends_deletion=delivery.action == DELETION_CALL
    )


def answered_update(
    delivery: Delivery,
    verdict: Verdict,
    attempt: AttemptRecord,
    batch_size: int,
    retry_after: float | None,
    now: float,
    policy: RetryPolicy,
) -> DeliveryUpdate:
    """What one delivery becomes after its batch was answered: delivered, parked, dead, resent alone,
    or retried later by the policy (never before a Retry-After)."""
    code, error = attempt.status_code, attempt.error
    if verdict is Verdict.DELIVERED:
        return DeliveryUpdate(
            delivery.id,
            "delivered",
            now,
            attempt,
            last_status_code=code,
            may_have_snapshot=delivery.sync_scope is not None,
            ends_deletion=delivery.action == DELETION_CALL,
        )
    if verdict is Verdict.PARK:
        return DeliveryUpdate(delivery.id, "parked", now, attempt, last_status_code=code, last_error=error)
    if verdict is Verdict.DEAD and batch_size > 1 and code in (400, 413):
        # One bad message makes Segment refuse the whole batch: resend each alone to find it.
        note = f"{error}; the batch of {batch_size} was refused, so each message is resent alone"
        return DeliveryUpdate(
            delivery.id, "pending", now, attempt, send_alone=True, last_status_code=code, last_error=note
        )
    if verdict is Verdict.DEAD:
        return DeliveryUpdate(delivery.id, "dead", now, attempt, last_status_code=code, last_error=error)
    next_at = policy.next_attempt_at(
        attempts=delivery.attempts + 1,
        retry_started_at=delivery.retry_started_at,
        now=now,
        retry_after=retry_after,
    )
    if next_at is None:
        horizon = f"retried for {policy.horizon_seconds:g} s without success; last error: {error}"
        return DeliveryUpdate(delivery.id, "dead", now, attempt, last_status_code=code, last_error=horizon)
    log.info("delivery.retry_scheduled", delivery_id=delivery.id, in_seconds=round(next_at - now, 3))
    return DeliveryUpdate(
        delivery.id,
        "pending",
        next_at,
        attempt,
        send_alone=delivery.send_alone,
        last_status_code=code,
        last_error=error,
    )
