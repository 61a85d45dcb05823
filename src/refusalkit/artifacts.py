"""Artifact folders: the saved models refusalkit writes and ships (detectors, prompt classifiers,
refusal-token adapters, latent directions) as plain files plus a ``manifest.json`` of their SHA-256s.

A folder holds its files (``meta.json``, ``weights.npz``, ``card.json``, safetensors, ...) and
``manifest.json``::

    {"format": "refusalkit-manifest/1",
     "files": {"meta.json": {"sha256": "<64 hex>", "size": 857402}, "weights.npz": {...}}}

Names are relative paths with ``/``. :func:`verify` checks every listed file (size, then SHA-256) and raises
:class:`ArtifactError` naming the first file that is missing, changed or damaged; files not listed are
ignored (a user may keep notes beside a model). A manifest whose ``files`` map names to bare hex strings
(the first latent-direction format) reads the same, without sizes.

The module also holds refusalkit's one streaming SHA-256 helper (:func:`file_sha256`, :func:`update_sha256`)
and the readers that turn a corrupt ``meta.json`` or ``weights.npz`` into one clear line instead of a
traceback. No pickle anywhere: arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refusalkit.errors import RefusalkitError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "refusalkit-manifest/1"
CARD = "card.json"
META = "meta.json"
WEIGHTS = "weights.npz"
_CHUNK = 1 << 20


class ArtifactError(RefusalkitError):
    """An artifact folder or one of its files is missing, changed, damaged or of the wrong kind.

    ``path`` is the file (or folder) concerned; ``str(err)`` starts with it.
    """

    def __init__(self, path: str | os.PathLike[str], message: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


# --- hashing -------------------------------------------------------------------------------------------------
def update_sha256(h: Any, path: str | os.PathLike[str], *, limit: int | None = None) -> None:
    """Feed the bytes of ``path`` (its first ``limit`` bytes when given) into the hash object ``h``."""
    left = limit
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK if left is None else min(_CHUNK, left)):
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
                if left <= 0:
                    break


def file_sha256(path: str | os.PathLike[str], *, limit: int | None = None) -> str:
    """Return the hex SHA-256 of a file (of its first ``limit`` bytes when given)."""
    h = hashlib.sha256()
    update_sha256(h, path, limit=limit)
    return h.hexdigest()


# --- manifests -----------------------------------------------------------------------------------------------
def _entry(path: Path) -> dict[str, Any]:
    return {"sha256": file_sha256(path), "size": path.stat().st_size}


def _listed_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    )


def manifest_of(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> dict[str, Any]:
    """Return the manifest document of ``folder``: ``names`` (default: every file below it except the
    manifest and hidden files), each with its SHA-256 and size."""
    folder = Path(folder)
    files = sorted(set(names)) if names is not None else _listed_files(folder)
    return {"format": MANIFEST_FORMAT, "files": {n: _entry(folder / n) for n in files}}


def write_manifest(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> Path:
    """Write ``folder/manifest.json`` for ``names`` (default: every file below the folder) and return its path.

    Use it once a folder's files are final (e.g. after adding the shipped profiles to an adapter)."""
    folder = Path(folder)
    doc = manifest_of(folder, names)
    return _write_bytes_atomic(folder / MANIFEST, _json_bytes(doc, indent=1))


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """Return ``{file: {"sha256": ..., "size": ... or None}}`` from ``folder/manifest.json``, or ``None``
    when the folder has no manifest (written before manifests existed). Raises ArtifactError when the
    manifest itself is unreadable."""
    mp = Path(folder) / MANIFEST
    if not mp.is_file():
        return None
    doc = read_json(mp, "manifest")
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        raise ArtifactError(mp, "damaged manifest: no 'files' object")
    out: dict[str, dict[str, Any]] = {}
    for name, e in files.items():
        if isinstance(e, str):  # the plain file -> sha256 form
            e = {"sha256": e, "size": None}
        if (
            not isinstance(e, dict)
            or not isinstance(e.get("sha256"), str)
            or len(e["sha256"]) != 64
            or ".." in Path(name).parts
            or Path(name).is_absolute()
        ):
            raise ArtifactError(mp, f"damaged manifest: bad entry for {name!r}")
        out[name] = {"sha256": e["sha256"], "size": e.get("size")}
    return out


def verify(folder: str | os.PathLike[str], *, required: bool = False) -> dict[str, dict[str, Any]] | None:
    """Check every file listed in ``folder``'s manifest; return the manifest (``None`` when there is none
    and ``required`` is false).

    Raises ArtifactError naming the first file that is missing, or whose size or SHA-256 differs from
    the manifest (changed or damaged after it was written). Sizes are compared first, so a truncated file
    costs no hashing. Hashing is linear in the folder's size (about 2 ms per MB on one core).
    """
    folder = Path(folder)
    man = read_manifest(folder)
    if man is None:
        if required:
            raise ArtifactError(folder, f"no {MANIFEST}; the folder is incomplete or was not written by refusalkit")
        return None
    for name, e in man.items():
        p = folder / name
        if not p.is_file():
            raise ArtifactError(p, f"missing (listed in {MANIFEST})")
        if e["size"] is not None and p.stat().st_size != e["size"]:
            raise ArtifactError(p, f"changed or damaged: {p.stat().st_size} bytes, {MANIFEST} says {e['size']}")
        if file_sha256(p) != e["sha256"]:
            raise ArtifactError(p, f"changed or damaged: its SHA-256 differs from {MANIFEST}")
    return man


# --- writing -------------------------------------------------------------------------------------------------
def _json_bytes(obj: Any, indent: int | None = None) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8")


def json_bytes(obj: Any, indent: int | None = 1) -> bytes:
    """Return ``obj`` as UTF-8 JSON (non-ASCII kept), the form artifact files are written in."""
    return _json_bytes(obj, indent)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Return ``arrays`` as the bytes of a compressed ``.npz`` (no pickled objects)."""
    import numpy as np

    buf = io.BytesIO()
    named: dict[str, Any] = dict(arrays)  # array names as keywords (numpy's stubs type them like its own options)
    np.savez_compressed(buf, **named)
    return buf.getvalue()


def _write_bytes_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def write_artifact(
    folder: str | os.PathLike[str], files: Mapping[str, bytes | str], card: Mapping[str, Any] | None = None
) -> Path:
    """Write an artifact folder: ``files`` (relative name -> bytes or text), ``card.json`` when ``card`` is
    given, then ``manifest.json`` over all of them; return the folder.

    A new folder is written beside its destination and renamed into place, so it appears whole or not at
    all. An existing folder is updated in place file by file (each file replaced atomically; files of the
    previous artifact that the new one lacks are removed; any other files are left alone) with the old
    manifest removed first and the new one written last: an interrupted rewrite leaves a folder that
    :func:`verify` rejects rather than a silent mix of old and new files.
    """
    folder = Path(folder)
    payload: dict[str, bytes] = {n: (d.encode("utf-8") if isinstance(d, str) else bytes(d)) for n, d in files.items()}
    if card is not None:
        payload[CARD] = _json_bytes(dict(card), indent=1)
    for name in payload:
        if name == MANIFEST or ".." in Path(name).parts or Path(name).is_absolute():
            raise RefusalkitError(f"artifact file name {name!r} is not allowed")
    if folder.exists() and not folder.is_dir():
        raise RefusalkitError(f"{folder}: exists and is not a folder")
    if not folder.exists() or not any(folder.iterdir()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
        try:
            for name, data in payload.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            (tmp / MANIFEST).write_bytes(_json_bytes(manifest_of(tmp, payload), indent=1))
            os.chmod(tmp, 0o777 & ~_umask())
            if folder.exists():
                folder.rmdir()  # empty: nothing of the user's is lost
            os.replace(tmp, folder)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder
    try:
        old = read_manifest(folder) or {}
    except ArtifactError:
        old = {}
    (folder / MANIFEST).unlink(missing_ok=True)
    for name, data in payload.items():
        _write_bytes_atomic(folder / name, data)
    for name in set(old) - set(payload):
        (folder / name).unlink(missing_ok=True)
    _write_bytes_atomic(folder / MANIFEST, _json_bytes(manifest_of(folder, payload), indent=1))
    return folder


def write_card(folder: str | os.PathLike[str], card: Mapping[str, Any]) -> None:
    """Write the model card ``card.json`` into ``folder`` and update its manifest entry (when the folder
    has a manifest), so that a card added after saving keeps the folder verifiable."""
    folder = Path(folder)
    _write_bytes_atomic(folder / CARD, _json_bytes(dict(card), indent=1))
    try:
        man = read_manifest(folder)
    except ArtifactError:
        man = None
    if man is not None:
        write_manifest(folder, set(man) | {CARD})


# --- reading -------------------------------------------------------------------------------------------------
def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Return the parsed JSON in ``path``; raise ArtifactError (missing, not UTF-8, not JSON with the line)
    instead of a traceback. ``what`` names the file's role in the message."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(p, f"missing {what}") from None
    except UnicodeDecodeError:
        raise ArtifactError(p, f"damaged {what}: not UTF-8 text") from None
    except OSError as e:
        raise ArtifactError(p, f"cannot read {what}: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ArtifactError(p, f"damaged {what}: invalid JSON ({e.msg}, line {e.lineno})") from None


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Return every array of a ``.npz`` file (read without pickle); raise ArtifactError when the file is
    missing, not an npz archive, damaged or holds pickled objects."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(p, "missing weights file")
    with open(p, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # every .npz is a zip archive; anything else is not one of ours
            raise ArtifactError(p, "damaged weights file: not an .npz archive")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, zlib.error, ValueError (pickled data), OSError, EOFError ...
        raise ArtifactError(
            p, f"damaged weights file: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        ) from None


def read_meta(
    folder: str | os.PathLike[str], kind: str | None = None, what: str = "model"
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return ``(meta, arrays)`` of a saved model folder after :func:`verify`: ``meta.json`` as a dict and
    the arrays of ``weights.npz`` (empty when the model has no weights file and its manifest lists none).

    Raises ArtifactError when the folder is not a saved ``what`` (no ``meta.json``), a file is changed or
    damaged, or ``kind`` is given and ``meta["kind"]`` differs.
    """
    folder = Path(folder)
    if not (folder / META).is_file():
        raise ArtifactError(folder, f"not a saved {what} (no {META})")
    man = verify(folder)
    meta = read_json(folder / META, f"{what} metadata")
    if not isinstance(meta, dict):
        raise ArtifactError(folder / META, f"damaged {what} metadata: a JSON object is expected")
    if kind is not None and meta.get("kind") != kind:
        raise ArtifactError(folder, f"a {meta.get('kind')!r} {what}, not {kind!r}")
    arrays: dict[str, Any] = {}
    if (folder / WEIGHTS).is_file() or (man is not None and WEIGHTS in man):
        arrays = read_npz(folder / WEIGHTS)
    return meta, arrays


def read_card(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the model card (``card.json``) in ``folder``, or ``None`` when there is none."""
    p = Path(folder) / CARD
    if not p.is_file():
        return None
    card = read_json(p, "model card")
    if not isinstance(card, dict):
        raise ArtifactError(p, "damaged model card: a JSON object is expected")
    return card


def meta_field(
    meta: Mapping[str, Any], name: str, types: type | tuple[type, ...], where: str | os.PathLike[str]
) -> Any:
    """Return ``meta[name]`` when it has one of ``types``; raise ArtifactError naming ``where`` and the field."""
    ts = types if isinstance(types, tuple) else (types,)
    v = meta.get(name)
    if not isinstance(v, ts) or (isinstance(v, bool) and bool not in ts):
        raise ArtifactError(
            where, f"damaged: field {name!r} is {type(v).__name__}, not {' or '.join(t.__name__ for t in ts)}"
        )
    return v


def check_shape(
    arrays: Mapping[str, Any], name: str, shape: tuple[int | None, ...], where: str | os.PathLike[str]
) -> Any:
    """Return ``arrays[name]`` when it exists, is numeric and has ``shape`` (``None`` matches any length);
    raise ArtifactError naming the file and array otherwise (a mis-shaped or foreign weights file)."""
    a = arrays.get(name)
    if a is None:
        raise ArtifactError(where, f"damaged weights: no array {name!r}")
    if (
        a.dtype.kind not in "fiu"
        or a.ndim != len(shape)
        or any(s is not None and s != d for s, d in zip(shape, a.shape))
    ):
        want = "x".join("?" if s is None else str(s) for s in shape) or "scalar"
        raise ArtifactError(
            where,
            f"damaged weights: array {name!r} has shape {'x'.join(map(str, a.shape)) or 'scalar'} "
            f"({a.dtype}), expected {want}",
        )
    return a


@contextmanager
def malformed_as_error(path: str | os.PathLike[str], what: str = "metadata") -> Iterator[None]:
    """Turn a missing field or a wrongly typed value met while building an object from a loaded file
    into ArtifactError naming ``path``, so that a damaged ``meta.json`` reads as one line, not a traceback."""
    try:
        yield
    except ArtifactError:
        raise
    except KeyError as e:
        raise ArtifactError(path, f"damaged {what}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        raise ArtifactError(path, f"damaged {what}: {type(e).__name__}: {e}") from None
