"""The learning curve of a run: losses per epoch and the monitored validation metric."""

from __future__ import annotations

import os


def learning_curve(history: list[dict], monitor: str, path: str | os.PathLike, best_epoch: int | None = None,
                   title: str = "") -> None:
    """Write ``learning_curve.png``: train/val loss (left) and val ``monitor`` (right), by epoch."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(epochs, [h["train"]["loss"] for h in history], label="train loss")
    seen = [h for h in history if h.get("val")]  # epochs with a validation pass (see `eval_every`)
    if any("loss" in h["val"] for h in seen):
        ax1.plot([h["epoch"] for h in seen], [h["val"].get("loss", float("nan")) for h in seen], label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    if all(h["train"]["loss"] > 0 for h in history):
        ax1.set_yscale("log")
    ax1.legend()
    vals = [h["val"].get(monitor, float("nan")) for h in seen]
    ax2.plot([h["epoch"] for h in seen], vals, color="tab:green", label=f"val {monitor}")
    if vals and all(v > 0 for v in vals) and max(vals) > 10 * min(vals):
        ax2.set_yscale("log")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(monitor)
    if best_epoch is not None:
        for ax in (ax1, ax2):
            ax.axvline(best_epoch, color="gray", linestyle=":", label=f"best epoch {best_epoch}")
        ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


__all__ = ["learning_curve"]
