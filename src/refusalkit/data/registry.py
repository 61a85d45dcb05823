"""The benchmark registry: public ids, field mappings and label conventions, plus offline local copies.

``load_benchmark(name)`` reads a benchmark from (in order) an explicit local file, the copy in a data
directory (``$REFUSALKIT_DATA`` or ``--data-dir``), or the Hugging Face hub through ``datasets``. Offline, a
hub id that is not cached fails fast with a message saying how to pass a local file instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusalkit.data.io import read_records, rows_to_examples
from refusalkit.data.records import Example
from refusalkit.errors import InputError, UnknownBenchmarkError


def _expect_unsafe(label: str | None) -> str | None:
    if label is None:
        return None
    low = str(label).lower()
    if low in {"unsafe", "harmful", "toxic", "should_not_comply", "refusal", "1", "true"}:
        return "refuse"
    if low in {"safe", "benign", "harmless", "should_comply", "compliance", "0", "false"}:
        return "comply"
    return None


@dataclass(frozen=True)
class Benchmark:
    """One registered benchmark.

    ``columns`` maps each record field to candidate source column names (first present wins);
    ``label``/``expected`` fix a value for every row where the source has none; ``expected_from``
    derives the expected behaviour from the row's label.
    """

    name: str
    description: str
    hf_id: str | None
    hf_config: str | None = None
    hf_split: str = "test"
    hf_data_files: str | None = None
    local_file: str | None = None
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    label: str | None = None
    expected: str | None = None
    expected_from: Callable[[str | None], str | None] = _expect_unsafe
    convention: str = "binary"
    citation: str = ""
    kind: str = "text"

    def map_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """Return ``row`` renamed to record fields, with label and expected behaviour filled in."""
        out = dict(row)
        for target, candidates in self.columns.items():
            for c in candidates:
                if c in row and row[c] not in (None, ""):
                    out[target] = row[c]
                    break
        if self.label is not None and out.get("label") in (None, ""):
            out["label"] = self.label
        if out.get("expected") in (None, ""):
            out["expected"] = self.expected or self.expected_from(
                None if out.get("label") is None else str(out.get("label"))
            )
        out.setdefault("source", self.name)
        return out


_P = ("prompt",)
REGISTRY: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "xstest",
            "XSTest: 250 safe prompts that sound unsafe + 200 unsafe contrasts (over-refusal).",
            "walledai/XSTest",
            hf_split="test",
            local_file="xstest_prompts.jsonl",
            columns={"prompt": _P, "category": ("category", "type")},
            convention="xstest",
            citation="Röttger et al. 2024, XSTest, CC-BY-4.0",
        ),
        Benchmark(
            "coconot",
            "CoCoNot original: requests a model should not comply with (5 categories).",
            "allenai/coconot",
            hf_config="original",
            hf_split="test",
            local_file="coconot_prompts.jsonl",
            columns={"prompt": _P, "category": ("category",)},
            label="should_not_comply",
            convention="coconot",
            citation="Brahman et al. 2024, CoCoNot, MIT",
        ),
        Benchmark(
            "coconot-contrast",
            "CoCoNot contrast: benign look-alikes a model should comply with.",
            "allenai/coconot",
            hf_config="contrast",
            hf_split="test",
            local_file="coconot_prompts.jsonl",
            columns={"prompt": _P, "category": ("category",)},
            label="should_comply",
            convention="coconot",
            citation="Brahman et al. 2024, CoCoNot, MIT",
        ),
        Benchmark(
            "jbb",
            "JailbreakBench: 100 harmful behaviours in 10 categories.",
            "JailbreakBench/JBB-Behaviors",
            hf_config="behaviors",
            hf_split="harmful",
            local_file="jbb_harmful_behaviors.jsonl",
            columns={
                "prompt": ("prompt", "Goal"),
                "category": ("category", "Category"),
                "id": ("id", "Index"),
                "target": ("target", "Target"),
            },
            label="unsafe",
            citation="Chao et al. 2024, JailbreakBench, MIT",
        ),
        Benchmark(
            "jbb-benign",
            "JailbreakBench: 100 benign behaviours matched to the harmful ones.",
            "JailbreakBench/JBB-Behaviors",
            hf_config="behaviors",
            hf_split="benign",
            columns={"prompt": ("prompt", "Goal"), "category": ("category", "Category"), "id": ("id", "Index")},
            label="safe",
            citation="Chao et al. 2024, JailbreakBench, MIT",
        ),
        Benchmark(
            "or-bench-hard",
            "OR-Bench hard-1k: seemingly toxic but benign prompts (over-refusal).",
            "bench-llm/or-bench",
            hf_config="or-bench-hard-1k",
            hf_split="train",
            columns={"prompt": _P, "category": ("category",)},
            label="safe",
            convention="orbench",
            citation="Cui et al. 2024, OR-Bench, CC-BY-4.0",
        ),
        Benchmark(
            "or-bench-toxic",
            "OR-Bench toxic: truly toxic prompts (safety).",
            "bench-llm/or-bench",
            hf_config="or-bench-toxic",
            hf_split="train",
            columns={"prompt": _P, "category": ("category",)},
            label="unsafe",
            convention="orbench",
            citation="Cui et al. 2024, OR-Bench, CC-BY-4.0",
        ),
        Benchmark(
            "harmbench",
            "HarmBench standard behaviours.",
            "walledai/HarmBench",
            hf_config="standard",
            hf_split="train",
            columns={"prompt": ("prompt", "Behavior"), "category": ("category", "SemanticCategory")},
            label="unsafe",
            citation="Mazeika et al. 2024, HarmBench, MIT",
        ),
        Benchmark(
            "strongreject",
            "StrongREJECT forbidden prompts.",
            "walledai/StrongREJECT",
            hf_split="train",
            columns={"prompt": ("prompt", "forbidden_prompt"), "category": ("category",)},
            label="unsafe",
            citation="Souly et al. 2024, StrongREJECT, MIT",
        ),
        Benchmark(
            "chatgpt-refusals",
            "Reuter & Schulze 2023: hand-labelled ChatGPT responses (refusal or not).",
            None,
            local_file="chatgpt_refusals.jsonl",
            columns={"prompt": _P, "response": ("response",), "category": ("category",)},
            expected_from=lambda _l: None,
            convention="reuter_schulze",
            citation="Reuter & Schulze 2023, I'm Afraid I Can't Do That, MIT",
        ),
        Benchmark(
            "civics",
            "CIVICS: value-laden statements in 5 languages on 5 topics.",
            "CIVICS-dataset/CIVICS",
            hf_split="train",
            columns={
                "prompt": ("prompt", "Statement"),
                "category": ("category", "Topic"),
                "language": ("language", "Language"),
            },
            expected="comply",
            citation="Pistilli et al. 2024, CIVICS, CC-BY-4.0",
        ),
        Benchmark(
            "overt",
            "OVERT-mini: benign-but-seemingly-harmful text-to-image prompts (9 categories).",
            "yixiaoh/OVERT",
            hf_split="default",
            hf_data_files="data/OVERT_mini.csv",
            columns={"prompt": ("prompt", "image_prompt"), "category": ("category",)},
            label="safe",
            citation="OVERT 2025, Apache-2.0",
            kind="text-to-image",
        ),
        Benchmark(
            "overt-unsafe",
            "OVERT-unsafe: harmful text-to-image prompts (9 categories).",
            "yixiaoh/OVERT",
            hf_split="default",
            hf_data_files="data/OVERT_unsafe.csv",
            columns={"prompt": ("prompt", "image_prompt"), "category": ("category",)},
            label="unsafe",
            citation="OVERT 2025, Apache-2.0",
            kind="text-to-image",
        ),
    ]
}


def get_benchmark(name: str) -> Benchmark:
    """Return the registered benchmark ``name`` or raise UnknownBenchmarkError listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownBenchmarkError(
            f"unknown benchmark {name!r}; known: {', '.join(sorted(REGISTRY))} (or pass a local .jsonl/.csv file)"
        ) from None


def data_root() -> Path:
    """Return the directory of local benchmark and training-data copies: ``$REFUSALKIT_DATA``, else the
    ``shared/data`` folder beside the working directory or beside the repository checkout, else
    ``../shared/data`` (which may not exist; readers then name the missing file). Every default data path
    in refusalkit starts here."""
    env = os.environ.get("REFUSALKIT_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path("..") / "shared" / "data"


def _filter_local(bench: Benchmark, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The shared CoCoNot copy holds both halves; the registry splits them by label.
    if bench.name in ("coconot", "coconot-contrast"):
        return [r for r in rows if r.get("label", bench.label) == bench.label]
    return rows


def _load_hub(bench: Benchmark) -> list[dict[str, Any]]:
    if bench.hf_id is None:
        raise InputError(
            f"benchmark {bench.name!r} has no hub copy; pass its file with --data FILE "
            "or set REFUSALKIT_DATA to a directory holding " + str(bench.local_file)
        )
    try:
        import datasets  # local import: loading a hub dataset is rare and datasets is slow to import

        kw: dict[str, Any] = {"split": bench.hf_split}
        if bench.hf_data_files:
            ds = datasets.load_dataset(bench.hf_id, data_files={bench.hf_split: bench.hf_data_files}, **kw)
        else:
            ds = datasets.load_dataset(bench.hf_id, bench.hf_config, **kw)
    except Exception as e:  # noqa: BLE001 — any hub failure gets the same actionable message
        raise InputError(
            f"could not load benchmark {bench.name!r} from the hub id {bench.hf_id!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). Offline, pass a local "
            f"copy instead: --data FILE.jsonl|.csv, or set REFUSALKIT_DATA to a directory holding "
            f"{bench.local_file or bench.name + '.jsonl'}"
        ) from None
    rows = []
    for i, r in enumerate(ds, start=1):
        r = dict(r)
        r["__line__"] = i
        rows.append(r)
    return rows


def load_benchmark(
    name: str,
    *,
    data: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Return a benchmark's prompts as Examples with ``expected`` set from its label convention.

    ``data`` is an explicit local file in the source's or refusalkit's format; otherwise the local copy in
    ``data_dir`` (default :func:`data_root`) is used, then the hub.
    """
    bench = get_benchmark(name)
    path: Path | None = Path(data) if data else None
    if path is None and bench.local_file:
        d = Path(data_dir) if data_dir else data_root()
        if (d / bench.local_file).is_file():
            path = d / bench.local_file
    if path is not None:
        rows = _filter_local(bench, read_records(path))
        file = str(path)
    else:
        rows = _load_hub(bench)
        file = f"hf:{bench.hf_id}"
    mapped = [bench.map_row(r) for r in rows]
    ex = rows_to_examples(mapped, file=file, source=bench.name)
    return ex[:limit] if limit else ex


def resolve_prompts(spec: str, *, limit: int | None = None) -> list[Example]:
    """Return Examples for ``spec``: a local JSONL/CSV file, or a registered benchmark name."""
    p = Path(spec)
    if p.exists() or spec.endswith((".jsonl", ".json", ".csv")):
        from refusalkit.data.io import read_examples

        return read_examples(p, limit=limit)
    return load_benchmark(spec, limit=limit)
