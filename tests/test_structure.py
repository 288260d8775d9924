"""The package's shape: no import cycle, small modules, no hidden imports of itself."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mlstm4reco"
MAX_LINES = 450
LONGER = {"triton_kernels.py"}  # the GPU kernels: one file, as the compiler sees them


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported(node, module: str) -> list[str]:
    """The package's modules an import statement names (``from mlstm4reco import x``
    names ``mlstm4reco.x`` where x is a module, else ``mlstm4reco``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        assert node.level == 0, (
            f"{module}:{node.lineno}: the package imports itself by absolute names"
        )
        base = node.module or ""
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        ]
    return [name for name in names if name in MODULES]


def module_level_imports(module: str) -> set[str]:
    """What ``module`` imports when it is imported: its top-level statements, inside ifs
    and trys too, but not under ``if TYPE_CHECKING``, not in functions or classes."""
    found = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.update(imported(node, module))
            elif isinstance(node, ast.If) and not _type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(MODULES[module].read_text()).body)
    found.discard(module)
    return found


def test_the_imports_of_the_package_have_no_cycle():
    """Depth-first over the module-level imports; a cycle is reported as the chain of
    modules that closes it."""
    graph = {module: module_level_imports(module) for module in MODULES}
    assert graph["mlstm4reco.layers"] >= {
        "mlstm4reco.fused",
        "mlstm4reco.triton_mlstm",
    }  # the walk sees imports
    state = {}

    def walk(module, chain):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join([*chain[chain.index(target) :], target]))
            if target not in state:
                walk(target, [*chain, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])


def test_a_cycle_would_be_found(tmp_path, monkeypatch):
    """The walk above fails on a planted cycle (so that its silence means something)."""
    monkeypatch.setitem(MODULES, "mlstm4reco.a", tmp_path / "a.py")
    monkeypatch.setitem(MODULES, "mlstm4reco.b", tmp_path / "b.py")
    (tmp_path / "a.py").write_text("from mlstm4reco import b\n")
    (tmp_path / "b.py").write_text("if True:\n    import mlstm4reco.a\n")
    assert module_level_imports("mlstm4reco.a") == {"mlstm4reco.b"}
    assert module_level_imports("mlstm4reco.b") == {"mlstm4reco.a"}
    with pytest.raises(
        pytest.fail.Exception, match="import cycle: mlstm4reco.a -> mlstm4reco.b -> mlstm4reco.a"
    ):
        test_the_imports_of_the_package_have_no_cycle()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small(module):
    path = MODULES[module]
    if path.name in LONGER:
        pytest.skip(f"{path.name} may be longer")
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, (
        f"{path.relative_to(PACKAGE.parent)}: {lines} lines (at most {MAX_LINES})"
    )


def unexplained_local_imports(module: str) -> list[str]:
    """Imports of the package inside functions of ``module`` with no comment on their line
    or the line above."""
    path = MODULES[module]
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, (ast.Import, ast.ImportFrom)) and imported(inner, module):
                here, above = lines[inner.lineno - 1], lines[inner.lineno - 2].strip()
                if "#" not in here and not above.startswith("#"):
                    found.append(f"{path.name}:{inner.lineno}: {here.strip()} (inside {node.name})")
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_of_the_package_inside_functions_say_why(module):
    """An import of the package inside a function hides the import graph; where one is
    needed (a cycle it breaks, an optional dependency), a comment on its line or the line
    above says so."""
    assert unexplained_local_imports(module) == []


def test_an_unexplained_local_import_would_be_found(tmp_path, monkeypatch):
    monkeypatch.setitem(MODULES, "mlstm4reco.c", tmp_path / "c.py")
    (tmp_path / "c.py").write_text(
        "def f():\n    from mlstm4reco import layers\n\n\n"
        "def g():\n    # layers imports this module\n    from mlstm4reco import layers\n"
    )
    assert unexplained_local_imports("mlstm4reco.c") == [
        "c.py:2: from mlstm4reco import layers (inside f)"
    ]
