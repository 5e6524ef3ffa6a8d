"""Recipe files: loading, validation before any work starts, and how variants differ from their base."""

import difflib
from pathlib import Path

import pytest

from toolkit.errors import RecipeError
from toolkit.recipe import Recipe, generator, load_recipe, loss, prior

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SHIPPED = [
    "mdmm",
    "gmdrit",
    "gmdrit_adain",
    "gmdrit_double_upsample",
    "gmdrit_ttur",
    "gmdrit_ttur_fast_generator",
    "gmdrit_ttur_108",
    "mdmm_mode_seeking",
]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_validates(name, registry):
    recipe = load_recipe(RECIPES / f"{name}.py")
    assert recipe.name == name
    recipe.validate(registry)


def test_seed_table_settings(registry):
    expected = {
        "mdmm": (216, 6000, "gaussian"),
        "gmdrit": (216, 5000, "gmvae"),
        "gmdrit_adain": (216, 4500, "gmvae"),
        "gmdrit_double_upsample": (216, 4000, "gmvae"),
        "gmdrit_ttur": (216, 5500, "gmvae"),
        "gmdrit_ttur_fast_generator": (216, 5500, "gmvae"),
        "gmdrit_ttur_108": (108, 10000, "gmvae"),
    }
    for name, (size, iterations, prior_name) in expected.items():
        recipe = load_recipe(RECIPES / f"{name}.py")
        assert recipe.image_size == size, name
        assert recipe.iterations == iterations, name
        assert recipe.prior.name == prior_name, name
        assert recipe.batch_size == 2, name


def test_ttur_learning_rates():
    ttur = load_recipe(RECIPES / "gmdrit_ttur.py").optimizer.kwargs
    fast = load_recipe(RECIPES / "gmdrit_ttur_fast_generator.py").optimizer.kwargs
    assert (ttur["lr"], ttur["discriminator_lr"]) == (1e-4, 5e-5)
    assert (fast["lr"], fast["discriminator_lr"]) == (2e-4, 1e-4)


def test_variants_change_one_field():
    variants = {
        "gmdrit_adain": ("gmdrit", {"generator", "iterations"}),
        "gmdrit_double_upsample": ("gmdrit", {"generator", "iterations"}),
        "gmdrit_ttur": ("gmdrit", {"optimizer", "iterations"}),
        "gmdrit_ttur_fast_generator": ("gmdrit", {"optimizer", "iterations"}),
        "gmdrit_ttur_108": ("gmdrit_ttur", {"image_size", "iterations"}),
        "mdmm_mode_seeking": ("mdmm", {"losses"}),
    }
    for name, (base_name, fields) in variants.items():
        variant = load_recipe(RECIPES / f"{name}.py")
        base = load_recipe(RECIPES / f"{base_name}.py")
        changed = {
            field
            for field in ("generator", "optimizer", "image_size", "iterations", "losses", "prior")
            if getattr(variant, field) != getattr(base, field)
        }
        assert changed == fields, name
        body = [line for line in (RECIPES / f"{name}.py").read_text().splitlines() if line.startswith("recipe = ")]
        assert len(body) == 1, name


def test_mdmm_gmdrit_line_difference():
    mdmm = (RECIPES / "mdmm.py").read_text().splitlines()
    gmdrit = (RECIPES / "gmdrit.py").read_text().splitlines()
    changed = [
        line
        for line in difflib.unified_diff(mdmm, gmdrit, lineterm="", n=0)
        if line.startswith("+") and not line.startswith("+++")
    ]
    assert len(changed) <= 3
    assert any("prior=prior(" in line for line in changed)


def test_unknown_component_names_field_and_suggestion(registry):
    recipe = load_recipe(RECIPES / "mdmm.py").evolve(prior=prior("gmm"))
    with pytest.raises(RecipeError) as error:
        recipe.validate(registry)
    message = str(error.value)
    assert "recipe field 'prior'" in message
    assert "unknown prior 'gmm'" in message
    assert "'gmvae'" in message


def test_unknown_parameter_names_component(registry):
    recipe = load_recipe(RECIPES / "mdmm.py").evolve(generator=generator("drit", adian=True))
    with pytest.raises(RecipeError, match="generator 'drit' has no parameter 'adian'; did you mean 'adain'"):
        recipe.validate(registry)


def test_unknown_loss_suggests_closest(registry):
    recipe = load_recipe(RECIPES / "mdmm.py").with_loss(loss("mode_seeing"))
    with pytest.raises(Exception, match="'mode_seeking'"):
        recipe.validate(registry)


def test_label_similarity_needs_categorical_prior(registry):
    recipe = load_recipe(RECIPES / "mdmm.py").with_loss(loss("label_similarity"))
    with pytest.raises(RecipeError, match="needs a prior with a categorical variable"):
        recipe.validate(registry)


def test_duplicate_loss_rejected():
    base = load_recipe(RECIPES / "mdmm.py")
    with pytest.raises(RecipeError, match="appears twice"):
        base.with_loss(loss("adversarial"))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"image_size": 102}, "multiple of 4"),
        ({"image_size": 32}, "at least 64"),
        ({"image_size": (64, 90)}, "multiple of 4"),
        ({"batch_size": 3}, "even integer"),
        ({"iterations": 0}, "positive integer"),
        ({"prior": generator("drit")}, "must be a prior component"),
        ({"activation_checkpointing": "yes"}, "activation_checkpointing must be True or False, got 'yes'"),
        ({"channels_last": 1}, "channels_last must be True or False, got 1"),
    ],
)
def test_invalid_fields_rejected(changes, message):
    base = load_recipe(RECIPES / "mdmm.py")
    with pytest.raises(RecipeError, match=message):
        base.evolve(**changes)


def test_non_square_size_accepted():
    recipe = load_recipe(RECIPES / "mdmm.py").evolve(image_size=[64, 96])
    assert recipe.image_shape == (64, 96)


def test_broken_recipe_file_reports_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("from toolkit.recipe import Recipe\nrecipe = Recipe(\n")
    with pytest.raises(RecipeError, match=r"syntax error at line \d"):
        load_recipe(broken)

    failing = tmp_path / "failing.py"
    failing.write_text("x = 1\nrecipe = undefined_name\n")
    with pytest.raises(RecipeError, match="failed to load at line 2: NameError"):
        load_recipe(failing)

    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(RecipeError, match="must assign a toolkit.recipe.Recipe to the name `recipe`"):
        load_recipe(empty)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file .* not found"):
        load_recipe(tmp_path / "nope.py")


def test_variant_loads_base_beside_it(tmp_path):
    (tmp_path / "base.py").write_text((RECIPES / "mdmm.py").read_text())
    (tmp_path / "variant.py").write_text(
        "from toolkit.recipe import load_recipe\nrecipe = load_recipe('base').evolve(iterations=7)\n"
    )
    variant = load_recipe(tmp_path / "variant.py")
    assert variant.iterations == 7
    assert variant.name == "variant"


def test_resolved_recipe_lists_defaults(registry):
    resolved = load_recipe(RECIPES / "gmdrit.py").resolved(registry)
    assert resolved["prior"]["name"] == "gmvae"
    assert resolved["prior"]["params"]["latent_size"] == 108
    assert resolved["prior"]["params"]["min_temperature"] == 0.5
    assert resolved["generator"]["params"]["adain"] is False
    assert resolved["optimizer"]["params"]["betas"] == [0.5, 0.999]
    assert [item["name"] for item in resolved["losses"]][-1] == "label_similarity"
    assert isinstance(Recipe, type)
