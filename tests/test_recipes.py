"""models/ recipes: valid, in step with the runtime's alias table, and a build is current only for its recipe."""
import json
from dataclasses import replace

import pytest

from edgeemb.paths import DEFAULT_BUNDLES, default_bundle_path

recipes_mod = pytest.importorskip("edgeemb_export.recipes")  # the export extra


def test_every_recipe_loads_and_defaults_match_the_runtime_table():
    from edgeemb_export.defaults import default_recipes

    found = recipes_mod.recipes()
    assert {r.name for r in found} >= set(DEFAULT_BUNDLES.values())
    assert {r.alias: r.name for r in default_recipes()} == DEFAULT_BUNDLES
    for r in found:
        assert recipes_mod.source_path(r).exists(), r.path


def test_built_default_is_current_and_a_changed_recipe_is_not():
    recipe = next(r for r in recipes_mod.recipes() if r.alias == "default")
    folder = default_bundle_path("default")
    if not folder.is_dir():
        pytest.skip("default bundle not built (run edgeemb setup)")
    assert recipes_mod.is_current(folder, recipe)
    assert not recipes_mod.is_current(folder, replace(recipe, quantize="fp16"))
    assert not recipes_mod.is_current(folder, replace(recipe, options={"dims": 128}))


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "kind": "sentence", "source": {"path": "m"}, "quantize": "int8", "colour": 1}, "unknown field"),
    ({"name": "x", "kind": "audio", "source": {"path": "m"}, "quantize": "int8"}, "field 'kind'"),
    ({"name": "x", "kind": "sentence", "source": {"pkg": "m"}, "quantize": "int8"}, "field 'source'"),
    ({"kind": "sentence", "source": {"path": "m"}, "quantize": "int8"}, "field 'name' is required"),
])
def test_bad_recipe_names_the_field(tmp_path, data, message):
    from edgeemb_export.common.errors import ExportError

    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ExportError, match=message):
        recipes_mod.load_recipe(path)


def test_missing_source_is_a_clear_error(tmp_path):
    from edgeemb_export.common.errors import ExportError

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"name": "x", "kind": "sentence", "source": {"path": "nowhere"}, "quantize": "int8"}))
    with pytest.raises(ExportError, match="does not exist"):
        recipes_mod.build(recipes_mod.load_recipe(path), tmp_path / "out")
