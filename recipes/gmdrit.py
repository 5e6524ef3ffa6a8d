"""A seed experiment: DRIT-family translation on apple2orange, batch size 2. docs/recipes.md compares them."""

from toolkit.recipe import Recipe, adam, attribute_encoder, content_encoder, dataset, discriminator, generator, loss, prior

recipe = Recipe(
    content_encoder=content_encoder("drit"),
    attribute_encoder=attribute_encoder("drit"),
    prior=prior("gmvae", latent_size=108, num_components=2, condition_on_inferred_y=True),
    generator=generator("drit"),
    discriminator=discriminator("drit"),
    content_discriminator=discriminator("content"),
    losses=[
        loss("adversarial", weight=1.0),
        loss("domain_classification", weight=5.0, real_weight=1.0),
        loss("content_adversarial", weight=1.0),
        loss("self_reconstruction", weight=10.0),
        loss("cross_cycle", weight=10.0),
        loss("content_regularisation", weight=0.01),
        loss("gaussian_kl", weight=0.01),
        loss("latent_regression", weight=10.0),
        loss("label_similarity", weight=1.0),
    ],
    optimizer=adam(lr=1e-4, betas=(0.5, 0.999), weight_decay=1e-4, decay_start=0.5),
    data=dataset("apple2orange"),
    image_size=216,
    batch_size=2,
    iterations=5000,
)
