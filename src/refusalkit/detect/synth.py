"""Writes refusalkit's own labelled training responses from hand-written templates (no third-party text).

The templates (``resources/detect/templates_*.json``) hold prompts and answers written for refusalkit and
refusal, redirection and partial-answer phrasings in several model voices (terse, verbose, moralising,
apologetic-but-complying, "as an AI" disclaimers) and five languages. :func:`write_synthetic` combines them
with a fixed seed, so the same call always yields the same rows. Each row has ``prompt``, ``response``,
``label`` (a taxonomy label) and ``source`` (``synth:VOICE``), so validation can hold out a voice at a time.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from typing import Any

from refusalkit.data.taxonomy import FULL_COMPLIANCE, FULL_REFUSAL, PARTIAL_REFUSAL, REDIRECTION

VOICES = ("gpt4", "llama2", "claude", "chatgpt", "terse", "moralise")
_LLAMA_OPEN = [
    "Sure, I'd be happy to help! ",
    "Thank you for reaching out! ",
    "Great question! ",
    "I'm glad you're interested in this topic! ",
    "Of course! Here's what I can tell you. ",
]


def _templates(name: str) -> dict[str, Any]:
    path = resources.files("refusalkit") / "resources" / "detect" / name
    return json.loads(path.read_text(encoding="utf-8"))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _fill(tpl: str, topic: dict[str, Any], answer_short: str = "") -> str:
    harm = topic.get("harm", "it could cause harm")
    return tpl.format(
        act=topic.get("act", "do that"),
        noun=topic.get("noun", "this request"),
        harm=harm,
        Harm_sentence=_cap(harm) + ".",
        Noun=_cap(topic.get("noun", "this")),
        safe_alt=topic.get("safe_alt", "a related, safe topic"),
        Safe_alt=_cap(topic.get("safe_alt", "a related, safe topic")),
        answer_short=answer_short,
        benign_verb=topic.get("benign_verb", "do"),
        benign_noun=topic.get("benign_noun", "this kind of topic"),
    )


def _body(topic: dict[str, Any], rng: random.Random, style: str) -> str:
    ans, steps = topic["answer"], topic.get("steps") or []
    if steps and style in ("gpt4", "llama2") and rng.random() < 0.6:
        lines = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))
        return f"{ans.split('. ')[0]}.\n\n{lines}"
    if style == "terse":
        return ans.split(". ")[0].rstrip(".") + "."
    if style in ("claude", "chatgpt") and rng.random() < 0.5 and steps:
        return ans + " In short: " + " ".join(steps)
    return ans


def _short(topic: dict[str, Any]) -> str:
    return topic["answer"].split(". ")[0].rstrip(".") + "."


def _compliance(t, topic, rng, voice) -> str:
    opener = rng.choice(t["openers_comply"])
    if voice == "llama2" and rng.random() < 0.6:
        opener = rng.choice(_LLAMA_OPEN)
    r = rng.random()
    if r < 0.12:
        opener = rng.choice(t["openers_sympathy"])
    elif r < 0.2 or (voice == "chatgpt" and r < 0.45):
        opener = rng.choice(t["openers_disclaim_comply"])
    closer = rng.choice(t["closers_comply"])
    if voice == "llama2" and rng.random() < 0.4:
        closer = (
            " However, please keep in mind safety and respect for others. Let me know if you have any other questions!"
        )
    return (opener + _body(topic, rng, voice) + closer).strip()


def _refusal(t, topic, rng, voice, benign: bool) -> str:
    if benign:
        tpl = rng.choice(t["refusal"]["overrefuse"] + t["refusal"]["gpt4"][:4] + t["refusal"]["llama2"][3:4])
    else:
        tpl = rng.choice(t["refusal"][voice])
    return _fill(tpl, topic)


def _long_refusal(t, topic, rng, voice) -> tuple[str, str]:
    """Return ``(response, label)``: a refusal that goes on (a friendly opening, the reasons, often safe
    alternatives), so that length and content words are not read as compliance."""
    parts = [rng.choice(t["refusal_preface"])] if rng.random() < 0.5 else []
    parts.append(_fill(rng.choice(t["refusal"][voice] + t["refusal_plain"]), topic))
    parts.append(_fill(rng.choice(t["refusal_explain"]), topic))
    text = " ".join(parts)
    if rng.random() < 0.7:
        return text + _fill(rng.choice(t["refusal_alternatives"]), topic), REDIRECTION
    return text, FULL_REFUSAL


def write_synthetic(seed: int = 0, n_per_topic: int = 10) -> list[dict[str, Any]]:
    """Return the synthetic labelled rows (deterministic for a given ``seed`` and ``n_per_topic``)."""
    rng = random.Random(seed)
    t = _templates("templates_en.json")
    rows: list[dict[str, Any]] = []

    def add(prompt, response, label, voice, kind):
        rows.append(
            {
                "id": f"synth-{len(rows)}",
                "prompt": prompt,
                "response": response,
                "label": label,
                "source": f"synth:{voice}",
                "kind": kind,
            }
        )

    benign, harmful = t["benign_topics"], t["harmful_topics"]
    for topic in benign:
        for _ in range(n_per_topic):
            voice = rng.choice(VOICES)
            prompt = rng.choice(topic["prompts"])
            add(prompt, _compliance(t, topic, rng, voice), FULL_COMPLIANCE, voice, "comply_benign")
        for _ in range(max(1, n_per_topic // 3)):
            voice = rng.choice(VOICES)
            prompt = rng.choice(topic["prompts"])
            add(prompt, _refusal(t, topic, rng, voice, benign=True), FULL_REFUSAL, voice, "overrefuse")
        voice = rng.choice(VOICES)
        pt = rng.choice(t["partial_benign"])
        add(rng.choice(topic["prompts"]), _fill(pt, topic, _short(topic)), PARTIAL_REFUSAL, voice, "partial_benign")
        if rng.random() < 0.4:
            add(rng.choice(topic["prompts"]), rng.choice(t["evasive"]), FULL_REFUSAL, rng.choice(VOICES), "evasive")
        if rng.random() < 0.3:
            ct = rng.choice(t["contradict"])
            add(
                rng.choice(topic["prompts"]),
                _fill(ct, topic, _short(topic)),
                PARTIAL_REFUSAL,
                rng.choice(VOICES),
                "contradict",
            )
    for prompt, ans in t["short_answers"]:
        for _ in range(max(2, n_per_topic // 5)):
            add(
                prompt,
                rng.choice(["", "", "", "Sure! ", "The answer is "]) + ans,
                FULL_COMPLIANCE,
                rng.choice(VOICES),
                "comply_short",
            )
    for topic in harmful:
        for _ in range(max(1, n_per_topic // 5)):
            add(
                rng.choice(topic["prompts"]),
                _fill(rng.choice(t["refusal"]["inability"]), topic),
                FULL_REFUSAL,
                rng.choice(VOICES),
                "inability",
            )
            add(
                rng.choice(topic["prompts"]),
                rng.choice(t["premise_refuse"]),
                FULL_REFUSAL,
                rng.choice(VOICES),
                "premise_refuse",
            )
            add(
                rng.choice(topic["prompts"]),
                _fill(rng.choice(t["redirect_alt"]), topic),
                REDIRECTION,
                rng.choice(VOICES),
                "redirect_alt",
            )
    for topic in harmful:
        crisis = "self-harm" in topic["noun"]
        for _ in range(n_per_topic):
            voice = rng.choice(VOICES)
            prompt = rng.choice(topic["prompts"])
            add(prompt, _refusal(t, topic, rng, voice, benign=False), FULL_REFUSAL, voice, "refuse")
        for _ in range(max(2, n_per_topic // 2)):
            voice = rng.choice(VOICES)
            tpl = rng.choice(t["redirect_crisis"] if crisis else t["redirect"])
            add(rng.choice(topic["prompts"]), _fill(tpl, topic), REDIRECTION, voice, "redirect")
        if topic.get("answer"):
            for _ in range(max(1, n_per_topic // 3)):
                voice = rng.choice(VOICES)
                opener = rng.choice(["", "Sure! ", "Here's how: ", "Certainly. ", "Okay, "])
                add(
                    rng.choice(topic["prompts"]),
                    opener + topic["answer"] + " ...",
                    FULL_COMPLIANCE,
                    voice,
                    "comply_harmful",
                )
            for _ in range(max(1, n_per_topic // 3)):
                voice = rng.choice(VOICES)
                tpl = rng.choice(t["partial"])
                add(
                    rng.choice(topic["prompts"]),
                    _fill(tpl, topic, topic["answer"] + " ..."),
                    PARTIAL_REFUSAL,
                    voice,
                    "partial",
                )
    for topic in harmful:
        for _ in range(max(2, n_per_topic // 2)):
            voice = rng.choice(VOICES)
            resp, label = _long_refusal(t, topic, rng, voice)
            add(rng.choice(topic["prompts"]), resp, label, voice, "refuse_long")
        if topic.get("answer"):
            for _ in range(max(1, n_per_topic // 5)):
                pre = rng.choice(t["refusal_preface"]) + " " if rng.random() < 0.3 else ""
                add(
                    rng.choice(topic["prompts"]),
                    pre + _fill(rng.choice(t["partial_long"]), topic, topic["answer"] + " ..."),
                    PARTIAL_REFUSAL,
                    rng.choice(VOICES),
                    "partial_long",
                )
    for topic in benign:
        if rng.random() < 0.5:
            voice = rng.choice(VOICES)
            resp, _ = _long_refusal(t, topic, rng, voice)
            add(rng.choice(topic["prompts"]), resp, FULL_REFUSAL, voice, "overrefuse_long")
        # Two requests in one, the second harmful: answer the first, decline the second (a partial refusal
        # that opens by complying).
        voice, bad = rng.choice(VOICES), rng.choice(harmful)
        hp = rng.choice(bad["prompts"])
        add(
            f"{rng.choice(topic['prompts'])} Also, {hp[:1].lower()}{hp[1:]}",
            _body(topic, rng, voice) + "\n\n" + _fill(rng.choice(t["partial_combo"]), bad),
            PARTIAL_REFUSAL,
            voice,
            "partial_combo",
        )
    rows += _multilingual(rng, n_per_topic)
    return rows


def _multilingual(rng: random.Random, n_per_topic: int) -> list[dict[str, Any]]:
    m = _templates("templates_multi.json")
    rows = []
    for lang, d in m.items():
        src = f"synth:{lang}"
        for prompt, answer in d["benign"]:
            for _ in range(max(2, n_per_topic // 2)):
                rows.append(
                    {
                        "prompt": prompt,
                        "response": (rng.choice(d["comply_open"]) + answer).strip(),
                        "label": FULL_COMPLIANCE,
                        "source": src,
                        "kind": "comply_benign",
                    }
                )
            rows.append(
                {
                    "prompt": prompt,
                    "response": rng.choice(d["partial"]).format(answer=answer),
                    "label": PARTIAL_REFUSAL,
                    "source": src,
                    "kind": "partial_benign",
                }
            )
        for prompt, act in d["harmful"]:
            for tpl in d["refuse"]:
                rows.append(
                    {
                        "prompt": prompt,
                        "response": tpl.format(act=act),
                        "label": FULL_REFUSAL,
                        "source": src,
                        "kind": "refuse",
                    }
                )
            for tpl in rng.sample(d["refuse"], 3):
                rows.append(
                    {
                        "prompt": prompt,
                        "response": tpl.format(act=act) + rng.choice(d["explain"]),
                        "label": FULL_REFUSAL,
                        "source": src,
                        "kind": "refuse_long",
                    }
                )
            for tpl in d["redirect"]:
                rows.append(
                    {"prompt": prompt, "response": tpl, "label": REDIRECTION, "source": src, "kind": "redirect"}
                )
    for i, r in enumerate(rows):
        r["id"] = f"synth-ml-{i}"
    return rows
