"""Loading a model with refusal tokens: the base model, its tokenizer extended with the control tokens,
and a trained adapter: a LoRA adapter merged in (so generation runs at the base model's speed), or a decision
head (``kind: "head"``: only the control tokens' output rows, on the frozen model)."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

from refusalkit.artifacts import ArtifactError, file_sha256, read_json, verify
from refusalkit.errors import RefusalkitError
from refusalkit.tokens.scheme import TokenScheme

TOKENS_FILE = "refusal_tokens.json"
OUTPUT_ROWS_FILE = "output_rows.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BUNDLED_ADAPTER = "smollm2-135m-coconot"
#: ``refusal_tokens.json`` -> ``kind`` of an adapter that holds only the control tokens' output rows
HEAD_KIND = "head"


def adapters_root() -> Path:
    """Return the folder that holds the shipped adapters, one sub-folder each."""
    return Path(str(resources.files("refusalkit") / "resources" / "tokens"))


def bundled_adapter_dir(model: str = "default") -> Path:
    """Return the folder of the adapter shipped for ``model`` (a ``--model`` value).

    The shipped adapters are the sub-folders of :func:`adapters_root`; each one's ``refusal_tokens.json``
    names its base model. A bundled keyword (``default``, ``subject``) finds the adapter trained on that
    keyword; a local model folder finds the adapter whose ``base_model_sha256`` is the folder's weights hash.
    Raises RefusalkitError when no adapter (or more than one) is shipped for ``model``.
    """
    from refusalkit.models.spec import ModelSpec

    if model == "default":
        return adapters_root() / BUNDLED_ADAPTER  # the common case, without reading every card
    spec = ModelSpec.parse(model)
    cards: dict[Path, dict[str, Any]] = {}
    for f in sorted(adapters_root().glob(f"*/{TOKENS_FILE}")):
        try:
            cards[f.parent] = read_adapter_info(f.parent)
        except ArtifactError:
            continue  # a damaged shipped card is reported when that adapter is asked for by path
    if spec.bundled is not None:
        found = [d for d, c in cards.items() if c.get("base_model") == spec.bundled.keyword]
    elif spec.is_endpoint:
        found = []
    else:
        src = spec.weights_source()
        digest = model_hash(src) if Path(src).is_dir() else None
        found = [d for d, c in cards.items() if digest and c.get("base_model_sha256") == digest]
    if len(found) > 1:
        raise RefusalkitError(
            f"more than one adapter is shipped for --model {spec.display} ({', '.join(d.name for d in found)}); "
            "pass --adapter FOLDER"
        )
    if not found:
        raise RefusalkitError(
            f"no refusal-token adapter is bundled for --model {spec.display}; train one with `refusalkit tokens "
            f"train DATA -o ADAPTER --model {spec.display} --head-only` and pass --adapter ADAPTER"
        )
    return found[0]


def resolve_adapter(adapter: str | os.PathLike, model: str = "default") -> Path:
    """Return the adapter folder for a path or ``bundled`` (the adapter shipped for ``model``) after checking
    its manifest (when it has one); raise RefusalkitError when it is not an adapter or a file is missing,
    changed or damaged."""
    p = bundled_adapter_dir(model) if str(adapter) == "bundled" else Path(adapter).expanduser()
    verify(p)  # first, so that a file the manifest lists is named when it is missing
    is_head = (p / TOKENS_FILE).is_file() and read_adapter_info(p).get("kind") == HEAD_KIND
    needs = (TOKENS_FILE, OUTPUT_ROWS_FILE) if is_head else (TOKENS_FILE, "adapter_config.json", ADAPTER_WEIGHTS)
    if not all((p / f).is_file() for f in needs):
        raise RefusalkitError(
            f"{p} is not a refusal-token adapter (needs {', '.join(needs)}); "
            "train one with `refusalkit tokens train` or use --adapter bundled"
        )
    for f in sorted(p.glob("*.safetensors")):
        _check_safetensors(f)
    return p


def is_head_adapter(info: dict[str, Any]) -> bool:
    """Return whether an adapter's ``refusal_tokens.json`` info is a decision head on the frozen model."""
    return info.get("kind") == HEAD_KIND


def _check_safetensors(path: Path) -> None:
    """Raise ArtifactError unless ``path`` has a readable safetensors header (reads the header only), so a
    damaged weights file of an adapter without a manifest is named before any model is loaded."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as fh:
            fh.keys()
    except Exception as e:  # SafetensorError for a bad header; OSError
        raise ArtifactError(
            path, f"damaged weights file: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        ) from None


def read_adapter_info(adapter_dir: str | os.PathLike) -> dict[str, Any]:
    """Return the adapter's ``refusal_tokens.json`` (scheme, token ids, base model, training figures);
    ArtifactError names the file when it is not a JSON object."""
    path = Path(adapter_dir) / TOKENS_FILE
    info = read_json(path, "refusal-token file")
    if not isinstance(info, dict) or not isinstance(info.get("scheme"), dict):
        raise ArtifactError(path, "damaged refusal-token file: no 'scheme' object")
    return info


def model_hash(model_dir: str | os.PathLike) -> str:
    """Return a SHA-256 over a model folder's weight files (``*.safetensors``), sorted by name."""
    d = Path(model_dir)
    files = sorted(d.glob("*.safetensors"))
    if not files:
        return "unknown"
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def adapter_hash(adapter_dir: str | os.PathLike) -> str:
    """Return a SHA-256 over the adapter's weights and its token file."""
    d = Path(adapter_dir)
    h = hashlib.sha256()
    for f in sorted(list(d.glob("*.safetensors")) + [d / TOKENS_FILE]):
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def load_token_model(
    model: str = "default",
    adapter: str | os.PathLike | None = "bundled",
    *,
    batch_size: int = 16,
    device: str | None = None,
):
    """Return ``(hf_model, scheme, token_ids, info)``: an HFModel whose tokenizer has the control tokens
    and whose weights have the adapter merged in (a decision head: its output rows set, the rest frozen).

    ``adapter=None`` gives the base model with the control tokens added at their initial embeddings
    (untrained; useful to compare); ``"bundled"`` the adapter shipped for ``model``. Raises RefusalkitError
    for an endpoint model, a bad adapter, or a decision head trained on another base model (its weights hash).
    """
    from refusalkit.models.spec import ModelSpec, load_local_model
    from refusalkit.tokens.scheme import add_control_tokens

    if ModelSpec.parse(model).is_endpoint:
        raise RefusalkitError(
            "refusal-token scoring needs a local model (its logits); for an endpoint use "
            "`refusalkit tokens logit-bias` with a server that serves the merged model"
        )
    info: dict[str, Any] = {"adapter": None}
    if adapter is None:
        scheme = TokenScheme()
    else:
        # the adapter is checked before the base model loads: a damaged folder fails fast, in one line
        adir = resolve_adapter(adapter, model)
        info = read_adapter_info(adir)
        info["adapter"] = str(adir)
        try:
            scheme = TokenScheme.from_dict(info["scheme"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(adir / TOKENS_FILE, f"damaged refusal-token file: bad 'scheme' ({e})") from None
    hf = load_local_model(model, batch_size=batch_size, device=device)
    ids = add_control_tokens(hf.tokenizer, hf.model, scheme)
    if adapter is not None:
        expected = info.get("token_ids") or {}
        if expected and any(ids.get(t) != i for t, i in expected.items()):
            raise RefusalkitError(
                f"the control tokens got ids {ids} but the adapter was trained with {expected}; "
                "use the base model the adapter was trained on"
            )
        if is_head_adapter(info):
            # the rows were fitted to this model's hidden states: on other weights they mean nothing
            want, got = info.get("base_model_sha256"), model_hash(hf.path)
            if want != got:
                raise RefusalkitError(
                    f"adapter {adir} is a decision head for the base model with weights SHA-256 {str(want)[:16]}..., "
                    f"but --model {model} has {got[:16]}...; use the model it was trained on"
                )
        else:
            from peft import PeftModel

            try:
                peft_model = PeftModel.from_pretrained(hf.model, str(adir))
            except Exception as e:  # safetensors header errors, shape mismatches, bad adapter_config.json ...
                raise ArtifactError(
                    adir, f"cannot load the LoRA adapter: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
                ) from None
            hf.model = peft_model.merge_and_unload()
        if (adir / OUTPUT_ROWS_FILE).is_file():
            try:
                untie_output_rows(hf.model, adir / OUTPUT_ROWS_FILE)
            except Exception as e:  # a damaged or foreign rows file
                raise ArtifactError(
                    adir / OUTPUT_ROWS_FILE,
                    f"damaged output rows: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}",
                ) from None
        hf.model.eval()
    return hf, scheme, ids, info


def untie_output_rows(model: Any, rows_file: str | os.PathLike) -> None:
    """Give ``model`` its own output layer whose control-token rows are the decision-refit rows of
    ``rows_file`` (token id -> row), keeping the trained rows as input embeddings.

    For a model with tied embeddings this copies the embedding matrix into a separate output matrix
    (the memory of one more embedding matrix) and sets ``config.tie_word_embeddings = False``, so a
    saved or merged copy stays untied.
    """
    import torch
    from safetensors.torch import load_file

    rows = load_file(str(rows_file))
    out = model.get_output_embeddings()
    inp = model.get_input_embeddings()
    with torch.no_grad():
        if out.weight.data_ptr() == inp.weight.data_ptr():
            new = torch.nn.Linear(
                inp.weight.shape[1], inp.weight.shape[0], bias=False, dtype=inp.weight.dtype, device=inp.weight.device
            )
            new.weight.copy_(inp.weight)
            model.set_output_embeddings(new)
            out = new
        for k, v in rows.items():
            out.weight[int(k)] = v.to(out.weight.dtype)
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
