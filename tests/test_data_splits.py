"""Seeded hold-out splits: sizes, grouping, determinism, independence from input order."""

from __future__ import annotations

import pytest

from metaqap_hf.data.splits import hold_out, protocol_split, train_validation_test

NAMES = [f"img{index:03d}" for index in range(50)]


def _self(name: str) -> str:
    return name


def test_hold_out_sizes_and_partition():
    kept, held = hold_out(NAMES, 0.2, seed=0, group_of=_self)
    assert (len(kept), len(held)) == (40, 10)
    assert sorted(kept + held) == NAMES
    assert kept == [name for name in NAMES if name in set(kept)]  # input order kept


def test_hold_out_is_seeded_and_ignores_input_order():
    first = hold_out(NAMES, 0.2, seed=5, group_of=_self)[1]
    assert hold_out(list(reversed(NAMES)), 0.2, seed=5, group_of=_self)[1] == list(reversed(first))
    assert set(hold_out(NAMES, 0.2, seed=6, group_of=_self)[1]) != set(first)


def test_groups_are_never_split():
    def group_of(name: str) -> str:
        return name[:5]  # img00 .. img04: five groups of ten

    kept, held = hold_out(NAMES, 0.4, seed=1, group_of=group_of)
    assert len({group_of(name) for name in held}) == 2
    assert not {group_of(name) for name in kept} & {group_of(name) for name in held}


def test_small_fractions_hold_out_at_least_one_and_zero_holds_out_none():
    assert len(hold_out(NAMES[:4], 0.01, seed=0, group_of=_self)[1]) == 1
    assert hold_out(NAMES, 0.0, seed=0, group_of=_self) == (NAMES, [])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        hold_out(NAMES, 1.0, seed=0, group_of=_self)
    with pytest.raises(ValueError, match="at least 2"):
        hold_out(NAMES[:1], 0.5, seed=0, group_of=_self)


def test_protocol_and_validation_never_touch_test():
    train, test = protocol_split(NAMES, 3, group_of=_self)
    assert len(test) == 10
    splits = train_validation_test(train, test, 0.25, seed=0, group_of=_self)
    assert [len(splits[split]) for split in ("train", "validation", "test")] == [30, 10, 10]
    assert set(splits["validation"]) <= set(train) and splits["test"] == test
    with pytest.raises(ValueError, match="non-negative"):
        protocol_split(NAMES, -1, group_of=_self)
