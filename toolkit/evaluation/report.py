"""Write an evaluation's results: ``metrics.json``, a Markdown report with one table across runs, and a bar chart per metric."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Metric key: (heading, which direction is better, format).
METRICS = {
    "ndb": ("NDB", "lower", "{:.0f}"),
    "jsd": ("JSD", "lower", "{:.4f}"),
    "accuracy": ("translation accuracy", "higher", "{:.3f}"),
    "diversity_l1": ("diversity (L1)", "higher", "{:.4f}"),
    "lpips": ("diversity (LPIPS)", "higher", "{:.4f}"),
    "fid": ("FID", "lower", "{:.2f}"),
    "kid": ("KID", "lower", "{:.4f}"),
}
# Table headings escape the bar of q(y|x), which Markdown would read as a column break.
# Below this test accuracy the report warns that translation accuracy is not informative.
LOW_CLASSIFIER_ACCURACY = 0.75
CLUSTERING = {"accuracy": ("clustering accuracy", "{:.3f}"), "nmi": ("NMI", "{:.3f}")}


def write_report(payload: dict[str, Any], out: Path) -> Path:
    """Write ``metrics.json``, ``report.md`` and ``charts/<metric>.png`` into ``out``; return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=_json_value) + "\n")
    charts = plot_metrics(payload, out / "charts")
    report = out / "report.md"
    report.write_text(markdown_report(payload, charts, out))
    return report


def present_metrics(payload: dict[str, Any]) -> list[str]:
    """Metric keys that at least one run has a value for, in the order of ``METRICS``."""
    found = set()
    for run in payload["runs"]:
        for values in run["directions"].values():
            found.update(key for key in METRICS if _number(values.get(key)) is not None)
    return [key for key in METRICS if key in found]


def markdown_report(payload: dict[str, Any], charts: dict[str, Path], out: Path) -> str:
    """Return the report: the settings, one table (a row per run and direction), clustering, charts and grids."""
    settings = payload["settings"]
    keys = present_metrics(payload)
    lines = [
        "# Evaluation report",
        "",
        f"Data: `{payload['data']}` (domains {', '.join(payload['domains'])}), test split. "
        f"{settings['samples']} outputs per test image with attributes from each run's prior, seed {settings['seed']}.",
        "",
        "| run | prior | iteration | direction | inputs | " + " | ".join(f"{METRICS[key][0]} ({METRICS[key][1]} is better)" for key in keys) + " |",
        "| --- | --- | ---: | --- | ---: | " + " | ".join("---:" for _ in keys) + " |",
    ]
    for run in payload["runs"]:
        for direction, values in run["directions"].items():
            cells = [_format(values.get(key), METRICS[key][2]) for key in keys]
            if "ndb" in keys and "ndb_bins" in values:
                cells[keys.index("ndb")] = f"{values['ndb']} / {values['ndb_bins']}"
            if "kid" in keys and _number(values.get("kid_std")) is not None:
                cells[keys.index("kid")] += f" ± {values['kid_std']:.4f}"
            lines.append(
                f"| {run['label']} | {run['prior']} | {run['iteration']} | {direction.replace('->', ' → ')} | {values['inputs']} | "
                + " | ".join(cells)
                + " |"
            )
    lines.append("")

    classifier = payload.get("classifier")
    if classifier:
        lines += [
            f"Translation accuracy uses the toolkit's domain classifier for this dataset: test accuracy "
            f"{classifier['test_accuracy']:.3f} on {classifier['test_images']} real test images "
            f"(trained on {classifier['train_images']} real training images).",
            "",
        ]
        if classifier["test_accuracy"] < LOW_CLASSIFIER_ACCURACY:
            lines += [
                f"**Warning:** the classifier's test accuracy is below {LOW_CLASSIFIER_ACCURACY}, so it barely tells "
                "the domains apart and translation accuracy says little here. More training images help.",
                "",
            ]

    clustered = [run for run in payload["runs"] if "clustering" in run]
    if clustered:
        lines += [
            "## Clustering of q(y\\|x) on the real test images",
            "",
            "| run | " + " | ".join(heading for heading, _ in CLUSTERING.values()) + " | components used |",
            "| --- | " + " | ".join("---:" for _ in CLUSTERING) + " | ---: |",
        ]
        for run in clustered:
            values = run["clustering"]
            cells = [_format(values.get(key), fmt) for key, (_, fmt) in CLUSTERING.items()]
            lines.append(f"| {run['label']} | " + " | ".join(cells) + f" | {values['components_used']} |")
        lines.append("")

    if payload.get("not_computed"):
        lines += ["## Not computed", ""]
        reasons: dict[str, list[str]] = {}
        for name, reason in payload["not_computed"].items():
            reasons.setdefault(reason, []).append(name)
        lines += [f"- **{', '.join(names)}**: {reason}" for reason, names in reasons.items()]
        lines.append("")

    if charts:
        lines += ["## Charts", ""]
        for key, path in charts.items():
            lines += [f"![{METRICS[key][0]}]({path.relative_to(out).as_posix()})", ""]

    grids = sorted((out / "grids").glob("*.png")) if (out / "grids").is_dir() else []
    if grids:
        lines += ["## Sample grids", "", "Each row: a test image, then its translations.", ""]
        lines += [f"- [{path.stem}]({path.relative_to(out).as_posix()})" for path in grids]
        lines.append("")
    return "\n".join(lines)


def plot_metrics(payload: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Draw one grouped bar chart per metric (directions on the x axis, one bar per run); return the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    folder.mkdir(parents=True, exist_ok=True)
    runs = payload["runs"]
    directions = list(dict.fromkeys(direction for run in runs for direction in run["directions"]))
    charts = {}
    for key in present_metrics(payload):
        heading, better, _ = METRICS[key]
        figure, axes = plt.subplots(figsize=(max(4.8, 1.6 + 0.9 * len(directions) * len(runs)), 3.4))
        width = 0.8 / len(runs)
        for index, run in enumerate(runs):
            values = [_number(run["directions"].get(direction, {}).get(key)) for direction in directions]
            positions = [column + (index - (len(runs) - 1) / 2) * width for column in range(len(directions))]
            axes.bar(positions, [math.nan if value is None else value for value in values], width, label=run["label"])
        axes.set_xticks(range(len(directions)), [direction.replace("->", " → ") for direction in directions])
        axes.set_ylabel(heading)
        if key == "ndb":
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(f"{heading} ({better} is better)", fontsize="medium")
        axes.legend(fontsize="small")
        figure.tight_layout()
        path = folder / f"{key}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        charts[key] = path
    return charts


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _format(value: Any, fmt: str) -> str:
    number = _number(value)
    return "n/a" if number is None else fmt.format(number)


def _json_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
