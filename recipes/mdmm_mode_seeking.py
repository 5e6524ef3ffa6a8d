"""MDMM with the mode-seeking loss of Mao et al. (CVPR 2019) for more diverse random-attribute outputs."""

from toolkit.recipe import load_recipe, loss

mdmm = load_recipe("mdmm")
recipe = mdmm.with_loss(loss("mode_seeking", weight=1.0))
