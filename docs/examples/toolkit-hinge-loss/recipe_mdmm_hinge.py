"""MDMM trained with the hinge GAN loss in place of the binary cross-entropy adversarial loss.

Needs the toolkit-hinge-loss package installed. Run it from the root of a toolkit
checkout, because the base recipe path below is relative to the working directory:

    toolkit run docs/examples/toolkit-hinge-loss/recipe_mdmm_hinge.py
"""

from toolkit.recipe import load_recipe, loss

mdmm = load_recipe("recipes/mdmm.py")

# Replace the adversarial term and keep its weight. Every other term stays as in MDMM.
losses = [
    loss("hinge_adversarial", weight=item.kwargs.get("weight", 1.0)) if item.name == "adversarial" else item
    for item in mdmm.losses
]
recipe = mdmm.evolve(losses=losses)
