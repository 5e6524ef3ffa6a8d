"""The shared training engine: one loop and one update schedule for every recipe."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from toolkit import __version__
from toolkit.data import iterations_per_epoch, make_loader
from toolkit.engine import checkpoint, distributed
from toolkit.engine.context import StepContext, Translations
from toolkit.engine.grid import save_grid, translation_grid
from toolkit.engine.model import TranslationModel
from toolkit.engine.precision import autocast, resolve_precision
from toolkit.engine.records import TOTALS, LossLog, plot_losses
from toolkit.errors import ToolkitError
from toolkit.recipe import MEMORY_OPTIONS, Recipe
from toolkit.registry import Registry

log = logging.getLogger(__name__)

ENCODER_GENERATOR_GROUPS = ("content_encoder", "attribute_encoder", "generator")
GENERATOR_ALONE_GROUPS = ("content_encoder", "generator")


class TrainingInterrupted(ToolkitError):
    """Training stopped on request (Ctrl-C) after writing a checkpoint."""


class NonFiniteLossError(ToolkitError):
    """Too many updates in a row had a NaN or infinite loss."""


class StopRequest:
    """A flag the Ctrl-C handler sets; the loop checks it between iterations."""

    def __init__(self) -> None:
        self.requested = False


class Trainer:
    """Trains one recipe in one run folder: the DRIT-family update schedule, logs, grids and checkpoints.

    Under torchrun every rank builds a Trainer on the same run folder. Each rank trains on
    its own batches, the gradients are averaged before every optimizer step, and rank 0
    alone writes the run folder (see ``toolkit.engine.distributed``).
    """

    def __init__(self, recipe: Recipe, registry: Registry, run_dir: Path, device: torch.device) -> None:
        self.recipe = recipe
        self.run_dir = run_dir
        self.device = device
        self.precision = resolve_precision(recipe.precision, device)
        self.rank = distributed.rank()
        self.world_size = distributed.world_size()

        torch.manual_seed(recipe.seed)
        random.seed(recipe.seed)
        # Rank 0 builds the dataset first, so that a named dataset downloads once.
        self.data = distributed.main_first(
            lambda: registry.build("dataset", recipe.data.name, recipe.data.kwargs, image_size=recipe.image_size)
        )
        self.memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
        self.model = TranslationModel(recipe, registry, num_domains=len(self.data.domains))
        self.model.to(device, memory_format=self.memory_format)
        self.terms = {item.name: registry.build("loss", item.name, item.kwargs) for item in recipe.losses}
        self.groups = self.model.parameter_groups()
        optimizer_factory = registry.build("optimizer", recipe.optimizer.name, recipe.optimizer.kwargs)
        self.optimizers = optimizer_factory.build(self.groups, recipe.iterations)
        self.generator_alone_params = [p for group in GENERATOR_ALONE_GROUPS for p in self.groups[group]]
        self.encoder_generator_params = [p for group in ENCODER_GENERATOR_GROUPS for p in self.groups[group]]
        self.has_buffers = any(True for _ in self.model.buffers())

        # Every rank starts from rank 0's weights. From here on the random draws of the
        # step (prior samples, reparameterisation and content noise) differ between ranks,
        # while rank 0 keeps the stream of a single-process run.
        distributed.broadcast_module(self.model)
        if self.rank > 0:
            _seed_rng(distributed.seed_for_rank(recipe.seed, "step", self.rank))
        self.second_random = any("second_random" in term.requires for term in self.terms.values())
        self.iterations_per_epoch = iterations_per_epoch(self.data.domain_sizes, recipe.batch_size)

        self.iteration = 0
        self.nonfinite_in_a_row = 0
        self._skipped_update = False
        self.loss_log = LossLog(run_dir / "losses.csv")

    # Checkpoints

    def resume(self) -> None:
        """Continue from the run folder's latest checkpoint."""
        # Rank 0 picks the checkpoint, so that every rank loads the same one.
        latest = distributed.share_from_main(lambda: checkpoint.latest_checkpoint(self.run_dir))
        if latest is None:
            raise ToolkitError(
                f"run folder {self.run_dir} has no complete checkpoint to resume from; "
                "delete the folder (or choose another --out) and start a new run without --resume"
            )
        checkpoint.load_weights(latest, self.model, self.device)
        state = checkpoint.load_state(latest)
        self.optimizers.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self._restore_rng(state)
        if distributed.is_main():
            # Rows count from 0, so the checkpoint after t iterations ends with row t - 1.
            self.loss_log.truncate_after(self.iteration - 1)
        distributed.broadcast_module(self.model)
        log.debug("loaded checkpoint %s at iteration %d", latest, self.iteration)

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """Restore this rank's RNG states, or seed new ones when the checkpoint has none for this rank."""
        saved = state.get("rank_rng") or [state["rng"]]
        if self.rank < len(saved):
            checkpoint.restore_rng_state(saved[self.rank])
        else:
            _seed_rng(distributed.seed_for_rank(self.recipe.seed, "step", self.rank, self.iteration))

    def save(self) -> Path:
        """Write a checkpoint of this iteration and return its folder.

        Every rank must call it, because it compares and gathers across ranks. Rank 0 writes the files.
        """
        distributed.check_replicas_equal(self.model, self.iteration)
        rng_states = distributed.gather_objects(checkpoint.rng_state())
        if not distributed.is_main():
            return checkpoint.checkpoint_dir(self.run_dir, self.iteration)
        state = {"optimizer": self.optimizers.state_dict(), "rng": rng_states[0], "toolkit_version": __version__}
        if len(rng_states) > 1:
            state["rank_rng"] = rng_states
        return checkpoint.save_checkpoint(self.run_dir, self.model, state, self.iteration, self.recipe.keep_checkpoints)

    # The update schedule

    def step(self, real: Tensor, labels: Tensor, iteration: int) -> tuple[dict[str, Tensor], Translations]:
        """Run one iteration: forward pass, content-D update, D update, then the EG and G-alone updates."""
        model = self.model
        optimizers = self.optimizers
        record: dict[str, Tensor] = {}
        self._skipped_update = False
        if self.has_buffers:
            distributed.broadcast_buffers(model)

        with autocast(self.precision, self.device):
            out = model(real, labels, second_random=self.second_random)

        if iteration % self.recipe.content_discriminator_every == 0:
            self._update_discriminator("content_discriminator", StepContext(model, real, labels, out, iteration), record)

        total = self._update_discriminator("discriminator", StepContext(model, real, labels, out, iteration), record)
        if total is not None:
            record[TOTALS[0]] = total.detach()

        # The EG and G-alone losses read the same forward pass. Both gradients are taken
        # now, at the weights that pass used, because the EG optimizer step changes the
        # generator's weights in place and a later backward through the old graph would
        # be wrong (PyTorch raises "modified by an inplace operation"). Under torchrun each
        # gradient is averaged over the ranks before its optimizer step.
        self._set_discriminators_trainable(False)
        context = StepContext(model, real, labels, out, iteration)
        encoder_generator = self._total("encoder_generator", context, record)
        generator_alone = self._total("generator", context, record)
        alone_params = self.generator_alone_params
        alone_grads = None
        if generator_alone is not None and self._finite(generator_alone, "generator", iteration, record):
            alone_grads = torch.autograd.grad(generator_alone, alone_params, retain_graph=True, allow_unused=True)
            alone_grads = distributed.average_gradients(alone_params, alone_grads)
        if encoder_generator is not None and self._finite(encoder_generator, "encoder_generator", iteration, record):
            optimizers.zero_grad(ENCODER_GENERATOR_GROUPS)
            encoder_generator.backward()
            distributed.average_parameter_gradients(self.encoder_generator_params)
            optimizers.step(ENCODER_GENERATOR_GROUPS)
        if alone_grads is not None:
            optimizers.zero_grad(GENERATOR_ALONE_GROUPS)
            for param, grad in zip(alone_params, alone_grads):
                param.grad = grad
            optimizers.step(GENERATOR_ALONE_GROUPS)
        self._set_discriminators_trainable(True)
        generator_parts = [value for value in (encoder_generator, generator_alone) if value is not None]
        if generator_parts:
            record[TOTALS[1]] = sum(part.detach() for part in generator_parts)

        optimizers.advance_schedules()
        return record, out

    def _update_discriminator(self, group: str, context: StepContext, record: dict[str, Tensor]) -> Tensor | None:
        """Sum the terms of the ``group`` update and, if the total is finite, step that network."""
        total = self._total(group, context, record)
        if total is not None and self._finite(total, group, context.iteration, record):
            self.optimizers.zero_grad([group])
            total.backward()
            distributed.average_parameter_gradients(self.groups[group])
            self.optimizers.step([group])
        return total

    def _total(self, phase: str, context: StepContext, record: dict[str, Tensor]) -> Tensor | None:
        """Sum the weighted terms of one update in fp32, recording each as ``phase/term``."""
        total = None
        with autocast(self.precision, self.device):
            for name, term in self.terms.items():
                value = getattr(term, phase)(context)
                if value is None:
                    continue
                value = value.float()
                record[f"{phase}/{name}"] = value.detach()
                total = value if total is None else total + value
        return total

    def _finite(self, total: Tensor, phase: str, iteration: int, record: dict[str, Tensor]) -> bool:
        """Return True for a finite loss; otherwise log the culprit terms and skip the update.

        Under torchrun the ranks agree: a non-finite loss on any rank skips the update on all.
        """
        finite_here = bool(torch.isfinite(total))
        if distributed.all_ranks(finite_here):
            return True
        culprits = [
            key.split("/", 1)[1]
            for key, value in record.items()
            if key.startswith(phase + "/") and not bool(torch.isfinite(value))
        ]
        if finite_here:
            culprits = [f"none on rank {self.rank}, see the other ranks' errors"]
        self._skipped_update = True
        self.nonfinite_in_a_row += 1
        log.error(
            "non-finite loss at iteration %d in the %s update (terms: %s); update skipped (%d in a row)",
            iteration,
            phase,
            ", ".join(culprits) or "unknown",
            self.nonfinite_in_a_row,
        )
        if self.nonfinite_in_a_row >= self.recipe.max_nonfinite_updates:
            latest = checkpoint.latest_checkpoint(self.run_dir)
            raise NonFiniteLossError(
                f"training stopped at iteration {iteration}: {self.nonfinite_in_a_row} updates in a row had a "
                f"non-finite loss (last in the {phase} update, terms: {', '.join(culprits) or 'unknown'}); "
                f"the last good checkpoint is {latest or 'none (no checkpoint was written yet)'}. "
                "Lower the learning rates or the loss weights and resume from it."
            )
        return False

    def _set_discriminators_trainable(self, trainable: bool) -> None:
        for module in (self.model.image_discriminators, self.model.content_discriminator):
            module.requires_grad_(trainable)

    # The loop

    def train(self, stop: StopRequest | None = None) -> Path:
        """Train until ``recipe.iterations``; return the last checkpoint folder."""
        recipe = self.recipe
        stop = stop or StopRequest()
        if self.iteration >= recipe.iterations:
            raise ToolkitError(
                f"run {self.run_dir} is already at iteration {self.iteration}; "
                f"pass --iterations greater than {self.iteration} to train further"
            )
        if distributed.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.model.train()
        loader = make_loader(
            self.data.train,
            batch_size=recipe.batch_size,
            seed=recipe.seed,
            start_iteration=self.iteration,
            num_workers=recipe.num_workers,
            pin_memory=self.device.type == "cuda",
            rank=self.rank,
            world_size=self.world_size,
        )
        options = [label for field, label in MEMORY_OPTIONS.items() if getattr(recipe, field)]
        log.info(
            "training %s from iteration %d to %d on %s in %s (batch %d%s, image size %s%s)",
            recipe.name,
            self.iteration,
            recipe.iterations,
            self.device,
            self.precision,
            recipe.batch_size,
            f" per process x {self.world_size} processes" if self.world_size > 1 else "",
            recipe.image_size,
            "".join(f", {label}" for label in options),
        )
        progress = tqdm(
            total=recipe.iterations,
            initial=self.iteration,
            unit="it",
            dynamic_ncols=True,
            desc=recipe.name,
            disable=not distributed.is_main(),
        )
        started = time.perf_counter()
        out = None
        real = None
        try:
            for iteration, (real, labels) in zip(range(self.iteration, recipe.iterations), loader):
                real = real.to(self.device, non_blocking=True, memory_format=self.memory_format)
                labels = labels.to(self.device, non_blocking=True)
                self.model.prior.set_epoch(iteration // self.iterations_per_epoch)

                record, out = self.step(real, labels, iteration)
                if not self._skipped_update:
                    self.nonfinite_in_a_row = 0
                self.iteration = iteration + 1

                self._log_row(iteration, record, time.perf_counter() - started)
                progress.update(1)
                self._periodic(real, out)
                # Every rank stops after the same iteration, or the others would wait forever.
                if distributed.any_rank(stop.requested):
                    break
        finally:
            progress.close()

        last = self.save()
        if distributed.is_main():
            if real is not None and out is not None:
                save_grid(translation_grid(real, out), self.run_dir / "grids" / f"{self.iteration:08d}.png")
            plot_losses(self.run_dir / "losses.csv", self.run_dir / "plots")
        # Return on every rank only once rank 0 has written the checkpoint.
        distributed.barrier()
        if distributed.any_rank(stop.requested):
            raise TrainingInterrupted(f"training interrupted at iteration {self.iteration}; checkpoint saved in {last}")
        log.info("finished %s at iteration %d", recipe.name, self.iteration)
        return last

    def _log_row(self, iteration: int, record: dict[str, Tensor], seconds: float) -> None:
        """Append the iteration's losses, averaged over the ranks, to ``losses.csv`` (rank 0 writes)."""
        keys = list(record)
        values = []
        if keys:
            values = distributed.average_values(torch.stack([record[key].float() for key in keys])).tolist()
        if not distributed.is_main():
            return
        row: dict[str, Any] = {"iteration": iteration, "seconds": round(seconds, 3)}
        row.update({key: round(value, 6) for key, value in zip(keys, values)})
        row.update({f"lr/{group}": rate for group, rate in self.optimizers.learning_rates().items()})
        temperature = getattr(self.model.prior, "current_temperature", None)
        if temperature is not None:
            row["temperature"] = round(float(temperature), 6)
        self.loss_log.append(row)
        if self.iteration % self.recipe.log_every == 0:
            totals = ", ".join(f"{key} {row[key]:.4f}" for key in TOTALS if key in row)
            log.info("iteration %d: %s", self.iteration, totals)

    def _periodic(self, real: Tensor, out: Translations) -> None:
        recipe = self.recipe
        main = distributed.is_main()
        if main and self.iteration % recipe.grid_every == 0:
            save_grid(translation_grid(real, out), self.run_dir / "grids" / f"{self.iteration:08d}.png")
        if self.iteration % recipe.checkpoint_every == 0 and self.iteration < recipe.iterations:
            self.save()
        if main and self.iteration % recipe.plot_every == 0:
            plot_losses(self.run_dir / "losses.csv", self.run_dir / "plots")


def _seed_rng(seed: int) -> None:
    """Seed the torch (CPU and CUDA) and Python generators that the training step draws from."""
    torch.manual_seed(seed)
    random.seed(seed)
