"""The package's layout rules (issue 19), read from the source with ``ast``: one core (latent
groups, the objective, training, files) serving two domains (text topics and images).

- ``topicvae.text`` never imports torch (reading and vectorizing need none);
- ``topicvae.latent`` and ``topicvae.objective`` import no model, no domain and no training;
- ``topicvae.utils`` (random streams) imports nothing else of topicvae, and anyone may import it;
- the core (``latent``, ``objective``, ``training``, ``io``) imports no domain and no CLI;
- ``topicvae.topics`` and ``topicvae.images`` import the core, not each other;
- nothing outside the CLI imports the CLI;
- no module imports a private name (``_x``) of another module.

A runtime check backs the first rule: importing the text modules in a fresh interpreter loads
no torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "topicvae"
CORE = ("latent", "objective", "training", "io")
#: Leaf utilities (random streams): anyone may import them, and they import nothing of topicvae.
UTILS = "utils"
DOMAINS = ("text", "topics", "images")

def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, str | None]]:
    """Every (module, name) the file imports, at any depth (lazy imports count too)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def area(module: str) -> str:
    """The subpackage a topicvae module belongs to ("" for the top-level package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def breaks(importer: str, module: str, name: str | None) -> str | None:
    """Which rule importing ``module`` (``name`` from it) in ``importer`` breaks, or None."""
    mine, theirs = area(importer), area(module)
    if mine == "text" and (module == "torch" or module.startswith("torch.")):
        return "text/ imports torch"
    if not module.startswith("topicvae"):
        return None
    if name is not None and name.startswith("_") and not name.startswith("__") and module != importer:
        return "a private name of another module"
    if mine == UTILS and theirs != UTILS:
        return f"utils/ imports {theirs or 'topicvae'}"
    if theirs == UTILS:
        return None
    if mine in ("latent", "objective") and theirs not in ("latent", "objective", ""):
        return f"{mine}/ imports {theirs}/"
    if mine in CORE and theirs in (*DOMAINS, "cli"):
        return f"the core ({mine}/) imports {theirs}/"
    if mine in ("topics", "images") and theirs in ("topics", "images") and mine != theirs:
        return f"{mine}/ imports {theirs}/"
    if mine == "text" and theirs in ("topics", "images", "training", "objective"):
        return f"text/ imports {theirs}/"
    if theirs == "cli" and mine != "cli" and importer != "topicvae.__main__":
        return "the CLI imported by a library module"
    return None


def all_breaks() -> dict[tuple[str, str, str | None], str]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for module, name in imports(path):
            rule = breaks(importer, module, name)
            if rule:
                found[(importer, module, name)] = rule
    return found


def test_the_rules_hold():
    found = all_breaks()
    assert not found, "imports that break the layout's rules: " + "; ".join(f"{a} imports {n or m} from {m} ({r})" for (a, m, n), r in found.items())


def test_the_text_modules_load_without_torch():
    modules = sorted(module_name(path) for path in (PACKAGE / "text").glob("*.py"))
    code = f"import sys\nfor name in {modules!r}:\n    __import__(name)\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", f"importing {modules} loaded torch"


@pytest.mark.parametrize(
    ("importer", "module", "name", "rule"),
    [
        ("topicvae.text.corpus", "torch", None, "text/ imports torch"),
        ("topicvae.text.shards", "torch.nn", "Linear", "text/ imports torch"),
        ("topicvae.objective.terms", "topicvae.topics.models", "ProdLDA", "objective/ imports topics/"),
        ("topicvae.training.loop", "topicvae.images.models", "ImageVAE", "the core (training/) imports images/"),
        ("topicvae.images.estimator", "topicvae.topics.estimator", "TopicModel", "images/ imports topics/"),
        ("topicvae.topics.estimator", "topicvae.training.loop", "_private", "a private name of another module"),
        ("topicvae.topics.evaluation", "topicvae.cli", "app", "the CLI imported by a library module"),
        ("topicvae.objective.information", "topicvae.training.loop", "train", "objective/ imports training/"),
        ("topicvae.utils.random_state", "topicvae.latent.groups", "GroupSpec", "utils/ imports latent"),
    ],
)
def test_each_rule_catches_its_break(importer, module, name, rule):
    assert breaks(importer, module, name) == rule


@pytest.mark.parametrize(
    ("importer", "module", "name"),
    [
        ("topicvae.topics.estimator", "topicvae.training.loop", "train"),
        ("topicvae.images.models", "topicvae.objective.terms", "ClassConditioning"),
        ("topicvae.cli", "topicvae.topics.estimator", "TopicModel"),
        ("topicvae.text.corpus", "numpy", None),
        ("topicvae.topics.models", "topicvae.topics.models", "_mlp"),
        ("topicvae.objective.information", "topicvae.utils.random_state", "seeded"),
    ],
)
def test_allowed_imports_pass(importer, module, name):
    assert breaks(importer, module, name) is None
