"""Loss records of a run: a CSV row per iteration and PNG loss curves drawn from it."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)

TOTALS = ("discriminator_total", "generator_total")


class LossLog:
    """Appends one row per iteration to ``losses.csv``; columns are fixed by the first row written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._columns: list[str] | None = None
        if path.is_file():
            with path.open(newline="") as file:
                header = next(csv.reader(file), None)
            self._columns = header or None

    def truncate_after(self, iteration: int) -> None:
        """Drop rows past ``iteration`` (left by a run that stopped after its last checkpoint)."""
        if not self.path.is_file():
            return
        with self.path.open(newline="") as file:
            rows = list(csv.DictReader(file))
        kept = [row for row in rows if int(row["iteration"]) <= iteration]
        if len(kept) == len(rows):
            return
        with self.path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(kept)

    def append(self, row: dict[str, float | int | str]) -> None:
        new_file = self._columns is None
        if new_file:
            self._columns = list(row)
        with self.path.open("a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self._columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)


def read_losses(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Return each loss column of ``losses.csv`` as (iteration, value) pairs, blanks skipped."""
    series: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            iteration = int(row["iteration"])
            for column, value in row.items():
                if column in ("iteration", "seconds") or column.startswith(("lr/", "temperature")) or value == "":
                    continue
                series.setdefault(column, []).append((iteration, float(value)))
    return series


def plot_losses(csv_path: Path, folder: Path) -> list[Path]:
    """Draw the discriminator and generator totals and every loss term as PNG files in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    if not csv_path.is_file():
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for column, points in read_losses(csv_path).items():
        iterations = [point[0] for point in points]
        values = [point[1] for point in points]
        figure, axes = pyplot.subplots(figsize=(6, 3.5), dpi=100)
        axes.plot(iterations, values, linewidth=0.8, alpha=0.4 if len(values) > 50 else 1.0, label="per iteration")
        if len(values) > 50:
            window = max(len(values) // 50, 5)
            smooth = [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]
            axes.plot(iterations, smooth, linewidth=1.5, label=f"mean of last {window}")
            axes.legend(loc="upper right", fontsize=8)
        axes.set_title(column)
        axes.set_xlabel("iteration")
        axes.set_ylabel("weighted loss")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        path = folder / f"{column.replace('/', '_')}.png"
        figure.savefig(path)
        pyplot.close(figure)
        written.append(path)
    return written
