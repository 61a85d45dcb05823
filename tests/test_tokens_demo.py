"""The refusal-token demo's data (refusalkit.tokens.demo) and its console table (refusalkit.cli.demo),
without a model: the library returns figures, the CLI formats them."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from refusalkit.cli.demo import policy_rates_table
from refusalkit.data.records import Example
from refusalkit.tokens.demo import PROFILES, policy_rows, profile_test_figures, shipped_profiles
from refusalkit.tokens.policy import Policy
from refusalkit.tokens.scheme import TokenScheme


def test_policy_rows_mark_refusal_tokens_as_refused():
    scheme = TokenScheme(categories={"Safety": "safety", "Humour": "humour"})
    exs = [
        Example(id="a", prompt="p1", category="Safety", expected="refuse"),
        Example(id="b", prompt="p2", category="Safety", expected="comply"),
        Example(id="c", prompt="p3", category="Humour"),
    ]  # no expected: counts as "refuse"
    # columns: [refuse:safety], [refuse:humour], [respond]
    q = np.array([[0.7, 0.1, 0.2], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    rows = policy_rows(exs, q, Policy(scheme, rule="argmax"))
    assert [(r["token"], r["refused"], r["expected"]) for r in rows] == [
        ("[refuse:safety]", True, "refuse"),
        ("[respond]", False, "comply"),
        ("[refuse:humour]", True, "refuse"),
    ]

    console = Console(record=True, width=120, file=io.StringIO())
    console.print(policy_rates_table({"argmax": rows}, "t"))
    text = console.export_text()
    assert "Safety" in text and "1/1 | 0/1" in text  # refused 1 of 1 harmful, 0 of 1 contrast
    assert "Humour" in text and "1/1 | -" in text


def test_shipped_profile_figures_come_from_the_profiles():
    profiles = shipped_profiles()
    assert set(profiles) <= set(PROFILES) and profiles, "the bundled adapter ships its profiles"
    figs = profile_test_figures(profiles)
    by_name = {f["name"]: f for f in figs}
    for name, prof in profiles.items():
        if (prof.get("test") or {}).get("binary"):
            assert by_name[name]["f1"] == prof["test"]["binary"]["f1"]
            assert set(by_name[name]["rates"]) == {"Humanizing", "Incomplete", "Indeterminate", "Safety", "Unsupported"}
            assert all(0.0 <= r <= 1.0 for r in by_name[name]["rates"].values())
    assert profile_test_figures({"x": {"policy": {}}}) == []  # a profile without test figures is left out
