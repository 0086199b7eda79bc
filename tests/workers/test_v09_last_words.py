"""The last frames of closed 0.9 polling sessions, kept for their next GET: bounded in time,
count and size (workers.v09.last_words)."""

from __future__ import annotations

from sio_cluster.workers.v09.last_words import LastWords

BYE = "0::"


def kept(count: int = 3, budget: int = 100, per_session: int = 20) -> LastWords:
    return LastWords(count, budget, per_session)


def test_a_session_gets_what_was_kept_for_it_once() -> None:
    words = kept()
    words.keep("a", "5:::x" + BYE, BYE, now=0.0, keep_for=2.0)
    assert words.take("b", now=1.0) is None
    assert words.waiting("a", now=1.0)
    assert words.take("a", now=1.0) == "5:::x" + BYE
    assert not words.waiting("a", now=1.0)
    assert words.take("a", now=1.0) is None
    assert len(words) == 0


def test_nothing_is_kept_past_its_time() -> None:
    words = kept()
    words.keep("a", BYE, BYE, now=0.0, keep_for=2.0)
    words.keep("b", BYE, BYE, now=1.0, keep_for=2.0)
    assert not words.waiting("a", now=2.0)
    assert words.take("a", now=2.0) is None
    assert len(words) == 1  # b's time is not up
    words.keep("c", BYE, BYE, now=3.5, keep_for=2.0)
    assert len(words) == 1  # b's went when c came
    assert words.take("c", now=3.6) == BYE


def test_the_oldest_go_first_over_the_count() -> None:
    words = kept(count=3)
    for number in range(5):
        words.keep(f"s{number}", BYE, BYE, now=0.0, keep_for=10.0)
    assert len(words) == 3
    assert [words.take(f"s{n}", now=1.0) for n in range(5)] == [None, None, BYE, BYE, BYE]


def test_the_oldest_go_first_over_the_budget() -> None:
    words = kept(budget=40)
    for number in range(4):
        words.keep(f"s{number}", "x" * 17 + BYE, BYE, now=0.0, keep_for=10.0)  # 20 each
    assert len(words) == 2
    assert words.take("s3", now=1.0) is not None


def test_a_long_goodbye_keeps_only_the_goodbye() -> None:
    words = kept(per_session=20)
    words.keep("a", "5:::" + "x" * 30 + BYE, BYE, now=0.0, keep_for=10.0)
    assert words.take("a", now=1.0) == BYE


def test_kept_again_replaces_and_counts_once() -> None:
    words = kept(budget=10)
    words.keep("a", "x" * 8, BYE, now=0.0, keep_for=10.0)
    words.keep("a", "y" * 8, BYE, now=0.0, keep_for=10.0)
    assert words.take("a", now=1.0) == "y" * 8
