"""The trigger policy alone: plain values in, decisions out, time given by the test."""

from __future__ import annotations

from ecosight_daemon.config import TriggerSettings
from ecosight_daemon.daemon.trigger_policy import DRIFT_CHECK_INTERVAL_S, TRIGGER_CHECK_S, TriggerPolicy


def hashes(n: int, prefix: str = "h") -> set[str]:
    return {f"{prefix}{i}" for i in range(n)}


def test_threshold_requests_one_run_and_a_new_run_counts_from_its_start() -> None:
    policy = TriggerPolicy(TriggerSettings(min_new_samples=10))
    assert policy.count(0.0, hashes(9), retrain_running=False) is None
    assert policy.new_samples == 9 and not policy.start_due(retrain_running=False)

    policy.count(1.0, hashes(10), retrain_running=False)
    policy.count(2.0, hashes(12), retrain_running=False)  # already requested: not a second reason
    assert policy.start_due(retrain_running=False)
    assert policy.take(hashes(12)) == "threshold: 10 new samples >= 10"
    assert policy.new_samples == 0 and not policy.start_due(retrain_running=False)

    policy.count(3.0, hashes(12) | hashes(3, "new"), retrain_running=False)
    assert policy.new_samples == 3  # only what arrived after the run started


def test_requests_merge_and_wait_while_a_run_is_going() -> None:
    policy = TriggerPolicy(TriggerSettings(min_new_samples=1000))
    policy.request("SIGHUP", retrain_running=True)
    policy.request("schedule", retrain_running=True)
    policy.request("SIGHUP", retrain_running=True)
    assert not policy.start_due(retrain_running=True)
    assert policy.status_fields()["retrain_queued"] == ["SIGHUP", "schedule"]
    assert policy.start_due(retrain_running=False)
    assert policy.take(set()) == "SIGHUP; schedule"


def test_threshold_is_not_requested_while_a_run_is_going() -> None:
    policy = TriggerPolicy(TriggerSettings(min_new_samples=5))
    policy.count(0.0, hashes(8), retrain_running=True)
    assert not policy.requests.pending()  # the run's end marks the corpus changed; counted again then


def test_counting_waits_for_the_interval_during_a_burst_but_not_after_it() -> None:
    policy = TriggerPolicy(TriggerSettings())
    assert policy.count_due(0.0, embedding_burst=True)
    assert not policy.count_due(1.0, embedding_burst=True)  # nothing changed since
    policy.corpus_changed()
    assert not policy.count_due(1.0, embedding_burst=True)  # changed, but within the interval
    assert policy.count_due(TRIGGER_CHECK_S, embedding_burst=True)
    policy.corpus_changed()
    assert policy.count_due(TRIGGER_CHECK_S + 0.1, embedding_burst=False)  # burst over: at once


def test_drift_is_checked_once_per_interval_on_enough_new_samples_and_requests_below_the_floor() -> None:
    policy = TriggerPolicy(TriggerSettings(min_new_samples=1000, drift_min_accuracy=0.8, drift_min_samples=5))
    assert policy.count(0.0, hashes(4), retrain_running=False) is None  # too few
    due = policy.count(0.0, hashes(5), retrain_running=False)
    assert due == hashes(5)
    policy.drift_measured(0.9, len(due))
    assert not policy.requests.pending()

    assert policy.count(10.0, hashes(7), retrain_running=False) is None  # within the interval
    later = DRIFT_CHECK_INTERVAL_S + 1
    assert policy.count(later, hashes(7), retrain_running=True) is None  # never during a run
    assert policy.count(later, hashes(7), retrain_running=False) == hashes(7)
    assert policy.count(2 * later, hashes(7), retrain_running=False) is None  # same samples: not again
    policy.drift_measured(0.5, 7)
    assert policy.take(set()) == "drift: accuracy 0.500 < 0.800 on 7 new samples"


def test_drift_off_by_default() -> None:
    policy = TriggerPolicy(TriggerSettings(min_new_samples=1000))
    assert policy.count(1e6, hashes(500), retrain_running=False) is None


def test_a_flood_of_requests_stays_one_bounded_reason() -> None:
    from ecosight_daemon.daemon.trigger_policy import HTTP_REASON_PREFIX, MAX_QUEUED_REASONS, RetrainRequests

    requests = RetrainRequests()
    for i in range(5_000):  # distinct 500-character reasons, as a client can send
        requests.add(HTTP_REASON_PREFIX + f"{i:05d}" + "x" * 495)
    assert len(requests.reasons) == 1 and requests.merged == 4_999
    for source in ("SIGHUP", "schedule", *(f"CLI {i}" for i in range(50))):
        requests.add(source)
    assert len(requests.reasons) == MAX_QUEUED_REASONS
    merged = requests.take()
    assert merged.startswith(HTTP_REASON_PREFIX + "00000")
    assert merged.endswith("(and 5042 more requests)")  # 4,999 HTTP ones + 43 past the cap
    assert len(merged) < 2_000 and not requests.pending() and requests.merged == 0
