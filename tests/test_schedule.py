"""The schedule of turns on plain values: the round-robin ready queue, the timer heap, turns
superseded and taken once (no clock, no thread)."""

from __future__ import annotations

from selligent_segment.delivery._schedule import Schedule


def take_all(schedule: Schedule, now: float) -> list[str]:
    """Every turn due at ``now``, in the order they are taken."""
    names = []
    while (name := schedule.take(now)) is not None:
        names.append(name)
    return names


def test_turns_due_now_are_taken_first_in_first_out() -> None:
    schedule = Schedule()
    for name in ("acme", "globex", "initech"):
        schedule.put(name, 0.0, 1.0)
    assert take_all(schedule, 1.0) == ["acme", "globex", "initech"]
    assert schedule.take(1.0) is None


def test_a_tenant_given_a_new_turn_goes_to_the_back_of_the_line() -> None:
    """A tenant with a long backlog sends a batch, then waits behind every tenant already
    waiting: it cannot starve them."""
    schedule = Schedule()
    backlog = {"big": 3, "small0": 1, "small1": 1}
    for tenant in backlog:
        schedule.put(tenant, 0.0, 0.0)
    order = []
    while (name := schedule.take(0.0)) is not None:
        order.append(name)
        backlog[name] -= 1
        if backlog[name]:
            schedule.put(name, 0.0, 0.0)
    assert order == ["big", "small0", "small1", "big", "big"]


def test_a_later_turn_waits_for_its_time() -> None:
    schedule = Schedule()
    schedule.put("acme", 5.0, 1.0)
    assert schedule.scheduled("acme")
    assert schedule.take(1.0) is None
    assert schedule.timeout(1.0) == 4.0
    assert schedule.take(4.999) is None
    assert schedule.take(5.0) == "acme"
    assert not schedule.scheduled("acme")
    assert schedule.timeout(5.0) is None


def test_a_turn_at_now_is_due_at_once_and_sets_no_timer() -> None:
    schedule = Schedule()
    schedule.put("acme", 1.0, 1.0)
    assert schedule.timers == []
    assert schedule.take(1.0) == "acme"


def test_timers_come_due_by_time_then_in_the_order_they_were_set() -> None:
    schedule = Schedule()
    schedule.put("late", 3.0, 0.0)
    schedule.put("first", 2.0, 0.0)
    schedule.put("second", 2.0, 0.0)
    assert schedule.timeout(0.0) == 2.0
    assert take_all(schedule, 10.0) == ["first", "second", "late"]


def test_timers_come_due_behind_the_tenants_already_ready() -> None:
    schedule = Schedule()
    schedule.put("timed", 1.0, 0.0)
    schedule.put("ready", 0.0, 0.0)
    assert take_all(schedule, 1.0) == ["ready", "timed"]


def test_a_new_turn_supersedes_a_pending_timer() -> None:
    schedule = Schedule()
    schedule.put("acme", 5.0, 0.0)
    schedule.put("acme", 1.0, 0.0)  # sooner: the timer at 5 is dead
    assert take_all(schedule, 1.0) == ["acme"]
    assert take_all(schedule, 5.0) == []  # the superseded timer gives no second turn
    schedule.put("acme", 2.0, 1.0)
    schedule.put("acme", 7.0, 1.0)  # later: the timer at 2 is dead too
    assert take_all(schedule, 6.0) == []
    assert take_all(schedule, 7.0) == ["acme"]


def test_a_turn_is_taken_once_though_its_name_stands_twice_in_line() -> None:
    schedule = Schedule()
    schedule.put("acme", 0.0, 0.0)
    schedule.put("globex", 0.0, 0.0)
    schedule.put("acme", 0.0, 0.0)
    assert list(schedule.ready) == ["acme", "globex", "acme"]
    assert take_all(schedule, 0.0) == ["acme", "globex"]
    assert not schedule.ready


def test_others_ready_sees_only_other_tenants_waiting() -> None:
    schedule = Schedule()
    assert not schedule.others_ready("acme", 0.0)
    schedule.put("acme", 0.0, 0.0)
    assert not schedule.others_ready("acme", 0.0)
    schedule.put("globex", 0.0, 0.0)
    assert schedule.others_ready("acme", 0.0)
    schedule.put("initech", 9.0, 0.0)  # a timer is not waiting for a sender
    assert take_all(schedule, 0.0) == ["acme", "globex"]
    assert not schedule.others_ready("acme", 0.0)


def test_others_ready_skips_a_place_in_line_whose_turn_was_put_off_or_taken() -> None:
    # Such a place stays in the ready queue until take() skips it; until then it must
    # not count as a tenant waiting (it refused acme's second request in flight).
    schedule = Schedule()
    schedule.put("globex", 0.0, 0.0)
    schedule.put("globex", 5.0, 0.0)  # put off by a Retry-After: its place is stale
    assert list(schedule.ready) == ["globex"]
    assert not schedule.others_ready("acme", 1.0)
    assert schedule.others_ready("acme", 5.0)  # at 5.0 its turn is due again

    schedule = Schedule()
    schedule.put("initech", 0.0, 0.0)
    schedule.put("initech", 0.0, 0.0)  # in line twice, one turn
    assert schedule.take(0.0) == "initech"
    assert list(schedule.ready) == ["initech"]  # the second place, its turn taken
    assert not schedule.others_ready("acme", 0.0)


def test_a_turn_in_line_put_off_by_a_later_one_is_not_taken_before_it() -> None:
    # A sender offered acme a turn now (a second request beside one in flight); the
    # request then failed and put acme's next turn off by its Retry-After. The place in
    # line must not send acme before that: it did (the 429 of test_aside).
    schedule = Schedule()
    schedule.put("acme", 0.0, 0.0)
    schedule.put("acme", 1.0, 0.0)
    assert take_all(schedule, 0.5) == []
    assert take_all(schedule, 1.0) == ["acme"]
    assert take_all(schedule, 2.0) == []
