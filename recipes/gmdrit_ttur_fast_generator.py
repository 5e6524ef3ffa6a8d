"""GM-DRIT with TTUR B: the encoders and generator learn at twice the discriminators' rate."""

from toolkit.recipe import adam, load_recipe

gmdrit = load_recipe("gmdrit")
recipe = gmdrit.evolve(optimizer=adam(lr=2e-4, discriminator_lr=1e-4), iterations=5500)
