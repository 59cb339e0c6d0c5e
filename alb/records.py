"""The seam: prediction arrays handed to strategies (SPEC section 2).

Classification fields for n images: `probs (n, C)`, `embedding (n, D)` (penultimate layer),
`mc_probs (T, n, C)` (MC-dropout passes), `pred_loss (n,)` (learning-loss head).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

CLASSIFICATION_FIELDS = ("probs", "embedding", "mc_probs", "pred_loss")
_ROW_AXIS = {"mc_probs": 1}


@dataclass(frozen=True)
class Records(Mapping):
    """Arrays for n pool images, keyed by field; `ids[i]` is row i's stable sample id."""

    ids: np.ndarray
    fields: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, array in self.fields.items():
            rows = array.shape[_ROW_AXIS.get(name, 0)]
            if rows != len(self.ids):
                raise ValueError(f"field {name!r} has {rows} rows, expected {len(self.ids)}")

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.fields:
            raise KeyError(f"field {name!r} was not computed; a strategy must list it in `fields` "
                           f"(available: {sorted(self.fields)})")
        return self.fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    @property
    def n(self) -> int:
        return len(self.ids)
