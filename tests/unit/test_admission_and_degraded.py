"""Admission control (gateway/admission.py, aggregator/admission.py) and the degraded policy (shared/degraded.py):
pure decisions, no servers."""

from __future__ import annotations

import pytest

from aggregator.admission import AggregatorAdmission
from gateway.admission import INITIAL_WORK, MIN_IN_FLIGHT, PROBE_CAP, REQUEST_COST, Admission
from shared.context import ServiceError
from shared.degraded import apply_policy, mark
from shared.messages import ErrorReply, ScoreReply, TransactionScore


def test_requests_beyond_the_bound_are_refused_with_a_retry_delay() -> None:
    a = Admission(max_requests=MIN_IN_FLIGHT + 2, max_transactions=10_000, max_queue_s=1.0)
    a.rate = 1e6  # fast: only the request bound refuses
    for _ in range(MIN_IN_FLIGHT + 2):
        assert a.try_admit(1, remaining_s=5.0) is None
    refusal = a.try_admit(1, remaining_s=5.0)
    assert refusal is not None and refusal.retry_after_s >= 1 and "FRAUDMESH_GATEWAY_MAX_IN_FLIGHT" in refusal.reason
    a.release(1)
    assert a.try_admit(1, remaining_s=5.0) is None
    assert a.refused == 1


def test_a_request_that_cannot_meet_its_deadline_is_refused_at_once() -> None:
    a = Admission(max_requests=1000, max_transactions=100_000, max_queue_s=10.0)
    a.rate = 100.0  # work units per second
    for _ in range(MIN_IN_FLIGHT):
        assert a.try_admit(50, remaining_s=60.0) is None
    # ~ (4 * 58 + 58) / 100 = 2.9 s of work ahead: fine with 60 s left, refused with 2 s left
    assert a.try_admit(50, remaining_s=60.0) is None
    refusal = a.try_admit(50, remaining_s=2.0)
    assert refusal is not None and "deadline" in refusal.reason


def test_a_fresh_gateway_admits_a_bounded_amount_of_work_until_it_has_measured_a_rate() -> None:
    a = Admission(max_requests=1000, max_transactions=100_000, max_queue_s=1.0)
    admitted = 0
    while a.try_admit(200, remaining_s=5.0) is None:
        admitted += 1
    assert admitted >= MIN_IN_FLIGHT and a.work <= INITIAL_WORK  # a burst of batches is not all admitted at once
    refusal = a.try_admit(200, remaining_s=5.0)
    assert refusal is not None and "no service rate is measured yet" in refusal.reason and refusal.retry_after_s == 1


def test_the_rate_estimate_probes_upwards_after_idle_time_with_refusals_and_no_further() -> None:
    a = Admission(max_requests=1000, max_transactions=100_000, max_queue_s=1.0)
    a.rate = a._busy_rate = 10.0
    for _ in range(MIN_IN_FLIGHT):
        a.try_admit(1, remaining_s=5.0)
    assert a.try_admit(1, remaining_s=5.0) is not None  # refused: the estimate binds
    for _ in range(MIN_IN_FLIGHT):
        a.release(1)  # the gateway ran out of work
    for _ in range(50):  # many windows, each with idle time and a refusal
        a._window_start -= 1.0
        a.try_admit(1, remaining_s=5.0)
        a.check(10_000, remaining_s=5.0)
        a.release(1)
    # probed up, but never past PROBE_CAP x the most it ever saw served: the first window's 5 requests in ~1 s
    assert 10.0 < a.rate <= PROBE_CAP * (MIN_IN_FLIGHT + 1) * (1 + REQUEST_COST)


def test_idle_windows_without_refusals_do_not_inflate_the_estimate() -> None:
    a = Admission(max_requests=1000, max_transactions=100_000, max_queue_s=1.0)
    a.rate = 1000.0
    for _ in range(50):
        a._window_start -= 1.0
        a.try_admit(1, remaining_s=5.0)
        a.release(1)
    assert a.rate == 1000.0  # 26 units in a 1 s window: served without queueing, says nothing more


def test_a_batch_is_refused_before_it_is_counted_in() -> None:
    a = Admission(max_requests=1000, max_transactions=100_000, max_queue_s=0.2)
    a.rate = 1000.0
    for _ in range(MIN_IN_FLIGHT):
        assert a.try_admit(10, remaining_s=5.0) is None
    assert a.check(1, remaining_s=5.0) is None  # a single still fits (4 x 35 + 26 units < 200)
    refusal = a.check(200, remaining_s=5.0)  # a batch of 200 would wait past the 200 ms bound
    assert refusal is not None and "FRAUDMESH_ADMISSION_MAX_QUEUE_MS" in refusal.reason
    assert (a.requests, a.transactions, a.refused) == (MIN_IN_FLIGHT, 10 * MIN_IN_FLIGHT, 1)


def test_aggregator_bound_counts_transactions_and_frees_them() -> None:
    a = AggregatorAdmission(max_transactions=100)
    a.admit(80)
    with pytest.raises(ServiceError) as exc:
        a.admit(30)
    assert exc.value.code == "unavailable" and exc.value.retryable and exc.value.retry_after_s >= 1
    a.release(80)
    a.admit(100)  # a request as large as the bound is admitted when nothing else is in flight
    assert a.in_flight == 100


def _reply(*actions: str, degraded: bool = True) -> ScoreReply:
    scores: list[TransactionScore | None] = []
    for i, action in enumerate(actions):
        s = TransactionScore(
            transaction_id=f"t{i}",
            fraud_score=0.01,
            risk_level="low",
            recommended_action=action,  # type: ignore[arg-type]
            confidence=0.9,
            model_version="v",
            feature_freshness_sec=3.0,
        )
        if degraded:
            mark(s, ["features_unavailable"])
        scores.append(s)
    return ScoreReply(request_id="r", complete=True, results=scores)


@pytest.mark.parametrize("policy", ["flag", "review", "fail"])
def test_the_degraded_policy(policy: str) -> None:
    out = apply_policy(_reply("approve", "decline"), policy)
    if policy == "fail":
        assert isinstance(out, ErrorReply) and out.code == "unavailable" and out.retryable
        assert "features_unavailable" in out.message and out.retry_after_s > 0
        return
    assert isinstance(out, ScoreReply) and out.degraded_reasons == ["features_unavailable"]
    first, second = out.results
    assert first is not None and second is not None
    assert first.feature_freshness_sec is None  # never a number when features were missing
    assert first.recommended_action == ("review" if policy == "review" else "approve")
    assert second.recommended_action == "decline"


def test_scores_that_are_not_degraded_are_untouched_by_any_policy() -> None:
    for policy in ("flag", "review", "fail"):
        out = apply_policy(_reply("approve", degraded=False), policy)
        assert isinstance(out, ScoreReply) and out.degraded_reasons == []
        assert out.results[0] is not None and out.results[0].recommended_action == "approve"
