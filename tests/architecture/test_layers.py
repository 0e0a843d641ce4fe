"""The package's shape: every module in a declared layer, no upward import, no import cycle (imports inside functions
count), at most 8 top-level modules. The contract is `tests/architecture/layers.py`."""

from __future__ import annotations

from layers import DELEGATIONS, LAYERS, PACKAGE, cycles, graph, layer_of, modules

MAX_TOP_LEVEL = 8


def _upward(edges: dict[str, dict[str, int]]) -> list[str]:
    return [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)}) at line {line}"
            for m, targets in sorted(edges.items()) for d, line in sorted(targets.items())
            if layer_of(d) > layer_of(m) and (m, d) not in DELEGATIONS]


def test_every_module_is_in_a_layer():
    for module in modules():
        assert 0 <= layer_of(module) < len(LAYERS)


def test_no_module_imports_a_higher_layer():
    upward = _upward(graph())
    assert not upward, "upward imports (declare a layer in tests/architecture/layers.py or move the code down):\n" + \
        "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    edges = {m: {d for d in targets if (m, d) not in DELEGATIONS} for m, targets in graph().items()}
    found = cycles(edges)
    assert not found, f"import cycles: {found}"


def test_delegations_are_imports_inside_a_function_that_exist():
    """A declared delegation is a lazy import that is really there (a stale entry would allow a future edge)."""
    edges = graph()
    for source, target in DELEGATIONS:
        assert target in edges[source], f"{source} no longer imports {target}: drop it from DELEGATIONS"
        assert layer_of(target) > layer_of(source)
        text = (PACKAGE.parent / (source.replace(".", "/") + ".py")).read_text().splitlines()
        line = text[edges[source][target] - 1]
        assert line.startswith((" ", "\t")), f"{source}:{edges[source][target]} imports {target} at module level"


def test_top_level_holds_at_most_eight_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_a_cycle_and_an_upward_import_are_found(tmp_path):
    """The checks see what they guard against: a two-module cycle, and a layer order a module breaks."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("mu2hub.format.system") < layer_of("mu2hub.hub.store") < layer_of("mu2hub.api")
    assert _upward({"mu2hub.format.system": {"mu2hub.hub.store": 3}}) == [
        f"mu2hub.format.system (layer {layer_of('mu2hub.format.system')}) imports mu2hub.hub.store "
        f"(layer {layer_of('mu2hub.hub.store')}) at line 3"]
