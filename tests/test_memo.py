"""The bounded memo behind sentence embeddings and language-model prompt states."""

import numpy as np
import pytest

from refusalkit.memo import BoundedMemo


def test_memo_computes_each_missing_key_once_in_first_seen_order():
    calls = []

    def square(keys):
        calls.append(list(keys))
        return [k * k for k in keys]

    m = BoundedMemo(10)
    assert m.get_many([3, 2, 3], square) == [9, 4, 9]
    assert m.get_many([2, 5], square) == [4, 25]
    assert calls == [[3, 2], [5]]
    assert len(m) == 3


def test_memo_stays_bounded_and_keeps_values_it_already_had_for_the_call():
    m = BoundedMemo(3)
    m.get_many([1, 2, 3], lambda ks: [k + 10 for k in ks])
    # 1 is memoised, 4 and 5 are not: the memo is emptied to make room, yet 1's value must still come back.
    assert m.get_many([1, 4, 5], lambda ks: [k + 10 for k in ks]) == [11, 14, 15]
    assert len(m) <= 3
    assert m.get_many(list(range(20)), lambda ks: [k + 10 for k in ks]) == [k + 10 for k in range(20)]
    assert len(m) <= 3


def test_memo_rejects_a_compute_that_returns_the_wrong_count():
    with pytest.raises(ValueError, match="2 values for 3 keys"):
        BoundedMemo(5).get_many([1, 2, 3], lambda ks: [0, 0])


def test_embeddings_survive_the_memo_emptying_mid_run(monkeypatch):
    """A long detect run passes the memo's bound while later batches repeat earlier texts."""
    from refusalkit.detect import embedding

    monkeypatch.setattr(embedding, "_MEMO", BoundedMemo(3))
    first = embedding.embed(["I can't help with that.", "Sure, here it is.", "No."])
    again = embedding.embed(["I can't help with that.", "A new answer.", "Another new one."])
    assert again.shape == (3, first.shape[1])
    np.testing.assert_allclose(again[0], first[0], atol=1e-6)
