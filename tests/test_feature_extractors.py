"""Inception-v3 features, LPIPS and weights-file lookup, run on random weights saved to temporary files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torchvision.models import alexnet, inception_v3

from toolkit.errors import ToolkitError
from toolkit.evaluation.inception import FEATURE_SIZE, INCEPTION_WEIGHTS, InceptionFeatures
from toolkit.evaluation.lpips import ALEXNET_WEIGHTS, LPIPS, LPIPS_WEIGHTS
from toolkit.evaluation.weights import InvalidWeightsError, MissingWeightsError, find_weights

LPIPS_CHANNELS = (64, 192, 384, 256, 256)


@pytest.fixture
def hub_folder(tmp_path):
    """Point torch.hub at an empty temporary folder and restore the previous folder afterwards."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


# Weights lookup


def test_find_weights_missing_names_file_and_folder(hub_folder):
    with pytest.raises(MissingWeightsError) as caught:
        find_weights(None, INCEPTION_WEIGHTS, "Inception-v3 weights", option="--inception-weights")
    message = str(caught.value)
    assert INCEPTION_WEIGHTS in message
    assert str(hub_folder / "checkpoints") in message
    assert "--inception-weights" in message
    assert "Inception_V3_Weights.IMAGENET1K_V1" in message
    assert isinstance(caught.value, ToolkitError)


def test_find_weights_uses_checkpoint_folder(hub_folder):
    folder = hub_folder / "checkpoints"
    folder.mkdir(parents=True)
    (folder / ALEXNET_WEIGHTS).write_bytes(b"")
    assert find_weights(None, ALEXNET_WEIGHTS, "AlexNet weights") == folder / ALEXNET_WEIGHTS


def test_find_weights_given_path(tmp_path):
    file = tmp_path / "weights.pth"
    file.write_bytes(b"")
    assert find_weights(file, INCEPTION_WEIGHTS, "Inception-v3 weights") == file
    with pytest.raises(MissingWeightsError, match="absent.pth does not exist"):
        find_weights(tmp_path / "absent.pth", INCEPTION_WEIGHTS, "Inception-v3 weights")
    with pytest.raises(MissingWeightsError, match="is a folder"):
        find_weights(tmp_path, INCEPTION_WEIGHTS, "Inception-v3 weights")


# Inception-v3


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """Save random weights of torchvision's inception_v3 and return the file and the network."""
    network = inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    path = tmp_path_factory.mktemp("inception") / INCEPTION_WEIGHTS
    torch.save(network.state_dict(), path)
    return path, network


def test_inception_features_shape_and_values(inception_file):
    path, network = inception_file
    model = InceptionFeatures.from_file(path)
    images = torch.rand(2, 3, 64, 64) * 2 - 1

    with torch.no_grad():
        features = model(images)

        # Independent path: torchvision's own forward (transform_input off) with a hook on the pool.
        # One image is enough for the comparison and halves the cost of this slow network.
        pooled = []
        network.transform_input = False
        handle = network.avgpool.register_forward_hook(lambda module, inputs, output: pooled.append(output))
        network(F.interpolate(images[:1], size=(299, 299), mode="bilinear", align_corners=False))
        handle.remove()

    assert features.shape == (2, FEATURE_SIZE)
    torch.testing.assert_close(features[:1], pooled[0].flatten(1), rtol=1e-5, atol=1e-6)


def test_inception_stays_in_eval_mode(inception_file):
    model = InceptionFeatures.from_file(inception_file[0])
    model.train()
    assert not model.training
    assert not model.network.training
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_inception_file_with_missing_key(inception_file, tmp_path):
    state = torch.load(inception_file[0], weights_only=True)
    del state["Mixed_7c.branch_pool.conv.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(InvalidWeightsError, match="missing keys Mixed_7c.branch_pool.conv.weight") as caught:
        InceptionFeatures.from_file(broken)
    assert str(broken) in str(caught.value)


def test_weights_file_not_a_state_dict(tmp_path):
    path = tmp_path / "text.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(InvalidWeightsError, match="could not be read"):
        InceptionFeatures.from_file(path)


# LPIPS


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory) -> tuple[Path, Path, torch.nn.Module, list[np.ndarray]]:
    """Save random AlexNet weights and random positive LPIPS linear weights; return both files and the raw weights."""
    tmp_path = tmp_path_factory.mktemp("lpips")
    backbone = alexnet(weights=None).eval()
    backbone_path = tmp_path / ALEXNET_WEIGHTS
    torch.save(backbone.state_dict(), backbone_path)

    linear = [torch.rand(1, channels, 1, 1) for channels in LPIPS_CHANNELS]
    linear_path = tmp_path / LPIPS_WEIGHTS
    torch.save({f"lin{layer}.model.1.weight": weight for layer, weight in enumerate(linear)}, linear_path)
    return linear_path, backbone_path, backbone, [weight.numpy().reshape(-1) for weight in linear]


def _numpy_lpips(x: torch.Tensor, y: torch.Tensor, backbone: torch.nn.Module, linear: list[np.ndarray]) -> np.ndarray:
    """LPIPS v0.1 written out: torchvision AlexNet ReLU outputs, then NumPy normalisation, weighting and means."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def relu_outputs(images: torch.Tensor) -> list[np.ndarray]:
        outputs = []
        h = (images - shift) / scale
        with torch.no_grad():
            for index, layer in enumerate(backbone.features):
                h = layer(h)
                if index in (1, 4, 7, 9, 11):
                    outputs.append(h.double().numpy().copy())
        return outputs

    total = np.zeros(x.shape[0])
    for features_x, features_y, weight in zip(relu_outputs(x), relu_outputs(y), linear):
        unit_x = features_x / (np.sqrt((features_x**2).sum(1, keepdims=True)) + 1e-10)
        unit_y = features_y / (np.sqrt((features_y**2).sum(1, keepdims=True)) + 1e-10)
        weighted = np.einsum("nchw,c->nhw", (unit_x - unit_y) ** 2, weight)
        total += weighted.mean((1, 2))
    return total


def test_lpips_matches_numpy_formula(lpips_files):
    linear_path, backbone_path, backbone, linear = lpips_files
    model = LPIPS.from_files(linear_path, backbone_path)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    y = torch.rand(3, 3, 64, 64) * 2 - 1

    with torch.no_grad():
        distance = model(x, y)

    assert distance.shape == (3,)
    np.testing.assert_allclose(distance.double().numpy(), _numpy_lpips(x, y, backbone, linear), rtol=1e-4)


def test_lpips_identical_inputs_is_zero(lpips_files):
    model = LPIPS.from_files(lpips_files[0], lpips_files[1])
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x, x.clone()), torch.zeros(2))


def test_lpips_linear_file_with_missing_layer(lpips_files, tmp_path):
    state = torch.load(lpips_files[0], weights_only=True)
    del state["lin4.model.1.weight"]
    broken = tmp_path / "broken_alex.pth"
    torch.save(state, broken)
    with pytest.raises(InvalidWeightsError, match="missing keys lin4.model.1.weight"):
        LPIPS.from_files(broken, lpips_files[1])


def test_lpips_backbone_file_with_wrong_shape(lpips_files, tmp_path):
    state = torch.load(lpips_files[1], weights_only=True)
    state["features.0.weight"] = torch.zeros(64, 3, 3, 3)
    broken = tmp_path / "broken_alexnet.pth"
    torch.save(state, broken)
    with pytest.raises(InvalidWeightsError, match=r"features.0.weight \(64, 3, 3, 3\)"):
        LPIPS.from_files(lpips_files[0], broken)


def test_lpips_rejects_small_images():
    with pytest.raises(ValueError, match="at least 31 pixels"):
        LPIPS()(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
