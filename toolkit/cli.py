"""The ``toolkit`` command: a thin click layer over the Python API."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from toolkit import __version__
from toolkit.errors import CheckpointWriteError, ToolkitError
from toolkit.plugins import default_plugins
from toolkit.registry import KINDS

log = logging.getLogger("toolkit")


def _configure_logging(verbose: bool) -> None:
    # Under torchrun, which sets RANK, the ranks other than 0 log warnings and errors
    # only (debug messages too with -v), each line marked with the rank.
    rank = os.environ.get("RANK", "0")
    other_rank = rank not in ("", "0")
    if verbose:
        level = logging.DEBUG
    else:
        level = logging.WARNING if other_rank else logging.INFO
    marker = f"rank {rank} " if other_rank else ""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {marker}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


class ToolkitGroup(click.Group):
    """Adds plugin commands on first use and turns ToolkitError into a one-line error message."""

    _plugins_added = False

    def _add_plugin_commands(self) -> None:
        if not self._plugins_added:
            self._plugins_added = True
            try:
                default_plugins().add_commands(self)
            except ToolkitError as error:
                raise click.ClickException(str(error)) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._add_plugin_commands()
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ToolkitError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=ToolkitGroup)
@click.version_option(__version__, package_name="drit-toolkit")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """Diverse unpaired image-to-image translation: DRIT++, MDMM and GM-DRIT from registered components."""
    if verbose:
        logging.getLogger().setLevel(logging.DEBUG)


def _format_default(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "(required)"
    return repr(value)


@cli.command("list")
@click.argument("pattern", default="*")
@click.option("--kind", type=click.Choice(list(KINDS)), help="Show only components of this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_components(pattern: str, kind: str | None, as_json: bool) -> None:
    """List registered components whose name matches PATTERN (a shell wildcard, default '*')."""
    plugins = default_plugins()
    entries = list(plugins.registry.entries(pattern, kind))
    if as_json:
        payload = {
            "components": [
                {
                    "kind": entry.kind,
                    "name": entry.name,
                    "package": entry.package,
                    "version": entry.version,
                    "summary": entry.summary,
                    "parameters": {p.name: _json_default(p.default) for p in entry.parameters},
                    "required": [p.name for p in entry.parameters if p.required],
                }
                for entry in entries
            ],
            "failed_plugins": [{"package": package, "error": error} for package, error in plugins.registry.failures],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    current_kind = None
    for entry in entries:
        if entry.kind != current_kind:
            current_kind = entry.kind
            click.echo(f"\n{entry.kind}: {KINDS[entry.kind]}")
        click.echo(f"  {entry.name}  [{entry.package} {entry.version}]")
        if entry.summary:
            click.echo(f"      {entry.summary}")
        params = ", ".join(f"{p.name}={_format_default(p.default)}" for p in entry.parameters)
        if params:
            click.echo(f"      parameters: {params}")
    if not entries:
        click.echo(f"no component matches '{pattern}'" + (f" in kind '{kind}'" if kind else ""))
    _echo_failures(plugins.registry.failures)


def _json_default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return None
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, tuple):
        return [_json_default(item) for item in value]
    return repr(value)


def _echo_failures(failures: list[tuple[str, str]]) -> None:
    if failures:
        click.echo("\nplugin packages that failed to load:", err=True)
        for package, error in failures:
            click.echo(f"  {package}: {error}", err=True)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_plugins(as_json: bool) -> None:
    """List installed plugin packages, their versions and the hooks each implements."""
    plugins = default_plugins()
    infos = plugins.info()
    if as_json:
        payload = {
            "plugins": [
                {"name": info.name, "package": info.package, "version": info.version, "hooks": list(info.hooks)}
                for info in infos
            ],
            "failed_plugins": [{"package": package, "error": error} for package, error in plugins.registry.failures],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    for info in infos:
        click.echo(f"{info.package} {info.version}  {info.name}  hooks: {', '.join(info.hooks) or 'none'}")
    _echo_failures(plugins.registry.failures)


def _image_size(value: str | None) -> int | tuple[int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(part) for part in value.lower().replace("x", ",").split(",")]
    except ValueError:
        raise click.BadParameter(f"'{value}' is not an image size; use S or HxW, e.g. 108 or 128x192") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1])
    raise click.BadParameter(f"'{value}' is not an image size; use S or HxW, e.g. 108 or 128x192")


@cli.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", help="Dataset folder (with trainA, trainB, ...) or a dataset name such as apple2orange.")
@click.option("--iterations", type=click.IntRange(min=1), help="Total training iterations (one batch each).")
@click.option("--batch-size", type=click.IntRange(min=2), help="Images per batch, half from each of two domains; even.")
@click.option("--image-size", help="Training crop size in pixels: S for S x S, or HxW (multiples of 4, at least 64).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--seed", type=int, help="Random seed for weights, data order and sampling.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    help="Arithmetic precision: fp32, or bf16 autocast; auto (the recipe default) picks bf16 on a CUDA GPU "
    "with bf16 support or a CPU with bf16 instructions, and fp32 elsewhere.",
)
@click.option(
    "--activation-checkpointing/--no-activation-checkpointing",
    default=None,
    help="Recompute the encoders' and generator's activations in backward: less memory, more time "
    "(default: the recipe's setting, off unless the recipe turns it on).",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="Keep convolution weights and image batches in channels-last (NHWC) memory format "
    "(default: the recipe's setting, off unless the recipe turns it on).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder (default runs/<recipe>/<timestamp>/).")
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Continue the run in this folder from its latest checkpoint.")
def run(
    recipe: Path,
    data,
    iterations,
    batch_size,
    image_size,
    device,
    seed,
    precision,
    activation_checkpointing,
    channels_last,
    out,
    resume,
) -> None:
    """Train RECIPE (a recipe .py file); options override the recipe's values.

    Under torchrun (for example ``torchrun --nproc-per-node 2 -m toolkit run RECIPE``)
    each process trains on its own batches, and --batch-size is the batch of one process.
    """
    from toolkit.engine import distributed
    from toolkit.engine.runs import Overrides

    if out is not None and resume is not None and out.resolve() != resume.resolve():
        raise click.UsageError("--out and --resume name different folders; a resumed run continues in its own folder")
    plugins = default_plugins()
    overrides = Overrides(
        data=data,
        iterations=iterations,
        batch_size=batch_size,
        image_size=_image_size(image_size),
        seed=seed,
        precision=precision,
        activation_checkpointing=activation_checkpointing,
        channels_last=channels_last,
    )
    try:
        _train(recipe, plugins, overrides, device, out, resume)
    finally:
        distributed.shutdown()


def _train(recipe: Path, plugins, overrides, device: str, out: Path | None, resume: Path | None) -> None:
    """Prepare the run, log to its run.log and train until the run ends, is interrupted or fails."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from toolkit.engine import distributed
    from toolkit.engine.runs import prepare_run
    from toolkit.engine.trainer import StopRequest, TrainingInterrupted

    # Messages logged before the run folder exists (skipped images, say) are kept and
    # written to run.log once it does.
    early = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    logging.getLogger("toolkit").addHandler(early)
    try:
        prepared = prepare_run(recipe, plugins.registry, overrides, device=device, out=out, resume=resume)
    finally:
        logging.getLogger("toolkit").removeHandler(early)

    # Rank 0 alone prints the run folder and writes run.json and run.log. The other
    # ranks' warnings and errors go to their stderr only.
    main = distributed.is_main()
    handler = None
    if main:
        click.echo(str(prepared.run_dir))
        prepared.write_record()
        handler = logging.FileHandler(prepared.run_dir / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        early.setTarget(handler)
        early.close()
        logging.getLogger("toolkit").addHandler(handler)
        for package, error in plugins.registry.failures:
            log.warning("plugin package '%s' failed to load: %s", package, error)
    else:
        early.close()
    resume_command = _resume_command(recipe, prepared.run_dir, distributed.world_size())

    stop = StopRequest()
    with _stop_on_interrupt(stop), logging_redirect_tqdm():
        try:
            prepared.trainer.train(stop)
        except TrainingInterrupted as error:
            if main:
                log.warning("%s. Continue with: %s", error, resume_command)
            sys.exit(130)
        except CheckpointWriteError as error:
            raise ToolkitError(f"{error}. Continue with: {resume_command}") from error
        except KeyboardInterrupt:
            from toolkit.engine.checkpoint import latest_checkpoint

            latest = latest_checkpoint(prepared.run_dir)
            if main and latest is None:
                log.error(
                    "training aborted by a second interrupt at iteration %d before the first checkpoint; "
                    "delete %s to start again",
                    prepared.trainer.iteration,
                    prepared.run_dir,
                )
            elif main:
                log.error(
                    "training aborted by a second interrupt at iteration %d; checkpoint %s is intact. "
                    "Continue with: %s",
                    prepared.trainer.iteration,
                    latest,
                    resume_command,
                )
            sys.exit(130)
        finally:
            if handler is not None:
                logging.getLogger("toolkit").removeHandler(handler)
                handler.close()


def _resume_command(recipe: Path, run_dir: Path, world_size: int) -> str:
    """Return the command that continues the run in ``run_dir``."""
    command = f"run {recipe} --resume {run_dir}"
    if world_size > 1:
        return f"torchrun <the same torchrun options> -m toolkit {command}"
    return f"toolkit {command}"


@contextlib.contextmanager
def _stop_on_interrupt(stop):
    """First Ctrl-C: finish the iteration, checkpoint, exit. Second Ctrl-C: stop at once."""

    def handle(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        log.warning("interrupt received: stopping after this iteration and writing a checkpoint (Ctrl-C again to abort)")

    try:
        previous = signal.signal(signal.SIGINT, handle)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main() -> None:
    _configure_logging("-v" in sys.argv[1:] or "--verbose" in sys.argv[1:])
    cli(prog_name="toolkit")


@cli.command("bench")
@click.argument("recipes", nargs=-1)
@click.option("--image-size", "image_sizes", type=int, multiple=True, help="Crop size S in pixels; repeat for several (default 108 and 216).")
@click.option("--batch-size", "batch_sizes", type=int, multiple=True, help="Images per batch; repeat for several (default 2).")
@click.option("--iterations", type=click.IntRange(min=1), default=10, show_default=True, help="Measured iterations per setting.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Iterations run before timing starts.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True, help="Arithmetic precision.")
@click.option("--data", help="Dataset folder or name (default: each recipe's dataset).")
@click.option("--synthetic", is_flag=True, help="Feed one random batch instead of loading images, to time compute alone.")
@click.option(
    "--activation-checkpointing",
    "checkpointing",
    type=click.Choice(["off", "on", "both"]),
    default="off",
    show_default=True,
    help="Measure without activation checkpointing, with it, or both ways to compare peak memory.",
)
@click.option("--channels-last", is_flag=True, help="Use channels-last (NHWC) memory format for weights and batches.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench"), show_default=True, help="Folder for bench.json and bench.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
def bench(
    recipes,
    image_sizes,
    batch_sizes,
    iterations,
    warmup,
    device,
    precision,
    data,
    synthetic,
    checkpointing,
    channels_last,
    out,
    as_json,
) -> None:
    """Time training iterations of RECIPES (default gmdrit_ttur and mdmm) at each image and batch size.

    Exits with status 1 when any setting failed. The table shows the error of each failed setting.
    """
    from toolkit.engine.bench import checkpointing_summary, format_table, plan_settings, plot_results, run_in_subprocess

    settings = plan_settings(
        list(recipes or ("recipes/gmdrit_ttur.py", "recipes/mdmm.py")),
        list(image_sizes or (108, 216)),
        list(batch_sizes or (2,)),
        {"off": (False,), "on": (True,), "both": (False, True)}[checkpointing],
        iterations=iterations,
        warmup=warmup,
        device=device,
        precision=precision,
        synthetic=synthetic,
        data=data,
        channels_last=channels_last,
    )
    results = []
    for setting in settings:
        log.info(
            "benchmarking %s at S=%d, batch %d%s",
            setting.recipe,
            setting.image_size,
            setting.batch_size,
            " with activation checkpointing" if setting.activation_checkpointing else "",
        )
        results.append(run_in_subprocess(setting))

    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_results(results, out / "bench.png")
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        click.echo(format_table(results))
        summary = checkpointing_summary(results)
        if summary:
            click.echo("\n" + summary)
        click.echo(f"\nresults: {out / 'bench.json'}, chart: {out / 'bench.png'}")
    failed = sum("error" in result for result in results)
    if failed:
        raise ToolkitError(f"{failed} of {len(results)} benchmark settings failed. The table and bench.json show each error")


def _add_evaluation_commands() -> None:
    from toolkit.cli_evaluation import evaluate, translate

    cli.add_command(translate)
    cli.add_command(evaluate)


_add_evaluation_commands()
