"""The pure side of leader election: what a replica writes into the Lease, when a standby may take
it, and which timings are refused. (The elector against the real API server: tests/integration/test_leader.py.)"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mlops_operator.k8s import main
from mlops_operator.k8s.leader import LeaseRecord, Observation, Timings, held_spec, micro_time, released_spec

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def record(holder: str = "a_1", version: str = "7", duration: int = 15, transitions: int = 2) -> LeaseRecord:
    return LeaseRecord(holder=holder, duration_seconds=duration, acquire_time="2026-01-01T00:00:00.000000Z",
                       renew_time="2026-01-01T00:00:10.000000Z", transitions=transitions, resource_version=version)


def test_micro_time_is_what_the_lease_schema_takes() -> None:
    assert micro_time(NOW) == "2026-01-02T03:04:05.678901Z"


def test_a_new_lease_starts_the_first_term() -> None:
    assert held_spec(None, "a_1", NOW, 15) == {
        "holderIdentity": "a_1", "leaseDurationSeconds": 15, "acquireTime": micro_time(NOW),
        "renewTime": micro_time(NOW), "leaseTransitions": 0}


def test_a_renewal_keeps_the_term_and_moves_the_renew_time() -> None:
    spec = held_spec(record(holder="a_1"), "a_1", NOW, 15)
    assert spec["acquireTime"] == "2026-01-01T00:00:00.000000Z"
    assert spec["renewTime"] == micro_time(NOW)
    assert spec["leaseTransitions"] == 2


@pytest.mark.parametrize("previous", ["b_2", ""])
def test_a_takeover_starts_a_new_term_and_counts_it(previous: str) -> None:
    spec = held_spec(record(holder=previous), "a_1", NOW, 15)
    assert spec["holderIdentity"] == "a_1"
    assert spec["acquireTime"] == spec["renewTime"] == micro_time(NOW)
    assert spec["leaseTransitions"] == 3


def test_a_release_leaves_no_holder_and_one_second() -> None:
    spec = released_spec(record(holder="a_1"), NOW)
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 2


def test_a_lease_is_read_with_its_defaults() -> None:
    read = LeaseRecord.of({"metadata": {"resourceVersion": "42"}, "spec": {}})
    assert (read.holder, read.duration_seconds, read.transitions, read.resource_version) == ("", 0, 0, "42")


def test_a_standby_takes_a_lease_only_after_it_stood_still_for_its_duration() -> None:
    seen = Observation()
    held = record(holder="b_2", version="7", duration=15)
    seen.see(held, 100.0)
    assert not seen.may_take(held, "a_1", 114.9)
    assert seen.may_take(held, "a_1", 115.0)


def test_every_renewal_the_standby_sees_restarts_its_count() -> None:
    seen = Observation()
    seen.see(record(holder="b_2", version="7"), 100.0)
    renewed = record(holder="b_2", version="8")
    seen.see(renewed, 110.0)
    assert not seen.may_take(renewed, "a_1", 120.0)
    assert seen.may_take(renewed, "a_1", 125.0)
    # Seeing the same version again does not restart it.
    seen.see(renewed, 124.0)
    assert seen.may_take(renewed, "a_1", 125.0)


def test_a_record_the_standby_has_not_watched_is_never_expired() -> None:
    """The holder's renewTime is another machine's clock: only time counted here counts."""
    seen = Observation()
    seen.see(record(holder="b_2", version="7"), 0.0)
    assert not seen.may_take(record(holder="b_2", version="9"), "a_1", 10_000.0)


@pytest.mark.parametrize("holder", ["", "a_1"])
def test_an_empty_or_own_lease_may_be_taken_at_once(holder: str) -> None:
    assert Observation().may_take(record(holder=holder), "a_1", 0.0)


def test_the_released_duration_lets_a_standby_take_over_a_second_later() -> None:
    seen = Observation()
    held = LeaseRecord.of({"metadata": {"resourceVersion": "9"}, "spec": {"holderIdentity": "b_2", "leaseDurationSeconds": 1}})
    seen.see(held, 50.0)
    assert not seen.may_take(held, "a_1", 50.5) and seen.may_take(held, "a_1", 51.0)


def test_client_go_defaults_are_safe_and_the_request_timeout_leaves_a_second_try() -> None:
    timings = Timings()
    assert (timings.lease_duration, timings.renew_deadline, timings.retry_period) == (15, 10, 2)
    assert timings.problems() == []
    assert timings.request_timeout * 2 <= timings.renew_deadline
    assert timings.renew_deadline + timings.watchdog_interval < timings.lease_duration


@pytest.mark.parametrize("timings, flag", [
    (Timings(15, 15, 2), "--leader-election-renew-deadline must be shorter than --leader-election-lease-duration"),
    # The watchdog checks every retry/4 (here 0.125 s): a leader may overrun its deadline by that much.
    (Timings(4, 3.9, 0.5), "by more than 0.125s"),
    (Timings(15, 2, 2), "longer than 1.2 × --leader-election-retry-period"),
    (Timings(15.5, 10, 2), "whole number of seconds"),
    (Timings(15, 10, 0), "--leader-election-retry-period must be > 0"),
])
def test_unsafe_timings_are_refused_naming_the_flag(timings: Timings, flag: str) -> None:
    assert any(flag in p for p in timings.problems()), timings.problems()


def test_leader_election_is_off_unless_asked() -> None:
    args = main.build_parser().parse_args([])
    assert args.leader_elect is False
    args = main.build_parser().parse_args(["--leader-elect", "--leader-election-namespace=ops", "--leader-election-id=x",
                                           "--leader-election-lease-duration=30", "--leader-election-renew-deadline=20",
                                           "--leader-election-retry-period=4"])
    assert (args.leader_elect, args.leader_election_namespace, args.leader_election_id) == (True, "ops", "x")


def test_run_refuses_unsafe_timings_before_doing_anything(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main.main(["--leader-elect", "--leader-election-lease-duration=5", "--leader-election-renew-deadline=10"])
    assert exit_.value.code == 2
    assert "--leader-election-renew-deadline must be shorter than --leader-election-lease-duration" in capsys.readouterr().err
