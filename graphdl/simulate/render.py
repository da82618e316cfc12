"""Animations of rollouts: truth and prediction side by side, particles coloured by type.

* GIF through matplotlib's Pillow writer (``matplotlib.animation.PillowWriter``);
* MP4 (H.264) through ``imageio-ffmpeg``, whose wheel ships an ffmpeg binary
  (``pip install imageio-ffmpeg``);
* a PNG strip of a few frames (truth above, prediction below) for documents.

2D data are drawn as they are; 3D data are drawn in their first two coordinates.
**Shapes**: ``truth``, ``pred`` ``(K, N, D)``, ``types`` ``(N,)``.
"""

from __future__ import annotations

import numpy as np

from graphdl.errors import DataError

_COLOURS = {0: "#7f7f7f", 1: "#8c564b", 2: "#2ca02c", 3: "#111111", 4: "#9467bd", 5: "#1f77b4", 6: "#ff7f0e",
            7: "#d62728", 8: "#e377c2"}


def _colours(types: np.ndarray | None, n: int) -> list[str]:
    if types is None:
        return ["#1f77b4"] * n
    return [_COLOURS.get(int(t) % 9, "#1f77b4") for t in types]


def _figure(bounds, titles: tuple[str, str]):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2), dpi=80)
    for ax, title in zip(axes, titles):
        ax.set_xlim(bounds[0][0], bounds[0][1])
        ax.set_ylim(bounds[1][0], bounds[1][1])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title)
    fig.tight_layout()
    return fig, axes


def _bounds(truth: np.ndarray, pred: np.ndarray, bounds) -> list[list[float]]:
    if bounds is not None:
        return [list(map(float, b)) for b in bounds[:2]]
    both = np.concatenate([truth, pred]).reshape(-1, truth.shape[-1])
    lo, hi = both.min(0), both.max(0)
    pad = 0.05 * float((hi - lo).max() or 1.0)
    return [[float(lo[a] - pad), float(hi[a] + pad)] for a in range(2)]


def _frames(k: int, every: int | None, max_frames: int = 100) -> list[int]:
    step = every or max(1, -(-k // max_frames))
    return list(range(0, k, step))


def animate(path: str, truth, pred, types=None, bounds=None, *, fmt: str | None = None, fps: int = 20,
            every: int | None = None, title: str = "") -> str:
    """Write an animation of ``truth`` beside ``pred`` to ``path`` (``fmt`` gif or mp4, default from the suffix).

    ``every`` keeps one frame in ``every`` (default: at most 100 frames). Returns ``path``.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape or truth.ndim != 3 or truth.shape[-1] < 2:
        raise DataError(f"truth and prediction must both be (frames, particles, dim >= 2), found {truth.shape} and "
                        f"{pred.shape}")
    fmt = fmt or path.rsplit(".", 1)[-1].lower()
    if fmt not in ("gif", "mp4"):
        raise DataError(f"animations are gif or mp4, found `{fmt}`")
    b = _bounds(truth, pred, bounds)
    fig, axes = _figure(b, ("ground truth", "prediction" + (f" ({title})" if title else "")))
    col = _colours(None if types is None else np.asarray(types), truth.shape[1])
    dots = [ax.scatter(x[0, :, 0], x[0, :, 1], s=4, c=col) for ax, x in zip(axes, (truth, pred))]
    label = fig.text(0.5, 0.02, "", ha="center")
    frames = _frames(truth.shape[0], every)

    def draw(i: int):
        for d, x in zip(dots, (truth, pred)):
            d.set_offsets(x[i, :, :2])
        label.set_text(f"step {i + 1}")
        return (*dots, label)

    try:
        if fmt == "gif":
            from matplotlib.animation import FuncAnimation, PillowWriter

            anim = FuncAnimation(fig, draw, frames=frames, blit=False)
            anim.save(path, writer=PillowWriter(fps=fps))
        else:
            try:
                import imageio_ffmpeg
            except ImportError:
                raise DataError("MP4 output needs imageio-ffmpeg (its wheel ships ffmpeg): pip install imageio-ffmpeg; "
                                "or use --render gif") from None
            fig.canvas.draw()
            w, h = fig.canvas.get_width_height()
            w2, h2 = w - w % 2, h - h % 2  # H.264 wants even sizes
            writer = imageio_ffmpeg.write_frames(path, (w2, h2), fps=fps, macro_block_size=1,
                                                 output_params=["-loglevel", "error"])
            writer.send(None)
            for i in frames:
                draw(i)
                fig.canvas.draw()
                rgb = np.asarray(fig.canvas.buffer_rgba())[:h2, :w2, :3]
                writer.send(np.ascontiguousarray(rgb))
            writer.close()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def strip(path: str, truth, pred, types=None, bounds=None, *, panels: int = 5) -> str:
    """A PNG of ``panels`` frames spread over the rollout: truth (top row) and prediction (bottom)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    truth, pred = np.asarray(truth), np.asarray(pred)
    b = _bounds(truth, pred, bounds)
    k = truth.shape[0]
    idx = sorted({round(i * (k - 1) / max(panels - 1, 1)) for i in range(panels)})
    fig, axes = plt.subplots(2, len(idx), figsize=(2.2 * len(idx), 4.6), dpi=90, squeeze=False)
    col = _colours(None if types is None else np.asarray(types), truth.shape[1])
    for c, i in enumerate(idx):
        for r, (x, name) in enumerate(((truth, "truth"), (pred, "prediction"))):
            ax = axes[r][c]
            ax.scatter(x[i, :, 0], x[i, :, 1], s=2, c=col)
            ax.set_xlim(*b[0])
            ax.set_ylim(*b[1])
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
            if r == 0:
                ax.set_title(f"step {i + 1}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["animate", "strip"]
