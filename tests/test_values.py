"""CIVICS experiments: statement files (own format and the CIVICS release format), the log-probability and
long-form experiments through the CLI, and multilingual refusal detection on the values check set."""

import json

import pytest

from conftest import run_cli
from refusalkit.errors import InputError
from refusalkit.values.experiments import LETTERS, detector_check, logprob_prompt, longform_prompt
from refusalkit.values.statements import load_statements


def test_mini_set_covers_five_languages_and_topics():
    sts = load_statements()
    assert {s.language for s in sts} == {"en", "de", "fr", "it", "tr"}
    assert len({s.topic for s in sts}) == 5
    for lang in ("en", "de", "fr", "it", "tr"):
        assert sum(s.language == lang for s in sts) == 5
    de = next(s for s in sts if s.language == "de")
    assert "Aussage" in logprob_prompt(de) and "E) Stimme überhaupt nicht zu" in logprob_prompt(de)
    assert de.text in longform_prompt(de) and de.english


def test_reads_civics_release_format(tmp_path):
    f = tmp_path / "civics_dataset.json"
    f.write_text(json.dumps([
        {"ID": 1, "Language": "German", "Topic": "Immigration", "Original Prompt": "Eine Aussage.",
         "English Translation": "A statement.", "Data Producer Organization": "Org", "Type of Organization": "government",
         "Consensus Annotation": ["dignity"]},
        {"ID": 2, "Language": "Turkish", "Topic": "Surrogacy", "Statement": "Bir ifade.",
         "Statement - translated": "A statement.", "Country": "Turkey"},
    ]))
    sts = load_statements(f)
    assert [(s.id, s.language, s.topic) for s in sts] == [("1", "de", "Immigration"), ("2", "tr", "Surrogacy")]
    assert sts[0].english == "A statement." and sts[0].meta["Consensus Annotation"] == ["dignity"]
    assert load_statements(f, languages=["tr"])[0].id == "2"


@pytest.mark.parametrize("row, where", [
    ({"id": "a", "language": "en", "topic": "x"}, "field 'statement'"),
    ({"id": "a", "statement": "s", "language": "Klingon", "topic": "x"}, "field 'language': unsupported"),
    ({"id": "a", "statement": "s", "language": "en"}, "field 'topic': missing"),
])
def test_bad_statement_rows_name_file_line_field(tmp_path, row, where):
    f = tmp_path / "s.jsonl"
    f.write_text('{"id": "ok", "statement": "fine", "language": "en", "topic": "t"}\n' + json.dumps(row) + "\n")
    with pytest.raises(InputError) as ei:
        load_statements(f)
    assert f"{f}:2: {where}" in str(ei.value)


def test_values_cli_both_experiments_on_tiny_model(tiny_model_dir, tmp_path):
    out = tmp_path / "values"
    r = run_cli("values", "--model", str(tiny_model_dir), "--out", str(out), "--max-new-tokens", "6",
                "--n-boot", "200", "--languages", "en,fr,tr", "--detector", "keyword")
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "values.json").read_text())
    assert doc["languages"] == ["en", "fr", "tr"] and doc["n_statements"] == 15
    lp = [json.loads(x) for x in (out / "logprobs.jsonl").read_text().splitlines()]
    assert len(lp) == 15
    for row in lp:
        assert abs(sum(row["p_options"]) - 1) < 1e-4 and 0 <= row["option_mass"] <= 1
        assert row["argmax"] in LETTERS and -2 <= row["agreement"] <= 2
    ref = doc["longform"]["refusals"]
    assert set(ref["language"]) == {"en", "fr", "tr"} and len(ref["topic"]) == 5
    assert sum(v["n"] for v in ref["language_topic"].values()) == 15
    assert set(doc["longform"]["detector_check"]) == {"en", "de", "fr", "it", "tr"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    # rerun resumes: the stored answers are reused
    r2 = run_cli("values", "--model", str(tiny_model_dir), "--out", str(out), "--max-new-tokens", "6",
                 "--n-boot", "200", "--languages", "en,fr,tr", "--detector", "keyword", "--experiments", "longform")
    assert r2.returncode == 0, r2.stderr
    assert len((out / "longform.jsonl").read_text().splitlines()) == 15


def test_multilingual_refusal_detection_holds_up():
    """The detector eval uses by default must recognise refusals and opinions in all five languages."""
    from refusalkit.evaluate.judge import resolve_detector
    det = resolve_detector(None)
    check = detector_check(det)
    assert set(check) == {"en", "de", "fr", "it", "tr"}
    for lang, c in check.items():
        assert c["accuracy"] >= 0.8, (det.name, lang, c)


@pytest.mark.slow
def test_logprob_experiment_on_bundled_model(bundled_dir):
    from refusalkit.models.hf import HFModel
    from refusalkit.values.experiments import logprob_experiment
    sts = load_statements(languages=["en", "de"])
    rows = logprob_experiment(HFModel(bundled_dir), sts)
    # the instruct model follows the lettered format: most next-token mass sits on the option letters
    assert sum(r["option_mass"] for r in rows) / len(rows) > 0.3
