"""CAMRL's transfer-matrix log: every change of ``B`` and of the order, as CSV rows and a heatmap PNG."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

__all__ = ["TransferLog", "plot_transfer"]


class TransferLog:
    """``<folder>/transfer.csv`` (one row per change: update, order, ``B`` row-major) and ``<folder>/transfer.png``
    (the newest ``B``; the figure is kept and redrawn, ~0.1 s a change instead of ~0.6 s for a new one)."""

    def __init__(self, folder: Path, num_tasks: int, names: list[str] | None = None):
        self.folder, self.num_tasks = Path(folder), num_tasks
        self.names = names or [str(t) for t in range(num_tasks)]
        self._figure: tuple[Any, Any, Any] | None = None
        self.changes = 0

    def write(self, update: int, B: torch.Tensor, order: torch.Tensor, heatmap_every: int = 1) -> None:
        """Append a CSV row; redraw the PNG at every ``heatmap_every``-th call (the first included; 0: never). The
        first write of a process (a resumed run) first drops rows of ``update`` or later that an interrupted process
        wrote after its last checkpoint, so the CSV has one row per change."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path, T = self.folder / "transfer.csv", self.num_tasks
        new = not path.is_file()
        if not new and self.changes == 0:  # a resumed run: drop rows an earlier process wrote past the checkpoint
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
            kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) < update]
            if len(kept) < len(rows):
                with path.open("w", newline="") as f:
                    csv.writer(f).writerows(kept)
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["update", "order", *[f"B_{i}_{j}" for i in range(T) for j in range(T)]])
            writer.writerow([update, " ".join(map(str, order.tolist())), *[f"{v:.6g}" for v in B.flatten().tolist()]])
        self.changes += 1
        if heatmap_every == 0 or (self.changes - 1) % heatmap_every:
            return
        title = f"B at update {update}; order {' '.join(self.names[i] for i in order.tolist())}"
        if self._figure is None:
            self._figure = _heatmap(B, self.names)
        fig, image, text = self._figure
        image.set_data(B.numpy())
        image.set_clim(0.0, max(1.0, float(B.max())))
        text.set_text(title)
        fig.savefig(self.folder / "transfer.png", dpi=80)


def _heatmap(B: torch.Tensor, names: list[str]) -> tuple[Any, Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    T = B.shape[0]
    fig = Figure(figsize=(1.6 + 0.45 * T, 1.2 + 0.45 * T))
    ax = fig.add_subplot()
    image = ax.imshow(B.numpy(), cmap="viridis", vmin=0.0, vmax=max(1.0, float(B.max())))
    ax.set_xticks(range(T), names, rotation=90, fontsize=7)
    ax.set_yticks(range(T), names, fontsize=7)
    ax.set_xlabel("student s")
    ax.set_ylabel("teacher t")
    fig.colorbar(image, ax=ax)
    text = ax.set_title("", fontsize=8)
    fig.tight_layout()
    return fig, image, text


def plot_transfer(B: torch.Tensor, order: torch.Tensor, path: Path, title: str = "",
                  names: list[str] | None = None) -> None:
    """One heatmap of ``B [T, T]`` (row: teacher, column: student) with the order, to ``path`` (reports)."""
    names = names or [str(t) for t in range(B.shape[0])]
    fig, _, text = _heatmap(B, names)
    text.set_text(f"{title} order {' '.join(names[i] for i in order.tolist())}".strip())
    fig.savefig(path, dpi=80)
