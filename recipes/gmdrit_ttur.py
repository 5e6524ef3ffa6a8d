"""GM-DRIT with TTUR A: the discriminators learn at half the encoders' and generator's rate."""

from toolkit.recipe import adam, load_recipe

gmdrit = load_recipe("gmdrit")
recipe = gmdrit.evolve(optimizer=adam(lr=1e-4, discriminator_lr=5e-5), iterations=5500)
