"""GM-DRIT with a second transposed convolution in each upsampling block of the generator."""

from toolkit.recipe import generator, load_recipe

gmdrit = load_recipe("gmdrit")
recipe = gmdrit.evolve(generator=generator("drit", double_upsample=True), iterations=4000)
