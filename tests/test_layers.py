"""The package's layers: every import points down the list in the README's layout section."""

import ast
import pathlib

import xrayjax

PACKAGE = pathlib.Path(xrayjax.__file__).parent
# Lowest first; a module may import from its own layer's package and from layers below it.
LAYERS = (
    ("models",),
    ("losses", "optim"),
    ("data",),
    ("parallel",),
    ("steps",),
    ("checkpoint", "logging"),
    ("evaluators",),
    ("build",),
    ("trainers",),
    ("inference",),
    ("evaluate",),
    ("tools",),
    ("main",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# Packages whose modules must not import each other (two trainers are two separate loops).
SEPARATE = ("trainers",)
# Outside packages that a layer must not reach (ARCHITECTURE: pure modules and measurements).
FORBIDDEN = {"models": ("data_prep", "ml_collections"), "evaluators": ("data_prep",)}


def _unit(module: str) -> str | None:
    """'xrayjax.data.sources' → 'data'; None for anything outside the package."""
    parts = module.split(".")
    return parts[1] if parts[0] == "xrayjax" and len(parts) > 1 else None


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: use absolute imports")
            # `from xrayjax import build` names a module of the package, not a symbol.
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, n if node.module == "xrayjax" else node.module) for n in names]
    return found


def _modules() -> list[tuple[pathlib.Path, str]]:
    return [
        (path, path.relative_to(PACKAGE).parts[0].removesuffix(".py"))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "__init__.py" or path.parent != PACKAGE
    ]


def test_every_module_has_a_layer():
    units = {unit for _, unit in _modules()}
    assert units == set(RANK), f"add to LAYERS: {units - set(RANK)}; gone: {set(RANK) - units}"


def _violations(path: pathlib.Path, unit: str) -> list[str]:
    """Imports of `path` (a module of layer `unit`) that point up, sideways or out of bounds."""
    found = []
    for line, module in _imports(path):
        where = f"{path.name}:{line} imports {module}"
        target = _unit(module)
        if module.split(".")[0] in FORBIDDEN.get(unit, ()):
            found.append(where + f" ({unit} must not import it)")
        elif target == unit and unit in SEPARATE:
            found.append(where + f" (the modules of {unit}/ stay separate)")
        elif target is not None and RANK[target] > RANK[unit]:
            found.append(where + f" ({target} is above {unit})")
    return found


def test_imports_point_down():
    found = [v for path, unit in _modules() for v in _violations(path, unit)]
    assert not found, "imports pointing up the layers:\n" + "\n".join(found)


def test_the_check_finds_upward_nested_and_sideways_imports(tmp_path):
    """A lazy import inside a function cannot hide; each kind of violation is named."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import numpy\nfrom xrayjax import parallel\n"
        "def f():\n    from xrayjax.trainers import gan\n    import data_prep.render\n"
    )
    found = _violations(probe, "evaluators")
    assert len(found) == 2, found
    assert "xrayjax.trainers (trainers is above evaluators)" in found[0]
    assert "data_prep.render (evaluators must not import it)" in found[1]
    assert _violations(probe, "main") == []
    assert len(_violations(probe, "trainers")) == 1  # gan is another trainer
