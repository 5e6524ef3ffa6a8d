"""GM-DRIT with TTUR A at the reduced resolution S = 108 (images resized to 128 first)."""

from toolkit.recipe import load_recipe

gmdrit_ttur = load_recipe("gmdrit_ttur")
recipe = gmdrit_ttur.evolve(image_size=108, iterations=10000)
