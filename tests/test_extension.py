"""``cliplab.extension.Registry``, the one type behind every extension point, and the import graph it allows."""

import ast
import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest

from cliplab.extension import Registry, UnknownNameError

SRC = Path(__file__).parents[1] / "src" / "cliplab"


def test_register_get_replace_unregister():
    reg: Registry[int] = Registry("number")
    assert reg.register("one", 1) == 1 and reg.get("one") == 1 and reg["one"] == 1 and "one" in reg
    assert reg.register("one", reg["one"]) == 1  # the same object again: no-op
    with pytest.raises(ValueError, match="number 'one' is already registered.*replace=True"):
        reg.register("one", 11)
    reg.register("two", 2)
    assert reg.register("one", 11, replace=True) == 11 and reg["one"] == 11
    assert reg.names() == ["two", "one"]  # a replacing registration is the newest
    assert reg.unregister("two") == 2 and "two" not in reg and len(reg) == 1
    with pytest.raises(UnknownNameError):
        reg.unregister("two")
    assert reg.get("two", None) is None and reg.pop("two", "gone") == "gone"


def test_unknown_names_say_did_you_mean():
    reg: Registry[str] = Registry("colour")
    for name in ("red", "green", "blue"):
        reg.register(name, name.upper())
    with pytest.raises(UnknownNameError, match=r"unknown colour 'gren'; did you mean 'green'\? \(registered: red, gr"):
        reg.get("gren")
    with pytest.raises(ValueError, match="did you mean"):  # a ValueError (and a KeyError), as the old lookups
        reg["blu"]
    with pytest.raises(KeyError):
        reg["purple"]
    assert "did you mean" not in str(reg.unknown("purple"))


def test_check_validates_names_and_objects():
    def check(name, obj):
        if not isinstance(obj, int):
            raise TypeError(f"{name}: not an int")

    reg = Registry("number", check=check)
    with pytest.raises(TypeError, match="x: not an int"):
        reg.register("x", "1")
    assert "x" not in reg


def test_detect_asks_newest_first_and_order_sorts_iteration():
    reg = Registry("claim", order=lambda obj: obj[1])
    reg.register("any", (lambda s: True, 50))
    reg.register("dot", (lambda s: s.startswith("."), 10))
    reg.register("dotdot", (lambda s: s.startswith(".."), 50))
    assert reg.detect(lambda obj: obj[0]("..x"))[0] == "dotdot"
    assert reg.detect(lambda obj: obj[0](".x"))[0] == "dot"
    assert reg.detect(lambda obj: obj[0]("x"))[0] == "any"
    assert reg.detect(lambda obj: False) is None
    assert reg.names() == ["dot", "any", "dotdot"]  # by order, ties in registration order


def test_setitem_keeps_the_place_so_monkeypatch_undoes_cleanly(monkeypatch):
    reg = Registry("thing")
    for name in "abc":
        reg.register(name, name)
    monkeypatch.setitem(reg, "b", "B")
    assert reg.names() == ["a", "b", "c"] and reg["b"] == "B"
    monkeypatch.setitem(reg, "d", "D")
    monkeypatch.undo()
    assert reg.items() == [("a", "a"), ("b", "b"), ("c", "c")]


def test_restoring_undoes_registrations():
    reg = Registry("thing")
    reg.register("a", 1)
    with reg.restoring():
        reg.register("b", 2)
        reg.unregister("a")
        assert reg.names() == ["b"]
    assert reg.names() == ["a"]


def test_builtins_are_imported_lazily_on_first_use(tmp_path, monkeypatch):
    pkg = tmp_path / "lazy_builtins_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from cliplab.extension import Registry\nREG = Registry('toy', builtins=[__name__ + '.plugins'])\n"
    )
    (pkg / "plugins").mkdir()
    (pkg / "plugins" / "__init__.py").write_text("")
    for name, value in (("b_second", 2), ("a_first", 1)):
        (pkg / "plugins" / f"{name}.py").write_text(
            f"from lazy_builtins_pkg import REG\nREG.register('{name}', {value})\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_builtins_pkg

    assert "lazy_builtins_pkg.plugins.a_first" not in sys.modules  # nothing imported yet
    lazy_builtins_pkg.REG.register("user", 0)  # a user's registration loads the built-ins first ...
    assert lazy_builtins_pkg.REG.names() == ["a_first", "b_second", "user"]  # ... module name order, then the user
    assert lazy_builtins_pkg.REG.detect(lambda v: True) == ("user", 0)  # so the user's plug-in is asked first


class _EntryPoint:
    def __init__(self, name, value, obj):
        self.name, self.value, self._obj = name, value, obj

    def load(self):
        return self._obj


def test_entry_points_are_loaded_by_name_and_before_detect(monkeypatch):
    seen = []

    def fake(group):
        seen.append(group)
        return (
            [_EntryPoint("plugged", "pkg:obj", 7), _EntryPoint("other", "pkg:other", 8)]
            if group == "cliplab.toys"
            else []
        )

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    reg: Registry[int] = Registry("toy", group="cliplab.toys", adopt=lambda name, loaded: loaded * 10)
    assert "plugged" not in reg and [ep.name for ep in reg.pending()] == ["plugged", "other"]
    assert reg.get("plugged") == 70 and "plugged" in reg and "other" not in reg  # loaded on a miss, by name
    with pytest.raises(UnknownNameError, match="registered: plugged, other"):  # pending names are listed
        reg.get("nothing")
    assert reg.detect(lambda v: v == 80) == ("other", 80)  # detect loads every entry point first
    assert seen and set(seen) == {"cliplab.toys"}


def test_an_installed_distribution_adds_a_data_source(tmp_path, monkeypatch):
    """The real entry-point machinery: a ``*.dist-info`` on sys.path declaring ``cliplab.data_sources``."""
    from cliplab.data import load_dataset
    from cliplab.data.schemes import DATA_SOURCES

    (tmp_path / "toy_data_plugin.py").write_text(
        textwrap.dedent(
            """
            from cliplab.data import shapes

            def load(target, split=None, *, n=3):
                return shapes("test", n=n, image_size=16)
            """
        )
    )
    info = tmp_path / "toy_data_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-data-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cliplab.data_sources]\ntoydata = toy_data_plugin:load\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with DATA_SOURCES.restoring():
        assert len(load_dataset("toydata:anything:n=4")) == 4
        assert DATA_SOURCES["toydata"].options == ("n",)


# -- the import graph ----------------------------------------------------------------------------------------
def _import_graph() -> dict[str, set[str]]:
    """Module → the cliplab modules it imports (every import statement, in functions too), from the source."""
    mods = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for mod, path in mods.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                edges |= {resolve(f"{node.module}.{a.name}") or resolve(node.module) for a in node.names}
        graph[mod] = {e for e in edges if e and e != mod}
    return graph


def _reaches(graph, start, goal):
    seen, todo = set(), [start]
    while todo:
        mod = todo.pop()
        for nxt in graph.get(mod, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


@pytest.mark.parametrize(
    "module",
    [
        "cliplab.extension",
        "cliplab.data.schemes",
        "cliplab.data.spec",
        "cliplab.data.registry",
        "cliplab.data.sources",
        "cliplab.models.registry",
        "cliplab.bench.stage",
        "cliplab.bench.data_kinds",
    ],
)
def test_registry_modules_are_in_no_import_cycle(module):
    graph = _import_graph()
    assert module in graph
    assert not _reaches(graph, module, module), f"{module} imports itself through a cycle"


def test_the_public_entry_points_say_did_you_mean():
    from cliplab.data import load_dataset
    from cliplab.models import load_model

    with pytest.raises(ValueError, match="unknown data source 'wsd'; did you mean 'wds'"):
        load_dataset("wsd:/nowhere")
    with pytest.raises(ValueError, match=r"prefix 'hff' \(did you mean hf:\?\)"):
        load_model("hff:org/model", device="cpu")
