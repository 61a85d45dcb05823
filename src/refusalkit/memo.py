"""A bounded memo for values that are costly to compute and asked for again and again (sentence embeddings,
hidden states), e.g. by every fold of a cross-validation."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any


class BoundedMemo:
    """Values memoised by key. Before it would grow past ``max_items`` it is emptied, so memory stays
    bounded however many keys a long run sees."""

    def __init__(self, max_items: int):
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self._values: dict[Hashable, Any] = {}

    def __len__(self) -> int:
        return len(self._values)

    def clear(self) -> None:
        """Forget every memoised value."""
        self._values.clear()

    def get_many(self, keys: Sequence[Hashable], compute: Callable[[list], Sequence[Any]]) -> list[Any]:
        """Return the value of each key (in the order of ``keys``), calling ``compute(missing)`` once with the
        keys not memoised, each once and in first-seen order; ``compute`` returns one value per key."""
        unique = list(dict.fromkeys(keys))
        # Take the memoised values first: emptying the memo below must not lose them for this call.
        got = {k: self._values[k] for k in unique if k in self._values}
        todo = [k for k in unique if k not in got]
        if todo:
            values = list(compute(todo))
            if len(values) != len(todo):
                raise ValueError(f"compute returned {len(values)} values for {len(todo)} keys")
            if len(self._values) + len(todo) > self.max_items:
                self._values.clear()
            for k, v in zip(todo, values):
                got[k] = v
                if len(self._values) < self.max_items:
                    self._values[k] = v
        return [got[k] for k in keys]
