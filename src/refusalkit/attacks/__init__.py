"""Reformulation attacks: transforms that rewrite a harmful request (past/future tense by an attacker
model; base64, leetspeak, Caesar, prefix injection and refusal suppression without one), a registry that
takes a user's transform from one file, and the resumable attack loop with attack success at k.

Uses ``data``, ``models``, ``runs`` and ``detect``; the metrics and report live in
``refusalkit.evaluate.attack_report``.
"""

from refusalkit.attacks.base import (
    TRANSFORMS,
    AttackerTransform,
    Transform,
    get_transform,
    load_transform_file,
    register_transform,
    transform_names,
)
from refusalkit.attacks.loop import CRITERIA, AttackResult, AttemptRecord, judge_store, run_attack

__all__ = [
    "CRITERIA",
    "TRANSFORMS",
    "AttackResult",
    "AttackerTransform",
    "AttemptRecord",
    "Transform",
    "get_transform",
    "judge_store",
    "load_transform_file",
    "register_transform",
    "run_attack",
    "transform_names",
]
