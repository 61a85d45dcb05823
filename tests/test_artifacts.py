"""Artifact folders (manifest, verification, corrupt files), the detector registry, and verdicts from one
``predict_proba`` pass (the LLM judge generates once per response)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from refusalkit import artifacts as A
from refusalkit.data.records import Example, Response
from refusalkit.errors import RefusalkitError

RESOURCES = Path(__file__).resolve().parents[1] / "src" / "refusalkit" / "resources"
SHIPPED = ["detect/default", "detect/embedding", "detect/tsetlin", "detect/prompt_chatgpt",
           "detect/prompt_chatgpt_lm", "tokens/smollm2-135m-coconot"]


# --- the artifacts module ----------------------------------------------------------------------------------
def test_write_artifact_writes_manifest_and_verify_names_the_changed_file(tmp_path):
    d = tmp_path / "model"
    A.write_artifact(d, {"meta.json": A.json_bytes({"kind": "x"}), "weights.npz": A.npz_bytes({"a": np.arange(3.0)})},
                     {"name": "m"})
    man = json.loads((d / "manifest.json").read_text())
    assert man["format"] == A.MANIFEST_FORMAT
    assert sorted(man["files"]) == ["card.json", "meta.json", "weights.npz"]
    assert man["files"]["meta.json"] == {"sha256": A.file_sha256(d / "meta.json"), "size": (d / "meta.json").stat().st_size}
    meta, arrays = A.read_meta(d, "x")
    assert meta == {"kind": "x"} and arrays["a"].tolist() == [0, 1, 2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind

    # same size, different content: only the hash can tell
    text = (d / "card.json").read_text()
    (d / "card.json").write_text(text.replace('"m"', '"n"'))
    with pytest.raises(A.ArtifactError, match=r"card\.json: changed or damaged"):
        A.verify(d)
    A.write_card(d, {"name": "n"})  # a card written through the module keeps the folder verifiable
    A.verify(d)
    (d / "weights.npz").unlink()
    with pytest.raises(A.ArtifactError, match=r"weights\.npz: missing"):
        A.read_meta(d, "x")


def test_rewriting_an_artifact_keeps_foreign_files_and_drops_the_old_ones(tmp_path):
    d = tmp_path / "model"
    A.write_artifact(d, {"meta.json": "{}", "old.bin": b"1"})
    (d / "notes.txt").write_text("mine")
    A.write_artifact(d, {"meta.json": '{"v": 2}'})
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "meta.json", "notes.txt"]
    assert list(A.verify(d)) == ["meta.json"]


def test_plain_manifest_form_and_required_manifest(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"a.txt": A.file_sha256(tmp_path / "a.txt")}}))
    assert A.verify(tmp_path) == {"a.txt": {"sha256": A.file_sha256(tmp_path / "a.txt"), "size": None}}
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(A.ArtifactError, match="manifest.json: damaged manifest: invalid JSON"):
        A.verify(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"../x": "0" * 64}}))
    with pytest.raises(A.ArtifactError, match="bad entry"):
        A.verify(tmp_path)
    (tmp_path / "manifest.json").unlink()
    assert A.verify(tmp_path) is None
    with pytest.raises(A.ArtifactError, match="no manifest.json"):
        A.verify(tmp_path, required=True)


@pytest.mark.parametrize("folder", SHIPPED)
def test_every_shipped_artifact_has_a_manifest_that_verifies_fast(folder):
    t0 = time.perf_counter()
    man = A.verify(RESOURCES / folder, required=True)
    secs = time.perf_counter() - t0
    listed = sorted(p.relative_to(RESOURCES / folder).as_posix() for p in (RESOURCES / folder).rglob("*")
                    if p.is_file() and p.name != "manifest.json")
    assert sorted(man) == listed  # every shipped file is covered
    assert secs < 1.0, f"verifying {folder} took {secs:.2f}s"


# --- corrupt detector / predictor / adapter folders ---------------------------------------------------------
def _corrupt(folder: Path, how: str, keep_manifest: bool) -> str:
    """Damage ``folder`` in one way; return the file name the error must mention."""
    meta = folder / "meta.json" if (folder / "meta.json").is_file() else folder / "refusal_tokens.json"
    weights = next((folder / n for n in ("weights.npz", "adapter_model.safetensors") if (folder / n).is_file()), meta)
    if how == "bad_meta":
        meta.write_text('{"kind": "linear", ')
        target = meta.name
    elif how == "random_weights":
        weights.write_bytes(os.urandom(4096))
        target = weights.name
    elif how == "misshaped_weights":
        if weights.suffix == ".npz":
            arrays = A.read_npz(weights)
            weights.write_bytes(A.npz_bytes({k: v[..., :-1] if v.ndim else v for k, v in arrays.items()}))
        else:
            from safetensors.numpy import load_file, save_file
            t = load_file(str(weights))
            save_file({k: v[..., :-1].copy() for k, v in t.items()}, str(weights))
        target = weights.name
    elif how == "missing_file":
        weights.unlink()
        target = weights.name
    elif how == "meta_field_type":
        m = json.loads(meta.read_text())
        key = next(k for k in ("vocabulary", "vocabularies", "rules", "scheme", "C") if k in m)
        m[key] = "x" if key == "C" else 7
        meta.write_text(json.dumps(m))
        target = meta.name
    else:
        raise AssertionError(how)
    if not keep_manifest:
        (folder / "manifest.json").unlink()
    return target


CASES = ["bad_meta", "random_weights", "misshaped_weights", "missing_file", "meta_field_type"]


def _load(what: str, folder: Path):
    if what == "predictor":
        from refusalkit.predict import get_predictor
        return get_predictor(str(folder))
    if what == "adapter":
        from refusalkit.tokens.model import read_adapter_info, resolve_adapter
        return read_adapter_info(resolve_adapter(folder))
    from refusalkit.detect import load_detector
    return load_detector(folder)


@pytest.mark.parametrize("keep_manifest", [True, False], ids=["manifest", "legacy"])
@pytest.mark.parametrize("how", CASES)
@pytest.mark.parametrize("what,src", [("detector", "detect/default"), ("detector", "detect/tsetlin"),
                                      ("detector", "detect/embedding"), ("predictor", "detect/prompt_chatgpt_lm"),
                                      ("adapter", "tokens/smollm2-135m-coconot")])
def test_corrupt_artifact_is_one_clear_error(tmp_path, what, src, how, keep_manifest):
    folder = tmp_path / "m"
    shutil.copytree(RESOURCES / src, folder)
    if how in ("random_weights", "misshaped_weights", "missing_file") and src == "detect/tsetlin":
        pytest.skip("the Tsetlin detector keeps its rules in meta.json (no weights file)")
    if what == "adapter" and not keep_manifest and how == "misshaped_weights":
        pytest.skip("without a manifest, weights of the wrong shape are found when the model loads (CLI test)")
    target = _corrupt(folder, how, keep_manifest)
    with pytest.raises(RefusalkitError) as ei:
        _load(what, folder)
    msg = str(ei.value)
    assert "\n" not in msg and str(folder) in msg
    assert target in msg or (how == "missing_file" and not keep_manifest), msg


@pytest.mark.parametrize("how", ["random_weights", "bad_meta", "misshaped_weights"])
def test_cli_exits_2_naming_the_corrupt_file(tmp_path, how):
    folder = tmp_path / "det"
    shutil.copytree(RESOURCES / "detect" / "default", folder)
    target = _corrupt(folder, how, keep_manifest=how != "misshaped_weights")
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"prompt": "p", "response": "I can't help with that."}) + "\n")
    r = run_cli("detect", str(inp), "-o", str(tmp_path / "out.jsonl"), "-d", str(folder))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and target in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1, r.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["random_weights", "misshaped_weights"])
@pytest.mark.parametrize("keep_manifest", [True, False], ids=["manifest", "legacy"])
def test_cli_damaged_adapter_exits_2(tmp_path, keep_manifest, how):
    folder = tmp_path / "adapter"
    shutil.copytree(RESOURCES / "tokens" / "smollm2-135m-coconot", folder)
    target = _corrupt(folder, how, keep_manifest)
    inp = tmp_path / "p.jsonl"
    inp.write_text(json.dumps({"prompt": "hello"}) + "\n")
    r = run_cli("tokens", "score", str(inp), "--adapter", str(folder), "-o", str(tmp_path / "s.jsonl"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert target in r.stderr or (not keep_manifest and str(folder) in r.stderr), r.stderr
    assert not (tmp_path / "s.jsonl").exists()


# --- the detector registry ---------------------------------------------------------------------------------
def test_registry_is_keyed_by_each_class_kind_and_drives_get_load_train_help(tmp_path):
    from refusalkit.detect import registry as R

    for kind, entry in R.KINDS.items():
        assert entry.cls().kind == kind
    assert R.trainable_kinds() == ("linear", "embedding", "tsetlin")
    for name in R.names():
        assert name in R.detector_help() or f"{name}[" in R.detector_help()
    assert R.get_detector("default").name == "default"
    assert R.get_detector("t2i").kind == "t2i"
    with pytest.raises(RefusalkitError, match="unknown detector 'nope'"):
        R.get_detector("nope")
    with pytest.raises(RefusalkitError, match="takes no ':' argument"):
        R.get_detector("keyword:x")
    with pytest.raises(RefusalkitError, match="cannot train a 'keyword' detector; trainable kinds: linear, embedding, tsetlin"):
        R.make_detector("keyword")
    det = R.make_detector("tsetlin", n_clauses=20, epochs=1, name="mine")
    from refusalkit.detect.synth import write_synthetic
    rows = write_synthetic(n_per_topic=2)
    det.fit([r["response"] for r in rows], [r["label"] for r in rows])
    det.save(tmp_path / "mine", {"name": "mine"})
    back = R.load_detector(tmp_path / "mine")
    assert type(back).__name__ == "TsetlinDetector" and back.card == {"name": "mine"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text('{"kind": "cascade"}')
    with pytest.raises(RefusalkitError, match="unknown detector kind 'cascade'"):
        R.load_detector(tmp_path / "bad")


def test_judge_gives_verdict_records_from_one_predict_proba_pass():
    from refusalkit.detect import get_detector
    from refusalkit.detect.base import labels_from_proba

    det = get_detector("keyword")
    calls = []
    orig = det.predict_proba
    det.predict_proba = lambda X, prompts=None: calls.append(len(X)) or orig(X, prompts)
    rs = [Response(id="a", prompt="p", response="I'm sorry, I can't help with that."),
          Response(id="b", prompt="p", response="Sure: here are three steps.")]
    vs = det.judge(rs)
    assert calls == [2]
    P = orig([r.response for r in rs])
    assert [v.verdict for v in vs] == labels_from_proba(P, det.classes_)
    assert [v.p_refusal for v in vs] == pytest.approx((1 - P[:, 0]).tolist())
    assert [v.id for v in vs] == ["a", "b"] and all(v.detector == "keyword" for v in vs)


class CountingModel:
    """A LanguageModel that answers every prompt with a fixed verdict and counts the prompts it is given."""

    name = "counting"

    def __init__(self, answer: str):
        self.answer, self.prompts = answer, 0

    def generate(self, prompts, config=None):
        from refusalkit.models.base import Generation
        self.prompts += len(prompts)
        return [Generation(text=self.answer, n_tokens=3) for _ in prompts]


def test_llm_judge_generates_once_per_response_and_stores_verdict_records(tmp_path):
    from refusalkit.detect.judge import LLMJudge
    from refusalkit.evaluate import judge as evaluate_judge

    RunStore, judge_pending = evaluate_judge.RunStore, evaluate_judge.judge_pending  # the store judge_pending uses

    exs = [Example(id=f"e{i}", prompt=f"prompt {i}", source="xstest") for i in range(5)]
    model = CountingModel("C) full_refusal")
    det = LLMJudge(model, batch_size=2)
    with RunStore(tmp_path / "run") as store:
        store.init_run("k", exs)
        store.add_responses([Response.from_example(e, "text") for e in exs])
        assert judge_pending(store, det) == 5
        assert model.prompts == 5  # one generation per response (it was two before judge())
        stored = store.verdicts(det.name)
        assert judge_pending(store, det) == 0 and model.prompts == 5
    v = stored["e0"]
    # the stored JSON keeps the format of earlier run stores
    assert list(v) == ["id", "verdict", "p_refusal", "detector", "convention", "convention_label", "judged_at", "pass"]
    assert v["verdict"] == "full_refusal" and v["p_refusal"] == pytest.approx(1 - 0.1 / 3)  # 1 - P(compliance)
    assert v["convention"] == "xstest" and v["convention_label"] == "2_full_refusal"


def test_t2i_judge_reads_the_backend_flag_through_the_same_interface():
    from refusalkit.detect import get_detector

    det = get_detector("t2i")
    vs = det.judge([Response(id="a", prompt="p", response="[image]", meta={"gen_t2i_refusal": True}),
                    Response(id="b", prompt="p", response="[image]", meta={})])
    assert [(v.verdict, v.p_refusal) for v in vs] == [("full_refusal", 1.0), ("full_compliance", 0.0)]
    assert not det.judges_text
    with pytest.raises(RefusalkitError, match="not texts"):
        det.predict_proba(["x"])


def test_damaged_shipped_default_is_an_error_not_a_switch_to_keywords(tmp_path, monkeypatch):
    import refusalkit.detect as D
    from refusalkit.detect import registry as R
    from refusalkit.evaluate.judge import resolve_detector

    root = tmp_path / "resources"
    shutil.copytree(RESOURCES / "detect" / "default", root / "default")
    fake = lambda name: root / R.KINDS[R.ALIASES.get(name, name)].shipped  # noqa: E731
    monkeypatch.setattr(R, "shipped_dir", fake)
    monkeypatch.setattr(D, "shipped_dir", fake)
    assert resolve_detector(None).name == "default"
    (root / "default" / "weights.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(A.ArtifactError, match="weights.npz"):
        resolve_detector(None)
    shutil.rmtree(root / "default")  # an install without the shipped model falls back to keywords
    assert resolve_detector(None).name == "keyword"
