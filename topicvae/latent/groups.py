"""Latent groups: how the latent code z is split into z_1..z_D.

A group spec is written as a comma-separated list of items:

``25``      one Gaussian group of 25 dimensions (topics)
``2x25``    two Gaussian groups of 25 dimensions each
``10c``     one Concrete (relaxed one-hot) group with 10 categories
``3x10c``   three such Concrete groups
``style=10,digit=10c``   items may carry a name

So ``2x25`` and ``25,25`` describe the same two groups, and ``10,10c`` is the paper's MNIST code:
10 Gaussian style dimensions beside a 10-way discrete variable.

In the objective (objective.md) a Gaussian group of E dimensions holds E latent *variables*
z_{d,1}..z_{d,E}; a Concrete group is ONE variable (E_d = 1) taking values on the simplex, so
its within-group total correlation is zero by definition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import torch

GroupKind = Literal["gaussian", "concrete"]

_ITEM = re.compile(r"^(?:(?P<name>[A-Za-z_][\w.-]*)=)?(?:(?P<count>\d+)[xX])?(?P<size>\d+)(?P<concrete>[cC]?)$")
_EXAMPLES = "e.g. '2x25', '25,25', '10,10c' or 'style=10,digit=10c'"


class GroupSpecError(ValueError):
    """A group spec that does not parse or does not describe a valid latent code."""


@dataclass(frozen=True)
class LatentGroup:
    """One block z_d of the latent code.

    Parameters
    ----------
    name : str
        Used in reports ("g0", "style", ...).
    size : int
        Gaussian: the number of dimensions E_d. Concrete: the number of categories.
    kind : {"gaussian", "concrete"}
    """

    name: str
    size: int
    kind: GroupKind = "gaussian"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise GroupSpecError(f"group name={self.name!r} is invalid: give a non-empty string")
        if self.kind not in ("gaussian", "concrete"):
            raise GroupSpecError(f"group {self.name!r}: kind={self.kind!r} is invalid: use 'gaussian' or 'concrete'")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise GroupSpecError(f"group {self.name!r}: size={self.size!r} is invalid: give a whole number >= 1")
        if self.kind == "concrete" and self.size < 2:
            raise GroupSpecError(f"group {self.name!r}: a Concrete group needs at least 2 categories, got {self.size}")

    @property
    def num_variables(self) -> int:
        """Number of latent variables z_{d,e} in the objective (1 for a Concrete group)."""
        return self.size if self.kind == "gaussian" else 1

    @property
    def is_concrete(self) -> bool:
        return self.kind == "concrete"

    def spec(self, *, with_name: bool = True) -> str:
        text = f"{self.size}{'c' if self.is_concrete else ''}"
        return f"{self.name}={text}" if with_name else text


class GroupSpec(Sequence[LatentGroup]):
    """An ordered, immutable list of latent groups.

    Build it from a string with :meth:`parse`, or in Python::

        GroupSpec([LatentGroup("style", 10), LatentGroup("digit", 10, "concrete")])

    Columns: the decoder and ``transform`` see the groups' columns side by side, in order
    (a Gaussian group contributes ``size`` columns, a Concrete group one column per category).
    """

    def __init__(self, groups: Iterable[LatentGroup]):
        groups = tuple(groups)
        if not groups:
            raise GroupSpecError("a group spec needs at least one group, " + _EXAMPLES)
        for group in groups:
            if not isinstance(group, LatentGroup):
                raise GroupSpecError(f"expected LatentGroup objects, got {type(group).__name__}")
        names = [g.name for g in groups]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise GroupSpecError(f"group names must be unique, repeated: {', '.join(duplicated)}")
        self._groups = groups

    # --- construction -------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> GroupSpec:
        """Parse a spec such as ``'2x25'``, ``'25,25'`` or ``'10,10c'``."""
        if not isinstance(text, str) or not text.strip():
            raise GroupSpecError(f"group spec {text!r} is empty: write one, {_EXAMPLES}")
        groups: list[LatentGroup] = []
        for raw_item in text.split(","):
            item = raw_item.strip()
            match = _ITEM.match(item)
            if match is None:
                raise GroupSpecError(
                    f"group spec {text!r}: cannot read item {item!r}; "
                    f"write N (Gaussian), Nc (Concrete) or KxN, {_EXAMPLES}"
                )
            count = int(match["count"]) if match["count"] else 1
            size = int(match["size"])
            kind: GroupKind = "concrete" if match["concrete"] else "gaussian"
            if count < 1:
                raise GroupSpecError(f"group spec {text!r}: item {item!r} repeats a group 0 times")
            if match["name"] and count > 1:
                raise GroupSpecError(f"group spec {text!r}: a named item ({item!r}) cannot be repeated with 'x'")
            for _ in range(count):
                name = match["name"] or f"g{len(groups)}"
                try:
                    groups.append(LatentGroup(name, size, kind))
                except GroupSpecError as error:
                    raise GroupSpecError(f"group spec {text!r}: {error}") from None
        return cls(groups)

    @classmethod
    def coerce(cls, spec: str | GroupSpec | Iterable[LatentGroup]) -> GroupSpec:
        """Accept a spec string, a GroupSpec, or an iterable of LatentGroup."""
        if isinstance(spec, GroupSpec):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        if isinstance(spec, Iterable):
            return cls(spec)
        raise GroupSpecError(f"groups={spec!r} is invalid: pass a spec string such as '2x25' or LatentGroup objects")

    # --- sequence protocol --------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> LatentGroup: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[LatentGroup, ...]: ...
    def __getitem__(self, index):
        return self._groups[index]

    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[LatentGroup]:
        return iter(self._groups)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupSpec) and self._groups == other._groups

    def __hash__(self) -> int:
        return hash(self._groups)

    def __repr__(self) -> str:
        return f"GroupSpec({str(self)!r})"

    def __str__(self) -> str:
        """A spec string that :meth:`parse` reads back into an equal GroupSpec."""
        return ",".join(g.spec(with_name=True) for g in self._groups)

    # --- derived layout -----------------------------------------------------------------
    @property
    def gaussian(self) -> tuple[LatentGroup, ...]:
        return tuple(g for g in self._groups if not g.is_concrete)

    @property
    def concrete(self) -> tuple[LatentGroup, ...]:
        return tuple(g for g in self._groups if g.is_concrete)

    @property
    def num_columns(self) -> int:
        """Width of the code the decoder sees: all Gaussian dims plus all Concrete categories."""
        return sum(g.size for g in self._groups)

    @property
    def num_gaussian_dims(self) -> int:
        return sum(g.size for g in self.gaussian)

    @property
    def num_variables(self) -> int:
        """Number of latent variables z_{d,e} over all groups (the objective's dimension count)."""
        return sum(g.num_variables for g in self._groups)

    def column_slices(self) -> dict[str, slice]:
        """Each group's columns in the side-by-side code."""
        slices, start = {}, 0
        for group in self._groups:
            slices[group.name] = slice(start, start + group.size)
            start += group.size
        return slices

    def variable_group_index(self) -> torch.Tensor:
        """For each latent variable z_{d,e}, the index d of its group (shape [num_variables])."""
        return torch.tensor([d for d, g in enumerate(self._groups) for _ in range(g.num_variables)], dtype=torch.long)

    def variable_labels(self) -> list[str]:
        """A label per latent variable z_{d,e}: '<group>:<index>' for each Gaussian dimension and
        the group's name for a Concrete group (its categories form one variable)."""
        labels: list[str] = []
        for group in self._groups:
            labels += [group.name] if group.is_concrete else [f"{group.name}:{k}" for k in range(group.size)]
        return labels

    def gaussian_columns(self) -> list[int]:
        """The code columns that hold Gaussian dimensions, in order."""
        slices = self.column_slices()
        return [c for group in self.gaussian for c in range(slices[group.name].start, slices[group.name].stop)]

    def topic_labels(self) -> list[tuple[str, int]]:
        """(group name, index within group) for every column of the code."""
        return [(g.name, i) for g in self._groups for i in range(g.size)]
