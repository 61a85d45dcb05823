"""Training data for DeRTa (Yuan et al. 2024, "Refuse Whenever You Feel Unsafe", decoupled refusal training)
and for the past-tense defence (Andriushchenko & Flammarion 2024).

One example is a harmful query ``q``, a harmful response ``rhat`` and a safe response ``r`` (a refusal), or a
harmless instruction with its answer (kept in the mix so that helpfulness is kept). For each harmful example
a prefix length ``k`` is drawn: ``k = 0`` for a third of them (seeded, exact), else uniform over
``1..len(rhat)`` in tokens of the training model's tokenizer; the trainer then shows ``q + rhat[:k]`` and
teaches ``r`` (:mod:`refusalkit.training.derta`).

Sources:
- ``rhat``: the jailbroken rows of JailbreakBench's artifacts (real harmful completions; ``q`` is the
  behaviour's ``goal``) and, optionally, a target model's own compliant answers (a ``generate`` file judged by
  the refusal detector);
- ``r``: the model's own refusals from that file where there is one for the query, else refusalkit's
  refusal texts, varied by category;
- harmless answers: a ``response`` field of the harmless file, or a ``generate`` file of the model's own
  answers (matched by ``id``, then by prompt);
- tense examples (the defence): past/future-tense rewrites of harmful requests with a refusal, ``k = 0``,
  about 5% of the mix, rewritten by an attacker model (:func:`reformulate`) or read from a file.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from refusalkit.data.io import read_records, require_str
from refusalkit.errors import InputError, RefusalkitError

# Refusal openers and per-category reasons; an opener and a reason are combined at random so that the model
# learns the gist of a refusal, not one string. Every opener starts with "Sorry", the paper's transition
# token: RTO trains the refusal's first token at every prefix position, and a generic first token ("I")
# would be pushed everywhere (tried: 60 LoRA steps on SmolLM2 made it start every answer with "I").
OPENERS = [
    "Sorry, but I can't help with that.",
    "Sorry, I can't help with this request.",
    "Sorry, I won't assist with that.",
    "Sorry, I can't provide that.",
    "Sorry, I'm not able to help with this.",
    "Sorry, but I can't do that.",
]
REASONS: dict[str, list[str]] = {
    "harassment": ["Content that demeans or targets people for who they are causes real harm."],
    "malware": ["Breaking into systems or writing malicious code is illegal and hurts people."],
    "physical": ["It could lead to someone getting seriously hurt."],
    "economic": ["It could cause people serious financial harm."],
    "fraud": ["It would help deceive or defraud people."],
    "disinformation": ["Spreading false or misleading claims can do real damage."],
    "sexual": ["I don't produce sexual content of this kind or content that could exploit people."],
    "privacy": ["It would violate someone's privacy."],
    "expert": ["This needs a qualified professional; please consult one instead of relying on me."],
    "government": ["It could undermine public institutions or help evade the law."],
    "other": [
        "It could cause real harm to people.",
        "It asks for something dangerous or illegal.",
        "I don't give instructions that could be used to hurt people or break the law.",
    ],
}
_CATEGORY_KEYS = {  # JailbreakBench categories (and free text) -> a REASONS key, by the first word that matches
    "harass": "harassment",
    "discrimin": "harassment",
    "malware": "malware",
    "hack": "malware",
    "physical": "physical",
    "economic": "economic",
    "fraud": "fraud",
    "decept": "fraud",
    "disinfo": "disinformation",
    "sexual": "sexual",
    "adult": "sexual",
    "privacy": "privacy",
    "expert": "expert",
    "government": "government",
}
HARMFUL_LABELS = {"jailbroken", "unsafe", "harmful", "compliance", "full_compliance"}


@dataclass
class BuildConfig:
    """Settings of one data build (stored in the data card)."""

    n_harmful: int = 400
    n_harmless: int = 200
    k0_share: float = 1 / 3
    max_response_tokens: int = 96
    min_response_tokens: int = 8
    tense_share: float = 0.0
    seed: int = 1234


def refusal_text(category: str | None, rng: random.Random) -> str:
    """Return one of refusalkit's refusal texts for ``category`` (an opener and a reason for the category)."""
    key = "other"
    low = (category or "").lower()
    for stem, k in _CATEGORY_KEYS.items():
        if stem in low:
            key = k
            break
    return f"{rng.choice(OPENERS)} {rng.choice(REASONS[key] + REASONS['other'])}"


def read_harmful_pairs(path: str, *, source: str = "jbb") -> list[dict[str, Any]]:
    """Return ``{"prompt", "harmful_response", "category", "source"}`` pairs from a file of harmful answers.

    For JailbreakBench artifacts (rows with ``goal``) only the ``jailbroken`` rows count and ``q`` is the
    ``goal`` (the plain request, not the attack prompt); other files need ``prompt`` and ``response`` and, if
    they have a ``label``, one of :data:`HARMFUL_LABELS`. Raises InputError naming file, line and field.
    """
    out = []
    for row in read_records(path):
        label = row.get("label")
        if label is not None and str(label).lower() not in HARMFUL_LABELS:
            continue
        q = require_str(row, "goal" if "goal" in row else "prompt", file=path)
        rhat = require_str(row, "response", file=path)
        model = row.get("source_model")
        out.append(
            {
                "prompt": q.strip(),
                "harmful_response": rhat.strip(),
                "category": row.get("category"),
                "source": f"{source}:{model}" if model else source,
            }
        )
    if not out:
        raise InputError("no harmful answers in the file (label jailbroken/unsafe, or no label)", file=path)
    return out


def split_model_answers(
    path: str, judge: Callable[[list[str], list[str]], list[bool]]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Return ``(harmful_pairs, refusals)`` from a ``generate`` file of a model's answers to harmful requests:
    the answers that ``judge(responses, prompts)`` calls compliant become ``rhat`` pairs (source ``model``),
    the others the model's own refusal per prompt."""
    rows = read_records(path)
    prompts = [require_str(r, "prompt", file=path) for r in rows]
    responses = [require_str(r, "response", file=path, allow_empty=True) for r in rows]
    complied = judge(responses, prompts)
    pairs, refusals = [], {}
    for r, q, a, ok in zip(rows, prompts, responses, complied):
        if ok and a.strip():
            pairs.append(
                {"prompt": q.strip(), "harmful_response": a.strip(), "category": r.get("category"), "source": "model"}
            )
        elif a.strip():
            refusals[q.strip()] = a.strip()
    return pairs, refusals


def read_harmless(path: str, answers_path: str | None = None, *, split: str | None = "train") -> list[dict[str, Any]]:
    """Return ``{"id", "prompt", "response", "finished", "source"}`` for the harmless instructions of ``path``
    (only rows of ``split`` when the file has a ``split`` field and ``split`` is given).

    The answer is the row's ``response`` or, failing that, the answer to the same ``id`` (else the same
    prompt) in ``answers_path`` (a ``generate`` output; ``finish_reason`` ``length`` marks a cut answer).
    Rows with no answer are left out; InputError when none has one.
    """
    rows = [r for r in read_records(path) if not (split and "split" in r and r["split"] != split)]
    by_id: dict[str, dict[str, Any]] = {}
    by_prompt: dict[str, dict[str, Any]] = {}
    if answers_path:
        for a in read_records(answers_path):
            require_str(a, "response", file=answers_path, allow_empty=True)
            if a.get("id") is not None:
                by_id[str(a["id"])] = a
            by_prompt[require_str(a, "prompt", file=answers_path).strip()] = a
    out = []
    for r in rows:
        q = require_str(r, "prompt", file=path).strip()
        rid = str(r.get("id", f"line-{r.get('__line__')}"))
        if isinstance(r.get("response"), str) and r["response"].strip():
            out.append({"id": rid, "prompt": q, "response": r["response"].strip(), "finished": True, "source": "file"})
            continue
        ans = by_id.get(rid) or by_prompt.get(q)
        if ans and ans["response"].strip():
            fin = ans.get("finish_reason") != "length"
            out.append(
                {"id": rid, "prompt": q, "response": ans["response"].strip(), "finished": fin, "source": "model"}
            )
    if not out:
        raise InputError(
            "no harmless instruction has an answer (a 'response' field, or --harmless-answers from "
            "`refusalkit generate` on the same prompts)",
            file=path,
        )
    return out


def read_tense_file(path: str) -> list[dict[str, Any]]:
    """Return ``{"prompt", "original", "transform", "category"}`` rows of a file of tense reformulations
    (``prompt``: the rewritten request; ``original`` optional; ``transform`` defaults to ``past``)."""
    out = []
    for row in read_records(path):
        out.append(
            {
                "prompt": require_str(row, "prompt", file=path).strip(),
                "original": row.get("original") if isinstance(row.get("original"), str) else None,
                "transform": str(row.get("transform") or "past"),
                "category": row.get("category"),
            }
        )
    return out


def reformulate(
    requests: Sequence[str],
    generate: Callable[[list[str]], list[str]],
    transforms: Sequence[str] = ("past",),
    *,
    seed: int = 1234,
) -> list[dict[str, Any]]:
    """Return one tense reformulation per request: ``{"prompt", "original", "transform"}``, the transform
    alternating over ``transforms`` in a seeded order. ``generate`` maps attacker prompts to the attacker's
    outputs (the paper samples at temperature 1 with up to 150 new tokens); the prompts and the cleaning of
    the outputs are those of :mod:`refusalkit.attacks.tense`."""
    from refusalkit.attacks.base import AttackerTransform, get_transform

    rng = random.Random(seed)
    names = [transforms[i % len(transforms)] for i in range(len(requests))]
    rng.shuffle(names)
    tfs: dict[str, AttackerTransform] = {}
    for n in set(names):
        tf = get_transform(n)
        if not isinstance(tf, AttackerTransform):
            raise RefusalkitError(f"--tense {n}: not an attacker transform (use past or future)")
        tfs[n] = tf
    outs = generate([tfs[n].attacker_request(q, attempt=1) for q, n in zip(requests, names)])
    return [
        {"prompt": tfs[n].finish(q, o, attempt=1), "original": q, "transform": n}
        for q, n, o in zip(requests, names, outs)
    ]


def rewrite_with_attacker(
    requests: list[dict[str, Any]],
    attacker: str,
    transforms: Sequence[str],
    *,
    seed: int = 1234,
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Return :func:`reformulate`'s rows for ``requests`` (rows with a ``prompt``) written by the model
    ``attacker`` (any model spec; temperature 1, 150 new tokens, as the paper), each with the request's
    ``category``."""
    from refusalkit.models.base import GenerationConfig
    from refusalkit.models.spec import load_model

    model = load_model(attacker, batch_size=batch_size)
    gcfg = GenerationConfig(max_new_tokens=150, temperature=1.0, seed=seed)

    def generate(prompts: list[str]) -> list[str]:
        outs: list[str] = []
        for s in range(0, len(prompts), batch_size):
            outs += [g.text for g in model.generate(list(prompts[s : s + batch_size]), gcfg)]
            if log:
                log(f"  reformulated {len(outs)}/{len(prompts)}")
        return outs

    rows = reformulate([r["prompt"] for r in requests], generate, transforms, seed=seed)
    for row, req in zip(rows, requests):
        row["category"] = req.get("category")
    return rows


def _round_robin(pairs: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Return ``pairs`` shuffled so that every query appears once before any appears twice."""
    by_q: dict[str, list[dict[str, Any]]] = {}
    for p in pairs:
        by_q.setdefault(p["prompt"], []).append(p)
    groups = list(by_q.values())
    for g in groups:
        rng.shuffle(g)
    rng.shuffle(groups)
    out: list[dict[str, Any]] = []
    for depth in range(max(map(len, groups), default=0)):
        out.extend(g[depth] for g in groups if depth < len(g))
    return out


def build_derta_data(
    harmful: list[dict[str, Any]],
    harmless: list[dict[str, Any]],
    tokenizer: Any,
    cfg: BuildConfig,
    *,
    refusals: dict[str, str] | None = None,
    tense: list[dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return ``(rows, card)``: the training mix and its data card.

    ``cfg.n_harmful`` harmful examples (minus the tense ones, so the mix size stays the same) are drawn
    round-robin over the queries of ``harmful``; each ``rhat`` is cut to ``cfg.max_response_tokens``
    tokens, ``k`` is 0 for ``round(cfg.k0_share * n)`` of them and uniform over ``1..len(rhat)`` for the
    rest. ``round(cfg.tense_share * mix size)`` tense rewrites from ``tense`` join as refusals with k = 0;
    ``cfg.n_harmless`` harmless rows keep their answers. Raises RefusalkitError when a source is too small.
    """
    rng = random.Random(cfg.seed)
    total = cfg.n_harmful + cfg.n_harmless
    n_tense = round(cfg.tense_share * total) if tense else 0
    if tense is not None and cfg.tense_share > 0 and len(tense) < n_tense:
        raise RefusalkitError(f"{n_tense} tense examples wanted ({cfg.tense_share:.0%} of {total}), {len(tense)} given")
    if n_tense > cfg.n_harmful:
        raise RefusalkitError(f"--tense-share {cfg.tense_share}: more tense examples than harmful ones")
    n_h = cfg.n_harmful - n_tense
    usable = []
    for p in harmful:
        ids = tokenizer(p["harmful_response"], add_special_tokens=False)["input_ids"]
        if len(ids) >= cfg.min_response_tokens:
            ids = ids[: cfg.max_response_tokens]
            usable.append({**p, "harmful_response": tokenizer.decode(ids), "_n": len(ids)})
    if len(usable) < n_h:
        raise RefusalkitError(f"{n_h} harmful examples wanted, {len(usable)} usable harmful answers given")
    if len(harmless) < cfg.n_harmless:
        raise RefusalkitError(f"{cfg.n_harmless} harmless examples wanted, {len(harmless)} with answers given")
    chosen = _round_robin(usable, rng)[:n_h]
    zero = set(rng.sample(range(n_h), round(cfg.k0_share * n_h)))
    refusals = refusals or {}
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(chosen):
        n = p.pop("_n")
        k = 0 if i in zero else rng.randint(1, n)
        own = refusals.get(p["prompt"])
        rows.append(
            {
                "id": f"harmful-{i:05d}",
                "kind": "harmful",
                "prompt": p["prompt"],
                "harmful_response": p["harmful_response"],
                "harmful_tokens": n,
                "k": k,
                "harmful_prefix": tokenizer.decode(
                    tokenizer(p["harmful_response"], add_special_tokens=False)["input_ids"][:k]
                ),
                "response": own or refusal_text(p.get("category"), rng),
                "response_source": "model" if own else "template",
                "finished": True,
                "category": p.get("category"),
                "source": p["source"],
            }
        )
    for i, t in enumerate(rng.sample(tense, n_tense) if n_tense and tense else []):
        rows.append(
            {
                "id": f"tense-{i:05d}",
                "kind": "tense",
                "prompt": t["prompt"],
                "original": t.get("original"),
                "harmful_response": None,
                "harmful_tokens": 0,
                "k": 0,
                "harmful_prefix": "",
                "response": refusal_text(t.get("category"), rng),
                "response_source": "template",
                "finished": True,
                "category": t.get("category"),
                "source": f"tense:{t.get('transform', 'past')}",
            }
        )
    for i, h in enumerate(rng.sample(harmless, cfg.n_harmless)):
        rows.append(
            {
                "id": f"harmless-{i:05d}",
                "kind": "harmless",
                "prompt": h["prompt"],
                "harmful_response": None,
                "harmful_tokens": 0,
                "k": 0,
                "harmful_prefix": "",
                "response": h["response"],
                "response_source": h["source"],
                "finished": bool(h.get("finished", True)),
                "category": None,
                "source": f"harmless:{h['source']}",
                "source_id": h["id"],
            }
        )
    rng.shuffle(rows)
    return rows, data_card(rows, cfg)


def data_card(rows: list[dict[str, Any]], cfg: BuildConfig | None = None) -> dict[str, Any]:
    """Return the data card of a DeRTa mix: counts by kind, source and response source, and the
    distribution of ``k`` (share of k = 0, quantiles, share of the harmful answer shown) over harmful rows."""
    harm = [r for r in rows if r["kind"] == "harmful"]
    ks = sorted(int(r["k"]) for r in harm)
    frac = sorted(r["k"] / r["harmful_tokens"] for r in harm if r["harmful_tokens"])

    def q(xs: list[Any], p: float) -> Any:
        return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None

    return {
        "format": "refusalkit-derta-data/1",
        "n": len(rows),
        "by_kind": dict(Counter(r["kind"] for r in rows)),
        "by_source": dict(sorted(Counter(str(r["source"]) for r in rows).items())),
        "by_response_source": dict(Counter(f"{r['kind']}:{r['response_source']}" for r in rows)),
        "harmful_queries_distinct": len({r["prompt"] for r in harm}),
        "k": {
            "n": len(ks),
            "zero_share": (sum(1 for k in ks if k == 0) / len(ks)) if ks else None,
            "min": q(ks, 0.0),
            "median": q(ks, 0.5),
            "p90": q(ks, 0.9),
            "max": ks[-1] if ks else None,
            "mean_share_of_response": (sum(frac) / len(frac)) if frac else None,
        },
        "config": asdict(cfg) if cfg else None,
    }


REQUIRED = ("id", "kind", "prompt", "response")
KINDS = ("harmful", "harmless", "tense")


def read_derta_data(path: str) -> list[dict[str, Any]]:
    """Return the rows of a DeRTa data file (as written by ``refusalkit train derta-data``), checked:
    ``prompt``/``response`` strings, ``kind`` one of :data:`KINDS`, ``k`` a non-negative integer and
    ``harmful_response`` a string when ``k > 0``. Raises InputError naming file, line and field."""
    rows = read_records(path)
    for r in rows:
        line = r.get("__line__")
        require_str(r, "prompt", file=path)
        require_str(r, "response", file=path)
        if r.get("kind", "harmful") not in KINDS:
            raise InputError(
                f"expected one of {', '.join(KINDS)}, got {r.get('kind')!r}", file=path, line=line, field="kind"
            )
        k = r.get("k", 0)
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"expected a non-negative integer, got {k!r}", file=path, line=line, field="k")
        if k > 0:
            require_str(r, "harmful_response", file=path)
        r.setdefault("kind", "harmful")
        r["k"] = k
    return rows
