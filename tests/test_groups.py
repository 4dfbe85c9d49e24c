"""Tests of topicvae.latent.groups: the latent group spec ('2x25', '25,25', '10,10c', 'style=10,digit=10c')."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from topicvae.latent.groups import GroupSpec, GroupSpecError, LatentGroup


def layout(spec: GroupSpec) -> list[tuple[str, int, str]]:
    return [(g.name, g.size, g.kind) for g in spec]


# ---------------------------------------------------------------------------------------------
# Documented forms
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("25", [("g0", 25, "gaussian")]),
        ("2x25", [("g0", 25, "gaussian"), ("g1", 25, "gaussian")]),
        ("25,25", [("g0", 25, "gaussian"), ("g1", 25, "gaussian")]),
        ("10c", [("g0", 10, "concrete")]),
        ("3x10c", [("g0", 10, "concrete"), ("g1", 10, "concrete"), ("g2", 10, "concrete")]),
        ("10,10c", [("g0", 10, "gaussian"), ("g1", 10, "concrete")]),
        ("style=10,digit=10c", [("style", 10, "gaussian"), ("digit", 10, "concrete")]),
        ("1", [("g0", 1, "gaussian")]),
        ("2c", [("g0", 2, "concrete")]),
        ("1x7", [("g0", 7, "gaussian")]),
        ("2x3,4c,5", [("g0", 3, "gaussian"), ("g1", 3, "gaussian"), ("g2", 4, "concrete"), ("g3", 5, "gaussian")]),
    ],
)
def test_parse_documented_forms(text, expected):
    spec = GroupSpec.parse(text)
    assert layout(spec) == expected
    assert len(spec) == len(expected)
    assert [g.name for g in spec] == [e[0] for e in expected]
    assert all(isinstance(g, LatentGroup) for g in spec)


def test_repeat_and_list_forms_are_equal():
    a, b = GroupSpec.parse("2x25"), GroupSpec.parse("25,25")
    assert a == b
    assert hash(a) == hash(b)
    assert [g.name for g in a] == ["g0", "g1"]
    assert [(g.size, g.kind) for g in a] == [(25, "gaussian"), (25, "gaussian")]
    assert GroupSpec.parse("2x10c") == GroupSpec.parse("10c,10c")
    assert GroupSpec.parse("25,25") != GroupSpec.parse("25,24")
    assert GroupSpec.parse("10,10") != GroupSpec.parse("10,10c")
    assert GroupSpec.parse("a=5,b=5") != GroupSpec.parse("5,5")  # names differ


def test_python_construction_equals_parsed():
    built = GroupSpec([LatentGroup("style", 10), LatentGroup("digit", 10, "concrete")])
    assert built == GroupSpec.parse("style=10,digit=10c")
    assert GroupSpec.coerce("style=10,digit=10c") == built
    assert GroupSpec.coerce(built) is built
    assert GroupSpec.coerce([LatentGroup("style", 10), LatentGroup("digit", 10, "concrete")]) == built


@pytest.mark.parametrize("text", ["25", "2x25", "25,25", "10,10c", "style=10,digit=10c", "3x10c", "a=1,2x4,b=7c"])
def test_round_trip_through_str(text):
    spec = GroupSpec.parse(text)
    again = GroupSpec.parse(str(spec))
    assert again == spec
    assert layout(again) == layout(spec)
    assert str(again) == str(spec)
    assert GroupSpec.parse(repr(spec)[len("GroupSpec('") : -2]) == spec


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("2x", "cannot read item '2x'"),
        ("x25", "cannot read item 'x25'"),
        ("0", "size=0"),
        ("0c", "size=0"),
        ("1c", "at least 2 categories"),
        ("25,,25", "cannot read item ''"),
        ("25,", "cannot read item ''"),
        ("a=2x5", "cannot be repeated"),
        ("a=5,a=6", "unique.*a"),
        ("style=5,digit=3c,style=2", "unique.*style"),
        ("25,abc", "cannot read item 'abc'"),
        ("0x25", "0 times"),
        ("-3", "cannot read item '-3'"),
        ("2.5", "cannot read item '2.5'"),
        ("25d", "cannot read item '25d'"),
        ("=5", "cannot read item '=5'"),
    ],
)
def test_bad_specs_raise(text, match):
    with pytest.raises(GroupSpecError, match=match):
        GroupSpec.parse(text)


def test_group_spec_error_is_a_value_error():
    assert issubclass(GroupSpecError, ValueError)
    with pytest.raises(ValueError):
        GroupSpec.parse("x")


def test_bad_spec_message_quotes_the_whole_spec_and_examples():
    with pytest.raises(GroupSpecError) as info:
        GroupSpec.parse("25,abc")
    message = str(info.value)
    assert "'25,abc'" in message
    assert "2x25" in message  # points at a valid example


@pytest.mark.parametrize(
    "args,match",
    [
        (("", 5), "name"),
        (("a", 0), "size=0"),
        (("a", -2), "size=-2"),
        (("a", 2.5), "size=2.5"),
        (("a", True), "size=True"),
        (("a", 5, "dirichlet"), "kind='dirichlet'"),
        (("a", 1, "concrete"), "at least 2 categories"),
    ],
)
def test_latent_group_validation(args, match):
    with pytest.raises(GroupSpecError, match=match):
        LatentGroup(*args)


def test_empty_or_foreign_group_lists_are_rejected():
    with pytest.raises(GroupSpecError, match="at least one group"):
        GroupSpec([])
    with pytest.raises(GroupSpecError, match="LatentGroup"):
        GroupSpec([("a", 5)])
    with pytest.raises(GroupSpecError, match="unique"):
        GroupSpec([LatentGroup("a", 5), LatentGroup("a", 3, "concrete")])
    with pytest.raises(GroupSpecError):
        GroupSpec.coerce(25)


# ---------------------------------------------------------------------------------------------
# Derived layout
# ---------------------------------------------------------------------------------------------
def test_mnist_code_layout():
    spec = GroupSpec.parse("10,10c")
    assert spec.num_variables == 11
    assert spec.num_columns == 20
    assert spec.num_gaussian_dims == 10
    assert spec.column_slices() == {"g0": slice(0, 10), "g1": slice(10, 20)}
    assert spec.variable_group_index().tolist() == [0] * 10 + [1]
    assert spec.variable_group_index().dtype == torch.long
    assert [g.name for g in spec.gaussian] == ["g0"]
    assert [g.name for g in spec.concrete] == ["g1"]
    assert [g.num_variables for g in spec] == [10, 1]
    labels = spec.topic_labels()
    assert len(labels) == 20
    assert labels[0] == ("g0", 0) and labels[9] == ("g0", 9) and labels[10] == ("g1", 0) and labels[19] == ("g1", 9)


def test_mixed_layout_with_concrete_in_the_middle():
    spec = GroupSpec.parse("a=3,b=4c,2x2")
    assert [g.name for g in spec] == ["a", "b", "g2", "g3"]
    assert spec.num_variables == 3 + 1 + 2 + 2
    assert spec.num_columns == 3 + 4 + 2 + 2
    assert spec.column_slices() == {"a": slice(0, 3), "b": slice(3, 7), "g2": slice(7, 9), "g3": slice(9, 11)}
    assert spec.variable_group_index().tolist() == [0, 0, 0, 1, 2, 2, 3, 3]
    assert spec.topic_labels() == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2), ("b", 3),
                                   ("g2", 0), ("g2", 1), ("g3", 0), ("g3", 1)]


def test_topic_vae_default_two_by_twenty_five():
    spec = GroupSpec.parse("2x25")
    assert spec.num_variables == 50
    assert spec.num_columns == 50
    assert spec.column_slices() == {"g0": slice(0, 25), "g1": slice(25, 50)}
    assert spec.variable_group_index().tolist() == [0] * 25 + [1] * 25


def test_spec_is_an_immutable_sequence():
    spec = GroupSpec.parse("3,4c")
    assert spec[0] == LatentGroup("g0", 3)
    assert spec[-1] == LatentGroup("g1", 4, "concrete")
    assert list(spec) == [spec[0], spec[1]]
    with pytest.raises(Exception):
        spec[0].size = 7  # frozen


# ---------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------
item = st.tuples(
    st.integers(1, 4),  # count
    st.integers(1, 60),  # size
    st.booleans(),  # concrete
    st.booleans(),  # write an explicit "1x" when count == 1
)


@settings(max_examples=80, deadline=None)
@given(items=st.lists(item, min_size=1, max_size=6))
def test_any_rendered_spec_parses_to_expected_groups(items):
    parts, expected = [], []
    for count, size, concrete, explicit_one in items:
        if concrete:
            size = max(size, 2)
        prefix = f"{count}x" if count > 1 or explicit_one else ""
        parts.append(f"{prefix}{size}{'c' if concrete else ''}")
        for _ in range(count):
            expected.append((f"g{len(expected)}", size, "concrete" if concrete else "gaussian"))
    text = ",".join(parts)
    spec = GroupSpec.parse(text)
    assert layout(spec) == expected
    assert GroupSpec.parse(str(spec)) == spec
    assert spec.num_columns == sum(size for _, size, _ in expected)
    assert spec.num_variables == sum(size if kind == "gaussian" else 1 for _, size, kind in expected)
    index = spec.variable_group_index().tolist()
    assert len(index) == spec.num_variables
    assert index == sorted(index) and set(index) == set(range(len(expected)))
    for d, (_, size, kind) in enumerate(expected):
        assert index.count(d) == (size if kind == "gaussian" else 1)
    slices = list(spec.column_slices().values())
    assert slices[0].start == 0 and slices[-1].stop == spec.num_columns
    for prev, nxt in zip(slices, slices[1:]):
        assert prev.stop == nxt.start
    assert [s.stop - s.start for s in slices] == [size for _, size, _ in expected]
    assert len(spec.topic_labels()) == spec.num_columns


@settings(max_examples=50, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), st.integers(2, 40), st.booleans()),
        min_size=1,
        max_size=5,
        unique_by=lambda t: t[0],
    )
)
def test_any_named_spec_round_trips(items):
    text = ",".join(f"{name}={size}{'c' if concrete else ''}" for name, size, concrete in items)
    spec = GroupSpec.parse(text)
    assert layout(spec) == [(name, size, "concrete" if concrete else "gaussian") for name, size, concrete in items]
    assert GroupSpec.parse(str(spec)) == spec
    assert list(spec.column_slices()) == [name for name, _, _ in items]


def test_variable_labels_and_gaussian_columns_follow_the_code_layout():
    spec = GroupSpec.parse("3,4c,2")
    assert spec.variable_labels() == ["g0:0", "g0:1", "g0:2", "g1", "g2:0", "g2:1"]
    assert spec.gaussian_columns() == [0, 1, 2, 7, 8]
    assert GroupSpec.parse("5c").gaussian_columns() == []
