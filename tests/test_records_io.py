"""Records round-trip through JSONL; bad input files get one clear message naming file, line and field."""

import json

import pytest

from refusalkit.data.io import read_examples, read_jsonl, write_jsonl_atomic
from refusalkit.data.records import Example, Response, Verdict
from refusalkit.errors import InputError


def test_records_round_trip(tmp_path):
    ex = Example(id="a", prompt="p", label="unsafe", category="c", expected="refuse", meta={"focus": "kill"})
    r = Response.from_example(ex, "text", model="m", n_tokens=3)
    v = Verdict(id="a", verdict="full_refusal", p_refusal=0.9, detector="keyword", meta={"x": [1, 2]})
    path = tmp_path / "r.jsonl"
    write_jsonl_atomic(path, [ex.to_dict(), r.to_dict(), v.to_dict()])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0]["focus"] == "kill"  # extras are written flat
    assert Example.from_dict(rows[0]) == ex
    assert Response.from_dict(rows[1]) == r
    assert Verdict.from_dict(rows[2]) == v


def _write(tmp_path, content: bytes, name="in.jsonl"):
    p = tmp_path / name
    p.write_bytes(content)
    return p


@pytest.mark.parametrize("content, line, field, words", [
    (b'{"prompt": "ok"}\n{"prompt": "broken"\n', 2, None, "malformed JSON"),
    (b'{"prompt": "ok"}\n{"id": "x"}\n', 2, "prompt", "missing"),
    (b'{"prompt": "ok"}\n{"prompt": 5}\n', 2, "prompt", "expected a string"),
    (b'{"prompt": "ok"}\n{"prompt": "  "}\n', 2, "prompt", "empty"),
    (b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', 2, None, "UTF-8"),
    (b'{"prompt": "ok"}\n[1, 2]\n', 2, None, "JSON object"),
    (b'{"id": "1", "prompt": "a"}\n{"id": "1", "prompt": "b"}\n', 2, "id", "duplicate"),
    (b'', None, None, "no records"),
    (b'\n\n', None, None, "no records"),
])
def test_bad_input_names_file_line_field(tmp_path, content, line, field, words):
    p = _write(tmp_path, content)
    with pytest.raises(InputError) as ei:
        read_examples(p)
    e = ei.value
    assert e.file == str(p) and e.line == line and e.field == field
    assert words in str(e)
    assert str(p) in str(e)


def test_csv_and_default_ids(tmp_path):
    p = _write(tmp_path, "prompt,category\nhello,a\n\"multi, comma\",b\n".encode(), "in.csv")
    ex = read_examples(p)
    assert [e.prompt for e in ex] == ["hello", "multi, comma"]
    assert [e.id for e in ex] == ["line-2", "line-3"]
    assert ex[0].source == "in"


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "out.jsonl"
    write_jsonl_atomic(p, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(p, rows())
    assert read_jsonl(p)[0]["a"] == 1
    assert [x.name for x in tmp_path.iterdir()] == ["out.jsonl"]
