"""Small plotting helpers shared by the lessons (matplotlib only).

Images everywhere in the course are tensors in [-1, 1] of shape (C, H, W) or (N, C, H, W).
"""

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_display(image):
    """A (C, H, W) tensor in [-1, 1] as an (H, W, C) or (H, W) numpy array in [0, 1]."""
    x = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    return x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)


def show_images(images, nrow=8, titles=None, row_labels=None, figsize=None, suptitle=None):
    """Show a batch of images (N, C, H, W) in [-1, 1] as a grid with optional titles."""
    n = len(images)
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrows, ncol, figsize=figsize or (1.6 * ncol, 1.6 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        if i < n:
            ax.imshow(to_display(images[i]), cmap="gray", vmin=0, vmax=1)
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize=9)
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].set_ylabel(label)
    if suptitle:
        fig.suptitle(suptitle)
    plt.tight_layout()
    plt.show()


def show_grid(images, row_labels=None, col_labels=None, title=None, row_title=None, col_title=None,
              figsize=None, show=True):
    """Show a labelled grid: ``images`` of shape (rows, cols, C, H, W) in [-1, 1], one label per
    row (at its left) and per column (above the top row). ``row_title`` / ``col_title`` name what
    the rows and columns are ("class", "timestep t"). ``show=False`` returns the figure instead of
    showing it (for tests, or to save it); shown, it returns None, so a notebook does not draw it twice."""
    if not isinstance(images, torch.Tensor):
        images = torch.stack([torch.stack(list(row)) for row in images])
    if images.dim() != 5:
        raise ValueError(f"images must have shape (rows, cols, C, H, W), got {tuple(images.shape)}; "
                         "reshape a batch with images.view(rows, cols, *images.shape[1:])")
    rows, cols = images.shape[:2]
    for name, labels, n in (("row_labels", row_labels, rows), ("col_labels", col_labels, cols)):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} has {len(labels)} entries but the grid has {n}; give one label each")
    fig, axes = plt.subplots(rows, cols, figsize=figsize or (1.1 * cols + 1.2, 1.1 * rows + 0.8),
                             squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(to_display(images[r, c]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if r == 0 and col_labels is not None:
                ax.set_title(str(col_labels[c]), fontsize=9)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(str(row_labels[r]), fontsize=9, rotation=0, ha="right", va="center")
    if row_title:
        fig.supylabel(row_title)
    if col_title:
        fig.supxlabel(col_title)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if not show:
        return fig
    plt.show()


def load_sample_photo(size=128):
    """The portrait of Grace Hopper that ships with matplotlib, centre-cropped to a square,
    resized to ``size`` x ``size`` and scaled to [-1, 1]: a (3, size, size) float32 tensor."""
    import matplotlib.cbook as cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB")
    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    img = img.resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()
    return x / 127.5 - 1.0


def scatter_2d(ax, points, title=None, color="C0", lim=3.0, s=1.0, ticks=True):
    """A scatter plot of 2-D points (N, 2) on the fixed square [-lim, lim]^2, so that panels
    compare at a glance. The axes keep their ticks, so the data's scale can be read off;
    ``ticks=False`` removes them (for a row of thumbnails whose scale is stated elsewhere)."""
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=s, alpha=0.5, color=color, linewidths=0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if ticks:
        ax.tick_params(labelsize=8)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
