"""GM-DRIT with AdaIN in the generator's shared residual block."""

from toolkit.recipe import generator, load_recipe

gmdrit = load_recipe("gmdrit")
recipe = gmdrit.evolve(generator=generator("drit", adain=True), iterations=4500)
