"""Registry lookups, parameter checks and the messages users see when a name is wrong."""

import pytest

from toolkit.errors import PluginError, RecipeError, UnknownComponentError
from toolkit.registry import Registry


def gaussian_like(latent_size: int = 8, *, num_domains):
    """A stand-in prior factory."""
    return ("gaussian", latent_size, num_domains)


@pytest.fixture()
def small_registry():
    registry = Registry()
    registry.register("prior", "gaussian", gaussian_like, package="first", version="1.0")
    registry.register("prior", "gmvae", gaussian_like, package="first", version="1.0")
    return registry


def test_unknown_name_suggests_closest(small_registry):
    with pytest.raises(UnknownComponentError) as error:
        small_registry.get("prior", "gmm")
    message = str(error.value)
    assert "unknown prior 'gmm'" in message
    assert "'gmvae'" in message
    assert "toolkit list --kind prior" in message


def test_unknown_kind_lists_kinds(small_registry):
    with pytest.raises(UnknownComponentError, match="unknown component kind 'priors'; did you mean 'prior'"):
        small_registry.get("priors", "gmvae")


def test_duplicate_registration_names_both_packages(small_registry):
    with pytest.raises(PluginError) as error:
        small_registry.register("prior", "gmvae", gaussian_like, package="second", version="2.0")
    assert "'first'" in str(error.value)
    assert "'second'" in str(error.value)


def test_invalid_kind_and_name_rejected():
    registry = Registry()
    with pytest.raises(PluginError, match="unknown kind 'encoder'"):
        registry.register("encoder", "x", gaussian_like, package="p", version="1")
    with pytest.raises(PluginError, match="invalid prior name 'Bad-Name'"):
        registry.register("prior", "Bad-Name", gaussian_like, package="p", version="1")


def test_unknown_parameter_suggests_closest(small_registry):
    with pytest.raises(RecipeError) as error:
        small_registry.check_parameters("prior", "gaussian", {"latent_sise": 4})
    assert "no parameter 'latent_sise'" in str(error.value)
    assert "'latent_size'" in str(error.value)


def test_context_argument_not_settable(small_registry):
    with pytest.raises(RecipeError, match="set by the engine"):
        small_registry.check_parameters("prior", "gaussian", {"num_domains": 3})


def test_build_passes_declared_context(small_registry):
    built = small_registry.build("prior", "gaussian", {"latent_size": 4}, num_domains=3, image_size=64)
    assert built == ("gaussian", 4, 3)


def test_entries_filter_by_wildcard(small_registry):
    assert [entry.name for entry in small_registry.entries("g*")] == ["gaussian", "gmvae"]
    assert [entry.name for entry in small_registry.entries("gm*")] == ["gmvae"]
    assert list(small_registry.entries("*", kind="loss")) == []


def test_entry_parameters_exclude_context(small_registry):
    entry = small_registry.get("prior", "gaussian")
    assert [(p.name, p.default) for p in entry.parameters] == [("latent_size", 8)]
    assert entry.summary == "A stand-in prior factory."
    assert entry.package == "first"


def test_installed_components_cover_spec(registry):
    expected = {
        "content_encoder": {"drit"},
        "attribute_encoder": {"drit"},
        "generator": {"drit"},
        "discriminator": {"drit", "content"},
        "prior": {"gaussian", "gmvae"},
        "optimizer": {"adam"},
        "dataset": {"folders", "apple2orange", "horse2zebra"},
        "loss": {
            "adversarial",
            "domain_classification",
            "self_reconstruction",
            "cross_cycle",
            "content_adversarial",
            "content_regularisation",
            "latent_regression",
            "gaussian_kl",
            "categorical_kl",
            "label_similarity",
            "mode_seeking",
        },
    }
    for kind, names in expected.items():
        assert names <= set(registry.names(kind)), kind
    assert registry.failures == []
    assert registry.get("prior", "gmvae").package == "drit-toolkit"
