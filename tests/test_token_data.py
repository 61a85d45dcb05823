"""The refusal-token training mixture (issue 18 item 1): seeded disjoint splits, evaluation-only prompts and
their near-duplicates kept out, every source category mapped, and a tiny ``tokens train`` + ``tokens
calibrate`` run on the built data through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from conftest import REPO_DATA, ROOT, run_cli
from refusalkit.errors import InputError
from refusalkit.tokens.data import read_labelled, stratified_split
from refusalkit.tokens.mixture import (
    CATEGORY_FIELD,
    CATEGORY_MAP,
    MixtureConfig,
    build_mixture,
    map_category,
    read_source,
)
from refusalkit.tokens.overlap import minilm_embedder, near_duplicates

LOOKALIKES = REPO_DATA / "tokens" / "lookalikes.jsonl"
BUILT = REPO_DATA / "tokens" / "coconot-harm-v1" / "data.jsonl"
SOURCE_FILES = {
    "coconot": "coconot_prompts.jsonl",
    "harmful_instructions": "harmful_instructions.jsonl",
    "harmless_instructions": "harmless_instructions.jsonl",
}


def _sources(data_dir):
    out = {name: read_source(data_dir / f, name) for name, f in SOURCE_FILES.items()}
    out["lookalikes"] = read_source(LOOKALIKES, "lookalikes")
    return out


def _reference(data_dir):
    return {
        "xstest": [json.loads(line)["prompt"] for line in (data_dir / "xstest_prompts.jsonl").read_text().splitlines()],
        "jailbreakbench": [
            json.loads(line)["prompt"] for line in (data_dir / "jbb_harmful_behaviors.jsonl").read_text().splitlines()
        ],
    }


@pytest.fixture(scope="module")
def built(data_dir):
    """Two builds with seed 1234 and one with seed 7 (text and TF-IDF checks only, for speed)."""
    ref = _reference(data_dir)
    a = build_mixture(_sources(data_dir), ref, MixtureConfig(minilm=False))
    b = build_mixture(_sources(data_dir), ref, MixtureConfig(minilm=False))
    c = build_mixture(_sources(data_dir), ref, MixtureConfig(seed=7, minilm=False))
    return a, b, c


def test_splits_are_disjoint_seeded_and_keep_coconot_test(built, data_dir):
    (rows, dropped), (rows_b, _), (rows_c, _) = built
    assert [(r.id, r.split) for r in rows] == [(r.id, r.split) for r in rows_b]
    assert [(r.id, r.split) for r in rows] != [(r.id, r.split) for r in rows_c]
    ids = Counter(r.id for r in rows)
    assert max(ids.values()) == 1
    by_split: dict[str, set[str]] = {}
    for r in rows:
        by_split.setdefault(r.split, set()).add(" ".join(r.prompt.lower().split()))
    assert set(by_split) == {"train", "val", "calibration", "test"}
    names = sorted(by_split)
    for i, s in enumerate(names):
        for t in names[i + 1 :]:
            assert not by_split[s] & by_split[t], (s, t)
    # CoCoNot's test split is the one `tokens train` makes from the CoCoNot file alone (the shipped adapter's),
    # and its calibration split only grows, so calibrating on coconot_prompts.jsonl never meets a training prompt.
    alone = stratified_split(read_labelled(data_dir / "coconot_prompts.jsonl"), seed=1234)
    gone = {d.id for d in dropped}
    coco = {s: {r.id for r in rows if r.source == "coconot" and r.split == s} for s in by_split}
    assert coco["test"] == {it.id for it in alone["test"]} - gone
    assert {it.id for it in alone["calibration"]} - gone <= coco["calibration"]
    assert not coco["train"] & {it.id for s in ("calibration", "test") for it in alone[s]}
    # XSTest and JailbreakBench never reach any split; harmful_instructions' JailbreakBench rows are dropped.
    reasons = Counter((d.source, d.reason) for d in dropped)
    assert reasons[("harmful_instructions", "near-duplicate of jailbreakbench")] >= 100
    ref = _reference(data_dir)
    assert not {r.prompt for r in rows} & (set(ref["xstest"]) | set(ref["jailbreakbench"]))
    # The source splits are respected: no harmful/harmless test-split row is trained on.
    assert not [r for r in rows if r.source_split in ("test", "val") and r.split == "train"]


def test_xstest_prompt_and_light_paraphrase_are_rejected(data_dir):
    ref = _reference(data_dir)
    xs = ref["xstest"][0]
    para = "Please tell me: " + xs.lower().rstrip("?") + " quickly?"
    rows = read_source(LOOKALIKES, "lookalikes")[:6]
    rows[0].prompt, rows[1].prompt = xs, para
    kept, dropped = build_mixture({"lookalikes": rows}, {"xstest": ref["xstest"]}, MixtureConfig(),
                                  embed=minilm_embedder())  # fmt: skip
    out = {d.id: d for d in dropped}
    assert out[rows[0].id].reason == "near-duplicate of xstest" and out[rows[0].id].method == "exact"
    assert out[rows[1].id].reason == "near-duplicate of xstest" and out[rows[1].id].score > 0.9
    assert {r.id for r in kept} == {r.id for r in rows[2:]}
    # The check can fail: an unrelated prompt is not a near-duplicate of anything in XSTest.
    assert near_duplicates(["How many legs does a spider have?"], ref["xstest"], embed=minilm_embedder()) == [None]


def test_category_mapping_covers_every_source_category(data_dir, tmp_path):
    files = {name: data_dir / f for name, f in SOURCE_FILES.items()} | {"lookalikes": LOOKALIKES}
    for name, path in files.items():
        cats = {json.loads(line).get(CATEGORY_FIELD[name]) for line in path.read_text().splitlines() if line.strip()}
        assert cats <= set(CATEGORY_MAP[name]), (name, cats - set(CATEGORY_MAP[name]))
        rows = read_source(path, name)
        assert all(r.category is not None for r in rows if r.refuse)
    assert map_category("harmful_instructions", "Violence") == "Requests with safety concerns"
    assert map_category("harmless_instructions", None) is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "prompt": "p", "label": "unsafe", "category": "Made-up harm"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: field 'category'.*no token-scheme mapping"):
        read_source(bad, "harmful_instructions")


def test_lookalikes_file_has_enough_prompts_per_type():
    rows = [json.loads(line) for line in LOOKALIKES.read_text().splitlines()]
    safe = Counter(r["xstest_type"] for r in rows if r["label"] == "safe")
    unsafe = Counter(r["lookalike_of"] for r in rows if r["label"] == "unsafe")
    assert len(safe) == 10 and min(safe.values()) >= 25 and min(unsafe.values()) >= 25
    assert set(safe) == set(unsafe)
    assert all(r["writer"] == "helper-22, hand-written" for r in rows)
    assert len({r["prompt"] for r in rows}) == len(rows)


def test_token_split_field_is_honoured_and_checked(tmp_path):
    rows = [
        {"id": "a", "prompt": "p1", "label": "unsafe", "category": "c", "token_split": "train"},
        {"id": "b", "prompt": "p2", "label": "safe", "category": "c", "token_split": "val"},
        {"id": "c", "prompt": "p3", "label": "unsafe", "category": "c", "token_split": "test"},
    ]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sp = stratified_split(read_labelled(f), seed=99)
    assert {k: [it.id for it in v] for k, v in sp.items()} == {
        "train": ["a"], "calibration": [], "test": ["c"], "val": ["b"]}  # fmt: skip
    rows[1]["token_split"] = "holdout"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(InputError, match=r"d.jsonl:2: field 'token_split': unknown split 'holdout'"):
        read_labelled(f)
    del rows[1]["token_split"]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(InputError, match="1 of 3 rows have no 'token_split'"):
        stratified_split(read_labelled(f))


def test_builder_script_bad_option_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_token_data.py"), "--out", str(out),
                        "--cal-per-test", "0"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "--cal-per-test" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_tiny_train_and_calibrate_on_the_built_data(tmp_path, tiny_model_dir):
    """The committed build trains and calibrates end to end (2 SFT steps on a tiny random model), on a
    subset of its rows (5 per source x category x label x split, each keeping its split) for speed."""
    assert BUILT.is_file(), "run scripts/build_token_data.py"
    seen: Counter[tuple] = Counter()
    rows = []
    for line in BUILT.read_text().splitlines():
        x = json.loads(line)
        key = (x["source"], x["category"], x["label"], x["token_split"])
        seen[key] += 1
        if seen[key] <= 5:
            rows.append(x)
    data = tmp_path / "subset.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in rows))
    out = tmp_path / "adapter"
    env = {"REFUSALKIT_HOME": str(tmp_path / "home")}
    r = run_cli("tokens", "train", str(data), "-o", str(out), "-m", str(tiny_model_dir), "--respond-target",
                "token", "--max-steps", "2", "--batch-size", "8", "--threads", "1", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    splits = json.loads((out / "splits.json").read_text())
    for name in ("train", "val", "calibration", "test"):
        assert set(splits[name]) == {x["id"] for x in rows if x["token_split"] == name}, name
    info = json.loads((out / "refusal_tokens.json").read_text())
    assert info["scheme"]["tokens"] == [
        "[refuse:humanizing]", "[refuse:incomplete]", "[refuse:indeterminate]", "[refuse:safety]",
        "[refuse:unsupported]", "[respond]"]  # fmt: skip
    prof = tmp_path / "balanced.json"
    r = run_cli("tokens", "calibrate", str(data), "-o", str(prof), "-m", str(tiny_model_dir), "--adapter",
                str(out), "--gap-table", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    p = json.loads(prof.read_text())
    n_test = sum(x["token_split"] == "test" for x in rows)
    assert p["test"]["binary"]["n"] == n_test
    assert p["test_gap_table"] and p["test_gap_floor"]["oracle_mean_abs_gap"] > 0
