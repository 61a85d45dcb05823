"""The layering rule of docs/architecture.md: no module imports a higher layer.

Every module of src/refusalkit is parsed with ``ast`` (no import happens), and every import in it is
checked: top-level ones, those inside functions and ``if TYPE_CHECKING:`` blocks, and
``importlib.import_module("refusalkit....")`` with a literal name. The package root's lazy public API
(``refusalkit/__init__.py``) is the one exception: it names every layer on purpose, and
``from refusalkit import NAME`` is checked against the module that NAME really comes from.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "refusalkit"

# Lowest first. A module may import its own package and any package of its own or a lower layer.
# Keep in step with the list in docs/architecture.md (test_docs_list_the_same_layers checks it).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "memo", "artifacts", "stats"),  # base: no refusalkit imports beyond each other
    ("data",),
    ("models",),
    ("runs",),
    ("detect",),
    ("predict",),  # may use detect (labels a model's answers to bootstrap a prompt classifier)
    ("tokens",),  # may use detect and predict
    ("latent",),  # may use tokens (its policy, the adapters) and everything below
    ("attacks",),
    ("customsets", "training"),  # training: DeRTa/safety SFT on tokens' trainer, tense data from attacks
    ("evaluate",),
    ("values",),  # an evaluation of its own: uses evaluate's metrics, plots and report pages
    ("serve",),
    ("cli",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
ROOT_MODULE = "refusalkit"  # the package root: only __version__ and the lazy API


@dataclass(frozen=True)
class Violation:
    """One import of a higher layer: where it is, what it imports, and both layers."""

    path: str
    line: int
    imported: str
    src: str
    dst: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: {self.src} (layer {RANK[self.src]}) imports {self.imported} "
            f"({self.dst}, layer {RANK[self.dst]})"
        )


def module_name(path: Path, pkg: Path) -> str:
    """Return the dotted module name of ``path`` inside the package folder ``pkg``."""
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def component(dotted: str) -> str:
    """Return the layer component of a refusalkit module name (``refusalkit.detect.base`` -> ``detect``)."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ROOT_MODULE


def lazy_api(pkg: Path) -> dict[str, str]:
    """Return the root package's lazy map (public name -> defining module), read from its source."""
    init = pkg / "__init__.py"
    for node in ast.walk(ast.parse(init.read_text(encoding="utf-8"))):
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        )
        if isinstance(target, ast.Name) and target.id == "_LAZY" and node.value is not None:
            return ast.literal_eval(node.value)
    return {}


def imports_of(tree: ast.AST, module: str, is_package: bool, api: dict[str, str]) -> list[tuple[int, str]]:
    """Return ``(line, dotted name)`` for every refusalkit module that ``tree`` imports, anywhere in it."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == ROOT_MODULE:
                # `from refusalkit import X`: X is a subpackage, a lazy API name, or __version__
                for a in node.names:
                    out.append(
                        (node.lineno, api.get(a.name, f"{ROOT_MODULE}.{a.name}" if a.name in RANK else ROOT_MODULE))
                    )
            else:
                out.append((node.lineno, mod))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.append((node.lineno, node.args[0].value))
    return [(ln, m) for ln, m in out if m == ROOT_MODULE or m.startswith(ROOT_MODULE + ".")]


def check(pkg: Path) -> tuple[list[Violation], list[str]]:
    """Return the layering violations under ``pkg`` and the components that are not in LAYERS."""
    api = lazy_api(pkg)
    violations: list[Violation] = []
    unknown: set[str] = set()
    for path in sorted(pkg.rglob("*.py")):
        module = module_name(path, pkg)
        src = component(module)
        if src == ROOT_MODULE:
            continue  # the root's lazy API names every layer by design
        if src not in RANK:
            unknown.add(src)
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, imported in imports_of(tree, module, path.name == "__init__.py", api):
            dst = component(imported)
            if dst == ROOT_MODULE or dst == src:
                continue
            if dst not in RANK:
                unknown.add(dst)
            elif RANK[dst] > RANK[src]:
                violations.append(Violation(str(path.relative_to(pkg.parent.parent)), line, imported, src, dst))
    return violations, sorted(unknown)


def test_every_package_has_a_layer():
    _, unknown = check(PKG)
    assert not unknown, f"place these in LAYERS (tests/test_architecture.py) and docs/architecture.md: {unknown}"


def test_no_module_imports_a_higher_layer():
    violations, _ = check(PKG)
    assert not violations, "imports of a higher layer:\n" + "\n".join(map(str, violations))


def test_docs_list_the_same_layers():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- layers -->\n```\n(.*?)```", text, flags=re.S)
    assert m, "docs/architecture.md lost its layer list (a ``` block after <!-- layers -->)"
    documented = [
        tuple(w.rstrip(",") for w in ln.split(":", 1)[1].split()) for ln in m.group(1).splitlines() if ln.strip()
    ]
    assert documented == LAYERS


def test_checker_finds_violations(tmp_path):
    """The checker itself: a small package with one upward import of each kind is caught, a downward one not."""
    pkg = tmp_path / "refusalkit"
    for sub in ("data", "detect", "evaluate"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text('_LAZY = {"run_eval": "refusalkit.evaluate.runner"}\n')
    (pkg / "evaluate" / "runner.py").write_text("from refusalkit.detect import x\n")  # down: fine
    (pkg / "data" / "a.py").write_text("def f():\n    from refusalkit.evaluate import runner\n")  # in a function
    (pkg / "data" / "b.py").write_text("from refusalkit import run_eval\n")  # through the lazy API
    (pkg / "data" / "c.py").write_text("import importlib\nimportlib.import_module('refusalkit.detect.y')\n")
    (pkg / "detect" / "d.py").write_text("from ..evaluate import runner\n")  # relative
    (pkg / "detect" / "e.py").write_text("from refusalkit import __version__\nfrom . import keyword\n")  # fine
    (pkg / "mystery").mkdir()
    (pkg / "mystery" / "__init__.py").write_text("")
    violations, unknown = check(pkg)
    got = sorted((Path(v.path).name, v.line, v.dst) for v in violations)
    assert got == [("a.py", 2, "evaluate"), ("b.py", 1, "evaluate"), ("c.py", 2, "detect"), ("d.py", 1, "evaluate")]
    assert unknown == ["mystery"]


def test_root_exports_only_lazily():
    """The root must not import its API eagerly (that would pull torch into ``import refusalkit``)."""
    tree = ast.parse((PKG / "__init__.py").read_text(encoding="utf-8"))
    eager = []
    for node in tree.body:  # module level only; the TYPE_CHECKING block is not executed at run time
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            eager += [n for n in names if n.startswith(ROOT_MODULE)]
    assert eager == []
