"""Make small run folders with the real engine for the translation and evaluation tests."""

from pathlib import Path

from toolkit.engine.runs import Overrides, prepare_run

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def make_run(recipe, registry, data, out, iterations=1, image_size=64, **overrides):
    """Train ``recipe`` for ``iterations`` on ``data`` into ``out`` with ``toolkit run``'s code path; return the folder."""
    prepared = prepare_run(
        RECIPES / f"{recipe}.py",
        registry,
        Overrides(data=str(data), iterations=iterations, image_size=image_size, **overrides),
        device="cpu",
        out=out,
        command=["test"],
    )
    prepared.write_record()
    prepared.trainer.train()
    return out
