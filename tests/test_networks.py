"""Tests of the DRIT networks: parameter counts, output shapes at several image sizes, gradients and options.

The reference parameter counts are the MDMM figures at nz = 8 and two domains, each
written out layer by layer as (in · out · k² + out) for a convolution with bias.
"""

import pytest
import torch

from toolkit_plugins.discriminators import ContentDiscriminator, DritImageDiscriminator
from toolkit_plugins.encoders import DritAttributeEncoder, DritContentEncoder
from toolkit_plugins.generators import DritGenerator

NZ = 8
DOMAINS = 2
CONTENT = 256

# Image sizes (H, W) with the image discriminator's real/fake map size ceil(H/64) x ceil(W/64),
# worked out by hand for its six stride-2 convolutions. Every network runs forward and
# backward at GRADIENT_SIZES, and forward only at FORWARD_SIZES to keep the tests fast.
GRADIENT_SIZES = {
    (108, 108): (2, 2),
    (216, 216): (4, 4),
    (64, 96): (1, 2),
}
FORWARD_SIZES = {
    (216, 216): (4, 4),
    (108, 144): (2, 3),
}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def build_generator(**options) -> DritGenerator:
    return DritGenerator(**options, latent_size=NZ, code_size=DOMAINS, content_channels=CONTENT)


def build_content_discriminator() -> ContentDiscriminator:
    return ContentDiscriminator(num_domains=DOMAINS, content_channels=CONTENT)


def one_hot_codes(batch: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.arange(batch) % DOMAINS, DOMAINS).float()


def backward_random_projection(*outputs: torch.Tensor) -> None:
    # A random projection, not a plain sum: each channel of an instance-normalised map
    # sums to zero, so a plain sum would send no gradient into the layers before the norm.
    loss = sum((output * torch.randn_like(output)).sum() for output in outputs)
    loss.backward()


def assert_gradients_reach_every_parameter(module: torch.nn.Module) -> None:
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        # A bias right before an instance norm gets a zero gradient (up to rounding), because
        # the norm subtracts it again, so only the weights must have a nonzero gradient.
        if not name.endswith(".bias"):
            assert parameter.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


# Parameter counts


def test_content_encoder_parameter_count():
    expected = (
        (3 * 64 * 49 + 64)  # 7x7 conv 3 -> 64
        + (64 * 128 * 9 + 128)  # 3x3 stride-2 conv 64 -> 128
        + (128 * 256 * 9 + 256)  # 3x3 stride-2 conv 128 -> 256
        + 4 * 2 * (256 * 256 * 9 + 256)  # four residual blocks of two 3x3 convs
    )
    assert expected == 5_099_136
    assert count_parameters(DritContentEncoder()) == expected


def test_attribute_encoder_parameter_count():
    expected = (
        ((3 + 2) * 64 * 16 + 64)  # 4x4 stride-2 conv on image + broadcast domain code
        + (64 * 64 * 9 + 64) + (64 * 128 * 9 + 128) + (64 * 128 + 128)  # down-block 64 -> 128
        + (128 * 128 * 9 + 128) + (128 * 192 * 9 + 192) + (128 * 192 + 192)  # down-block 128 -> 192
        + (192 * 192 * 9 + 192) + (192 * 256 * 9 + 256) + (192 * 256 + 256)  # down-block 192 -> 256
    )
    mean_and_logvar_heads = 2 * (256 * 8 + 8)
    assert expected == 1_342_016
    assert expected + mean_and_logvar_heads == 1_346_128
    assert count_parameters(DritAttributeEncoder(num_domains=DOMAINS)) == expected


def test_attribute_encoder_feature_size():
    assert DritAttributeEncoder(num_domains=DOMAINS).feature_size == 256


def test_content_encoder_out_channels():
    assert DritContentEncoder().out_channels == 256


GENERATOR_PARAMETERS = (
    2 * (256 * 256 * 9 + 256)  # shared residual block at 256
    + 3 * 2 * (266 * 266 * 9 + 266)  # three residual blocks at 256 + nz + 2 = 266
    + (274 * 137 * 9 + 137) + 2 * 137  # transposed conv 266 + nz -> 137, layer norm
    + (145 * 72 * 9 + 72) + 2 * 72  # transposed conv 137 + nz -> 72, layer norm
    + (80 * 3 + 3)  # 1x1 transposed conv 72 + nz -> 3
)


def test_generator_parameter_count():
    assert GENERATOR_PARAMETERS == 5_435_252
    generator = build_generator()
    assert count_parameters(generator) == GENERATOR_PARAMETERS


def test_double_upsample_adds_stride_one_convs():
    extra = (137 * 137 * 9 + 137) + 2 * 137 + (72 * 72 * 9 + 72) + 2 * 72
    generator = build_generator(double_upsample=True)
    assert count_parameters(generator) == GENERATOR_PARAMETERS + extra


def test_likelihood_head_adds_pixel_mlp():
    extra = (3 * 512 + 512) + (512 * 512 + 512) + (512 * 3 + 3)
    generator = build_generator(likelihood_head=True)
    assert count_parameters(generator) == GENERATOR_PARAMETERS + extra


def test_adain_adds_exactly_mlp_parameters():
    # Per norm layer: Linear(code 2 -> 256 hidden), then a scale and a bias head 256 -> 256.
    # The plain block's instance norms have no parameters, so nothing else changes.
    per_norm = (2 * 256 + 256) + 2 * (256 * 256 + 256)
    generator = build_generator(adain=True)
    assert count_parameters(generator) == GENERATOR_PARAMETERS + 2 * per_norm


IMAGE_DISCRIMINATOR_PARAMETERS = (
    (3 * 64 * 9 + 64)
    + (64 * 128 * 9 + 128)
    + (128 * 256 * 9 + 256)
    + (256 * 512 * 9 + 512)
    + (512 * 1024 * 9 + 1024)
    + (1024 * 1024 * 9 + 1024)
    + 1024 * 1  # 1x1 real/fake head, no bias
    + 1024 * 2 * 9  # 3x3 domain head, no bias
)


def test_image_discriminator_parameter_count():
    assert IMAGE_DISCRIMINATOR_PARAMETERS == 15_728_256
    discriminator = DritImageDiscriminator(num_domains=DOMAINS)
    assert count_parameters(discriminator) == IMAGE_DISCRIMINATOR_PARAMETERS


def test_spectral_norm_keeps_parameter_count():
    discriminator = DritImageDiscriminator(spectral_norm=True, num_domains=DOMAINS)
    assert count_parameters(discriminator) == IMAGE_DISCRIMINATOR_PARAMETERS


def test_content_discriminator_parameter_count():
    expected = (
        3 * (256 * 256 * 49 + 256)  # three 7x7 stride-2 convs
        + (256 * 256 * 16 + 256)  # 4x4 conv
        + (256 * 2 + 2)  # 1x1 conv to domain logits
    )
    assert expected == 10_683_906
    assert count_parameters(build_content_discriminator()) == expected


# Initialisation


def test_conv_weights_start_normal():
    encoder = DritContentEncoder()
    weight = encoder.residual[0].body[0].weight
    assert abs(weight.mean().item()) < 1e-3
    assert weight.std().item() == pytest.approx(0.02, rel=0.01)


def test_biases_start_at_zero():
    networks = [
        DritContentEncoder(),
        DritAttributeEncoder(num_domains=DOMAINS),
        build_generator(adain=True, likelihood_head=True),
        build_content_discriminator(),
    ]
    for network in networks:
        for name, parameter in network.named_parameters():
            if name.endswith("bias"):
                assert torch.count_nonzero(parameter) == 0, f"{type(network).__name__}.{name} is not zero"


# Shapes, values and gradients


@pytest.mark.parametrize("size", list(GRADIENT_SIZES))
def test_content_encoder_shapes_and_gradients(size):
    height, width = size
    encoder = DritContentEncoder()
    content = encoder(torch.randn(2, 3, height, width))
    assert content.shape == (2, 256, height // 4, width // 4)
    assert torch.isfinite(content).all()
    backward_random_projection(content)
    assert_gradients_reach_every_parameter(encoder)


@pytest.mark.parametrize("size", list(GRADIENT_SIZES))
def test_attribute_encoder_shapes_and_gradients(size):
    encoder = DritAttributeEncoder(num_domains=DOMAINS)
    features = encoder(torch.randn(2, 3, *size), one_hot_codes(2))
    assert features.shape == (2, 256)
    assert torch.isfinite(features).all()
    backward_random_projection(features)
    assert_gradients_reach_every_parameter(encoder)


@pytest.mark.parametrize("size", list(GRADIENT_SIZES))
def test_generator_shapes_and_gradients(size):
    height, width = size
    generator = build_generator()
    images = generator(torch.randn(2, CONTENT, height // 4, width // 4), torch.randn(2, NZ), one_hot_codes(2))
    assert images.shape == (2, 3, height, width)
    assert torch.isfinite(images).all()
    assert images.abs().max() <= 1
    backward_random_projection(images)
    assert_gradients_reach_every_parameter(generator)


@pytest.mark.parametrize("size", list(GRADIENT_SIZES))
def test_image_discriminator_shapes_and_gradients(size):
    discriminator = DritImageDiscriminator(num_domains=DOMAINS)
    logits, domain_logits = discriminator(torch.randn(2, 3, *size))
    assert logits.shape == (2, 1, *GRADIENT_SIZES[size])
    assert domain_logits.shape == (2, DOMAINS)
    assert torch.isfinite(logits).all()
    assert torch.isfinite(domain_logits).all()
    backward_random_projection(logits, domain_logits)
    assert_gradients_reach_every_parameter(discriminator)


@pytest.mark.parametrize("size", list(GRADIENT_SIZES))
def test_content_discriminator_shapes_and_gradients(size):
    height, width = size
    discriminator = build_content_discriminator()
    domain_logits = discriminator(torch.randn(2, CONTENT, height // 4, width // 4))
    assert domain_logits.shape == (2, DOMAINS)
    assert torch.isfinite(domain_logits).all()
    backward_random_projection(domain_logits)
    assert_gradients_reach_every_parameter(discriminator)


@pytest.mark.parametrize("size", list(FORWARD_SIZES))
@torch.no_grad()
def test_networks_forward_shapes(size):
    height, width = size
    images = torch.randn(1, 3, height, width)
    code = one_hot_codes(1)

    content = DritContentEncoder().eval()(images)
    assert content.shape == (1, 256, height // 4, width // 4)
    assert torch.isfinite(content).all()

    features = DritAttributeEncoder(num_domains=DOMAINS)(images, code)
    assert features.shape == (1, 256)
    assert torch.isfinite(features).all()

    translated = build_generator()(content, torch.randn(1, NZ), code)
    assert translated.shape == (1, 3, height, width)
    assert torch.isfinite(translated).all()

    logits, domain_logits = DritImageDiscriminator(num_domains=DOMAINS)(translated)
    assert logits.shape == (1, 1, *FORWARD_SIZES[size])
    assert domain_logits.shape == (1, DOMAINS)
    assert torch.isfinite(logits).all()

    content_logits = build_content_discriminator()(content)
    assert content_logits.shape == (1, DOMAINS)
    assert torch.isfinite(content_logits).all()


# Every multiple of 4 from 64 to 128, then non-square sizes in both orientations.
DISCRIMINATOR_SIZES = [(side, side) for side in range(64, 129, 4)] + [(64, 96), (96, 64), (108, 144), (68, 132)]


@torch.no_grad()
def test_image_discriminator_any_size():
    discriminator = DritImageDiscriminator(num_domains=DOMAINS)
    for height, width in DISCRIMINATOR_SIZES:
        logits, domain_logits = discriminator(torch.randn(1, 3, height, width))
        # Six stride-2 convolutions: the map is ceil(H/64) x ceil(W/64).
        assert logits.shape == (1, 1, -(-height // 64), -(-width // 64)), (height, width)
        assert domain_logits.shape == (1, DOMAINS), (height, width)


@torch.no_grad()
def test_content_discriminator_any_size():
    discriminator = build_content_discriminator()
    for height, width in DISCRIMINATOR_SIZES:
        domain_logits = discriminator(torch.randn(1, CONTENT, height // 4, width // 4))
        assert domain_logits.shape == (1, DOMAINS), (height, width)
        assert torch.isfinite(domain_logits).all(), (height, width)


def test_image_discriminator_rejects_small_images():
    discriminator = DritImageDiscriminator(num_domains=DOMAINS)
    with pytest.raises(ValueError, match="at least 33x33, got 32x32"):
        discriminator(torch.randn(1, 3, 32, 32))


@torch.no_grad()
def test_discriminators_accept_minimum_sizes():
    _, domain_logits = DritImageDiscriminator(num_domains=DOMAINS)(torch.randn(1, 3, 33, 33))
    assert domain_logits.shape == (1, DOMAINS)
    content_logits = build_content_discriminator()(torch.randn(1, CONTENT, 13, 13))
    assert content_logits.shape == (1, DOMAINS)


def test_content_discriminator_rejects_small_maps():
    discriminator = build_content_discriminator()
    with pytest.raises(ValueError, match="at least 13x13, got 12x16"):
        discriminator(torch.randn(1, CONTENT, 12, 16))


def test_domain_logits_depend_on_image():
    discriminator = DritImageDiscriminator(num_domains=DOMAINS)
    with torch.no_grad():
        _, first = discriminator(torch.randn(1, 3, 64, 64))
        _, second = discriminator(torch.randn(1, 3, 64, 64))
    assert not torch.equal(first, second)


# Content noise


def test_content_noise_only_in_training():
    encoder = DritContentEncoder()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        train_first = encoder.train()(images)
        train_second = encoder.train()(images)
        eval_first = encoder.eval()(images)
        eval_second = encoder.eval()(images)
    assert not torch.equal(train_first, train_second)
    assert torch.equal(eval_first, eval_second)
    # Instance norm keeps no running statistics, so train and eval differ by the noise alone.
    assert (train_first - eval_first).std().item() == pytest.approx(1.0, abs=0.02)


def test_content_noise_scales_with_noise_std():
    encoder = DritContentEncoder(noise_std=0.25)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        noisy = encoder.train()(images)
        clean = encoder.eval()(images)
    assert (noisy - clean).std().item() == pytest.approx(0.25, abs=0.005)


def test_zero_noise_std_turns_noise_off():
    encoder = DritContentEncoder(noise_std=0.0).train()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(encoder(images), encoder(images))


# Generator options


@pytest.mark.parametrize(
    "options",
    [
        {"adain": True},
        {"double_upsample": True},
        {"likelihood_head": True},
        {"adain": True, "double_upsample": True, "likelihood_head": True},
    ],
)
def test_generator_options_shape_and_range(options):
    generator = build_generator(**options)
    images = generator(torch.randn(2, CONTENT, 16, 24), torch.randn(2, NZ), one_hot_codes(2))
    assert images.shape == (2, 3, 64, 96)
    assert torch.isfinite(images).all()
    assert images.min() >= -1
    assert images.max() <= 1
    backward_random_projection(images)
    assert_gradients_reach_every_parameter(generator)


def test_adain_shared_block_depends_on_code():
    generator = build_generator(adain=True)
    content = torch.randn(1, CONTENT, 16, 16)
    first_code = torch.tensor([[1.0, 0.0]])
    second_code = torch.tensor([[0.0, 1.0]])
    with torch.no_grad():
        first = generator.shared(content, first_code)
        second = generator.shared(content, second_code)
    assert not torch.allclose(first, second, atol=0, rtol=1e-6)


def test_adain_output_depends_on_code():
    generator = build_generator(adain=True)
    content = torch.randn(1, CONTENT, 16, 16)
    z = torch.randn(1, NZ)
    with torch.no_grad():
        first = generator(content, z, torch.tensor([[1.0, 0.0]]))
        second = generator(content, z, torch.tensor([[0.0, 1.0]]))
    assert not torch.equal(first, second)


def test_generator_rejects_wrong_latent_size():
    generator = build_generator()
    with pytest.raises(ValueError, match=r"attribute codes of shape \(1, 8\), got \(1, 4\)"):
        generator(torch.randn(1, CONTENT, 16, 16), torch.randn(1, 4), one_hot_codes(1))


def test_attribute_encoder_rejects_wrong_code_size():
    encoder = DritAttributeEncoder(num_domains=DOMAINS)
    with pytest.raises(ValueError, match=r"domain codes of shape \(N, 2\), got \(1, 3\)"):
        encoder(torch.randn(1, 3, 64, 64), torch.zeros(1, 3))


# Registration


REGISTERED = [
    ("content_encoder", "drit", DritContentEncoder),
    ("attribute_encoder", "drit", DritAttributeEncoder),
    ("generator", "drit", DritGenerator),
    ("discriminator", "drit", DritImageDiscriminator),
    ("discriminator", "content", ContentDiscriminator),
]


@pytest.mark.parametrize(("kind", "name", "factory"), REGISTERED)
def test_network_registered_by_package(registry, kind, name, factory):
    assert name in registry.names(kind)
    entry = registry.get(kind, name)
    assert entry.factory is factory
    assert entry.package == "drit-toolkit"
    assert entry.summary


@pytest.mark.parametrize(
    ("kind", "name", "parameters", "context"),
    [
        ("content_encoder", "drit", ["channels", "residual_blocks", "noise_std"], set()),
        ("attribute_encoder", "drit", ["channels"], {"num_domains"}),
        (
            "generator",
            "drit",
            ["adain", "double_upsample", "likelihood_head"],
            {"latent_size", "code_size", "content_channels"},
        ),
        ("discriminator", "drit", ["channels", "layers", "spectral_norm"], {"num_domains"}),
        ("discriminator", "content", ["channels"], {"num_domains", "content_channels"}),
    ],
)
def test_recipe_parameters_exclude_context(registry, kind, name, parameters, context):
    entry = registry.get(kind, name)
    assert [parameter.name for parameter in entry.parameters] == parameters
    assert not any(parameter.required for parameter in entry.parameters)
    assert entry.context_arguments == context


def test_registry_builds_generator_with_context(registry):
    generator = registry.build(
        "generator",
        "drit",
        {"adain": True},
        latent_size=NZ,
        code_size=DOMAINS,
        content_channels=CONTENT,
        num_domains=DOMAINS,
    )
    assert isinstance(generator, DritGenerator)
    assert generator.adain
    assert generator.latent_size == NZ
