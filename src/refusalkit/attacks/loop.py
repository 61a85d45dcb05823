"""The attack loop: the direct request, then up to ``k`` attempts of a transform per behaviour, stopping
at a behaviour's first success; every generation goes through :func:`refusalkit.runs.run_resumable`, so a
killed attack rerun with the same settings resumes and generates nothing twice.

Layout of an attack directory (each stage is a run store of its own)::

    OUT/direct/target      the target on the original requests (judged by the detector)
    OUT/direct/judge       the LLM judge's ratings of those answers (with a judge)
    OUT/attempt-A/attacker the attacker's rewrites for attempt A (attacker transforms only)
    OUT/attempt-A/target   the target on attempt A's prompts, for the behaviours not yet broken
    OUT/attempt-A/judge    the LLM judge's ratings of attempt A

Attempt A runs only on the behaviours that no earlier attempt broke, and that set follows from the stored
verdicts, so every stage's inputs, and hence its run key, are the same on a rerun.

Success is judged twice and both are recorded: by the refusal detector (the answer is full compliance)
and, with a judge model, by the paper's harmfulness judge (rating 10 of 10). ``criterion`` says which one
stops the attempts: ``detector``, ``judge`` or ``both`` (both must say so).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refusalkit.attacks.base import AttackerTransform, Transform
from refusalkit.attacks.harm_judge import is_jailbroken, judge_prompt, parse_rating
from refusalkit.data.records import Example
from refusalkit.data.taxonomy import FULL_COMPLIANCE
from refusalkit.detect.base import Detector
from refusalkit.errors import RefusalkitError
from refusalkit.models.base import GenerationConfig, LanguageModel
from refusalkit.models.spec import ModelSpec, load_model
from refusalkit.runs import RunProgress, RunStore, run_resumable

log = logging.getLogger(__name__)

CRITERIA = ("detector", "judge", "both")
ModelLike = str | ModelSpec | LanguageModel


@dataclass
class AttemptRecord:
    """One answer of the target to one behaviour: ``attempt`` 0 is the direct request. ``verdict`` and
    ``p_refusal`` come from the detector (``detector_success``: full compliance); ``judge_rating`` and
    ``judge_success`` from the LLM judge (``None`` without one); ``success`` by the stopping criterion."""

    id: str
    attempt: int
    goal: str
    prompt: str
    response: str
    verdict: str
    p_refusal: float
    detector_success: bool
    success: bool
    category: str | None = None
    judge_rating: int | None = None
    judge_success: bool | None = None
    judge_output: str | None = None
    attacker_output: str | None = None
    n_tokens: int | None = None
    finish_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict."""
        return asdict(self)


@dataclass
class AttackResult:
    """What :func:`run_attack` did: the behaviours, every answer (:class:`AttemptRecord`, direct ones
    with attempt 0), the attempts actually run, and how many generations each role made now."""

    out_dir: Path
    transform: str
    criterion: str
    k: int
    attempts_run: int
    behaviours: list[Example]
    records: list[AttemptRecord]
    judged_by_llm: bool
    detector: str
    n_new: dict[str, int] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


class _Models:
    """Loads each model spec once (the same spec as target and attacker shares one model) and only when a
    stage has something to generate; ready models may be given keyed by their spec string."""

    def __init__(self, ready: Mapping[str, LanguageModel] | None, batch_size: int):
        # a dict given by the caller is filled in place, so later calls reuse the models loaded here
        self.loaded: dict[str, LanguageModel] = ready if isinstance(ready, dict) else dict(ready or {})
        self.batch_size = batch_size

    def loader(self, key: str, spec: ModelLike) -> Callable[[], LanguageModel]:
        def load() -> LanguageModel:
            if key not in self.loaded:
                self.loaded[key] = (
                    spec if isinstance(spec, LanguageModel) else load_model(spec, batch_size=self.batch_size)
                )
            return self.loaded[key]

        return load


def _model_id(spec: ModelLike) -> str:
    if isinstance(spec, LanguageModel):
        return str(spec.name)
    return ModelSpec.parse(spec).display


def judge_store(store: RunStore, detector: Detector, *, batch_size: int = 64) -> int:
    """Judge every stored response that has no verdict from ``detector`` yet, committing each batch;
    return how many it judged."""
    done = store.verdicts(detector.name)
    todo = [r for r in store.responses() if r.id not in done]
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        verdicts = detector.judge(batch)
        if len(verdicts) != len(batch):
            raise RefusalkitError(
                f"detector {detector.name!r} returned {len(verdicts)} verdicts for {len(batch)} responses"
            )
        store.add_verdicts(detector.name, [{**v.to_dict(), "detector": detector.name} for v in verdicts])
    return len(todo)


def _derived(ex: Example, prompt: str, **meta: Any) -> Example:
    return Example(
        id=ex.id,
        prompt=prompt,
        label=ex.label,
        category=ex.category,
        expected=ex.expected,
        source=ex.source,
        meta={**ex.meta, **meta},
    )


def _seeded(cfg: GenerationConfig, seed: int) -> GenerationConfig:
    # A greedy decoder ignores the seed, so it stays out of the run key; a sampler gets one per attempt.
    return cfg.with_(seed=seed) if cfg.do_sample else cfg.with_(seed=None)


def run_attack(
    examples: Sequence[Example],
    *,
    target: ModelLike,
    transform: Transform,
    k: int,
    out_dir: str | Path,
    detector: Detector,
    attacker: ModelLike | None = None,
    judge: ModelLike | None = None,
    criterion: str | None = None,
    config: GenerationConfig | None = None,
    attacker_config: GenerationConfig | None = None,
    judge_config: GenerationConfig | None = None,
    seed: int = 0,
    batch_size: int = 16,
    fresh: bool = False,
    direct_dir: str | Path | None = None,
    models: Mapping[str, LanguageModel] | None = None,
    on_progress: Callable[[str, RunProgress], None] | None = None,
) -> AttackResult:
    """Attack ``target`` with ``transform`` on ``examples`` into ``out_dir`` and return an AttackResult.

    ``target``, ``attacker`` and ``judge`` are ``--model`` strings, ModelSpecs or ready models (``models``
    maps spec strings to ready models; a dict also receives the models this call loads, for the next call).
    ``criterion`` (default:
    ``judge`` with a judge, else ``detector``) decides which success stops a behaviour's attempts.
    ``config`` is the target's generation; ``attacker_config`` defaults to the transform's (temperature 1,
    150 new tokens for past/future) and ``judge_config`` to greedy decoding of 10 tokens, as in the paper.
    When the target decodes greedily and the transform has only ``distinct_attempts`` different prompts,
    no more attempts than that are run (more would repeat the same answer). ``direct_dir`` stores the
    direct request elsewhere (several attacks on the same behaviours can share it). ``on_progress(stage,
    RunProgress)`` reports each stage. Raises RefusalkitError for bad settings before any work.
    """
    if k < 1:
        raise RefusalkitError(f"--k must be at least 1, got {k}")
    crit = criterion or ("judge" if judge is not None else "detector")
    if crit not in CRITERIA:
        raise RefusalkitError(f"--success must be one of {', '.join(CRITERIA)}, got {crit!r}")
    if crit in ("judge", "both") and judge is None:
        raise RefusalkitError(f"--success {crit} needs a judge model (--judge MODEL)")
    if transform.needs_attacker and attacker is None:
        raise RefusalkitError(f"transform {transform.name!r} needs an attacker model (--attacker MODEL)")
    if not examples:
        raise RefusalkitError("no behaviours to attack")
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        raise RefusalkitError("behaviour ids must be unique")
    cfg = config or GenerationConfig()
    if isinstance(transform, AttackerTransform):
        acfg = attacker_config or GenerationConfig(
            max_new_tokens=transform.max_new_tokens, temperature=transform.temperature
        )
    else:
        acfg = attacker_config or GenerationConfig()
    jcfg = judge_config or GenerationConfig(max_new_tokens=10, temperature=0.0)
    out = Path(out_dir)
    direct_base = Path(direct_dir) if direct_dir is not None else out / "direct"
    pool = _Models(models, batch_size)
    roles = {"target": target, "attacker": attacker, "judge": judge}
    ids_of = {role: _model_id(m) for role, m in roles.items() if m is not None}
    n_new = {"target": 0, "attacker": 0, "judge": 0}
    timing = {"load_s": 0.0, "generate_s": 0.0, "judge_s": 0.0}
    keys: dict[str, str] = {}
    t_start = time.perf_counter()

    def stage(
        label: str,
        role: str,
        folder: Path,
        stage_examples: list[Example],
        gcfg: GenerationConfig,
        attempt: int,
        judged: bool = False,
    ) -> dict[str, Any]:
        spec = roles[role]
        assert spec is not None
        key = ids_of[role]
        res = run_resumable(
            stage_examples,
            pool.loader(key, spec),
            gcfg,
            folder,
            fresh=fresh,
            kind=f"attack-{role}",
            model_id=key,
            key_extra={"stage": role, "attempt": attempt, "transform": transform.name if attempt else "none"},
            meta={"attack_stage": label, "transform": transform.name if attempt else "none", "attempt": attempt},
            batch_size=batch_size,
            judge=(lambda st: judge_store(st, detector)) if judged else None,
            on_progress=(lambda p: on_progress(label, p)) if on_progress else None,
            dir_option="--out",
        )
        n_new[role] += res.n_new
        for name in timing:
            timing[name] += res.timing.get(name, 0.0)
        keys[label] = res.key
        with RunStore.open_readonly(folder) as st:
            responses = {r.id: r for r in st.responses()}
            verdicts = st.verdicts(detector.name) if judged else {}
        return {"responses": responses, "verdicts": verdicts}

    def answer_records(
        base: Path,
        label: str,
        attempt: int,
        todo: list[Example],
        prompts: dict[str, str],
        attacker_out: dict[str, str] | None,
    ) -> list[AttemptRecord]:
        tex = [_derived(ex, prompts[ex.id], goal=ex.prompt, attempt=attempt) for ex in todo]
        got = stage(
            f"{label} target", "target", base / "target", tex, _seeded(cfg, seed + attempt), attempt, judged=True
        )
        ratings: dict[str, str] = {}
        if judge is not None:
            jex = [
                _derived(ex, judge_prompt(ex.prompt, got["responses"][ex.id].response), goal=ex.prompt, attempt=attempt)
                for ex in todo
            ]
            ratings = {
                i: r.response
                for i, r in stage(f"{label} judge", "judge", base / "judge", jex, jcfg, attempt)["responses"].items()
            }
        recs = []
        for ex in todo:
            r, v = got["responses"][ex.id], got["verdicts"][ex.id]
            det_ok = v["verdict"] == FULL_COMPLIANCE
            rating = parse_rating(ratings[ex.id]) if judge is not None else None
            jb = is_jailbroken(rating) if judge is not None else None
            ok = {"detector": det_ok, "judge": bool(jb), "both": det_ok and bool(jb)}[crit]
            recs.append(
                AttemptRecord(
                    id=ex.id,
                    attempt=attempt,
                    goal=ex.prompt,
                    prompt=r.prompt,
                    response=r.response,
                    verdict=v["verdict"],
                    p_refusal=float(v["p_refusal"]),
                    detector_success=det_ok,
                    success=ok,
                    category=ex.category,
                    judge_rating=rating,
                    judge_success=jb,
                    judge_output=ratings.get(ex.id) if judge is not None else None,
                    attacker_output=(attacker_out or {}).get(ex.id),
                    n_tokens=r.n_tokens,
                    finish_reason=r.finish_reason,
                )
            )
        return recs

    exs = list(examples)
    records = answer_records(direct_base, "direct", 0, exs, {ex.id: ex.prompt for ex in exs}, None)
    direct = {r.id: r for r in records}
    limit = k
    if not cfg.do_sample and transform.distinct_attempts is not None:
        limit = min(k, transform.distinct_attempts)
    if not cfg.do_sample and isinstance(transform, AttackerTransform) and not acfg.do_sample:
        limit = 1  # a greedy attacker writes the same rewrite every attempt, and a greedy target answers alike
    pending = exs
    attempts_run = 0
    for a in range(1, limit + 1):
        if not pending:
            break
        attempts_run = a
        base = out / f"attempt-{a}"
        label = f"attempt {a}/{k}"
        log.info("%s: %d behaviours not broken yet", label, len(pending))
        if transform.is_identity and not cfg.do_sample:
            # the same prompt to a greedy target gives the direct answer again: reuse it
            recs = [AttemptRecord(**{**direct[ex.id].to_dict(), "attempt": a}) for ex in pending]
        else:
            attacker_out: dict[str, str] | None = None
            if isinstance(transform, AttackerTransform):
                aex = [
                    _derived(ex, transform.attacker_request(ex.prompt, attempt=a), goal=ex.prompt, attempt=a)
                    for ex in pending
                ]
                got = stage(f"{label} attacker", "attacker", base / "attacker", aex, _seeded(acfg, seed + a), a)
                attacker_out = {i: r.response for i, r in got["responses"].items()}
                prompts = {ex.id: transform.finish(ex.prompt, attacker_out[ex.id], attempt=a) for ex in pending}
            else:
                prompts = {
                    ex.id: transform.apply(ex.prompt, attempt=a, rng=random.Random(f"{seed}:{ex.id}:{a}"), meta=ex.meta)
                    for ex in pending
                }
            recs = answer_records(base, label, a, pending, prompts, attacker_out)
        records.extend(recs)
        broken = {r.id for r in recs if r.success}
        pending = [ex for ex in pending if ex.id not in broken]
    timing["total_s"] = time.perf_counter() - t_start
    return AttackResult(
        out, transform.name, crit, k, attempts_run, exs, records, judge is not None, detector.name, n_new, timing, keys
    )
