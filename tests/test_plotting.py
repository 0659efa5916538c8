"""The labelled grid helper: labels land where a reader looks for them, and bad shapes are refused."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lesson_lib.course.plotting import show_grid, to_display  # noqa: E402


def test_show_grid_labels_rows_and_columns():
    images = torch.linspace(-1, 1, 2 * 3 * 1 * 4 * 4).view(2, 3, 1, 4, 4)
    fig = show_grid(images, row_labels=["y = 0", "y = 1"], col_labels=["t = 999", "t = 500", "t = 0"],
                    title="chains", row_title="class", col_title="timestep t", show=False)
    axes = [ax for ax in fig.axes]
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:3]] == ["t = 999", "t = 500", "t = 0"]
    assert all(ax.get_title() == "" for ax in axes[3:])
    assert [axes[0].get_ylabel(), axes[3].get_ylabel()] == ["y = 0", "y = 1"]
    assert axes[1].get_ylabel() == ""
    assert fig._suptitle.get_text() == "chains"
    assert fig._supylabel.get_text() == "class" and fig._supxlabel.get_text() == "timestep t"
    # each panel shows its own image: row 1, column 2 is the last one
    shown = axes[5].get_images()[0].get_array()
    assert torch.allclose(torch.as_tensor(shown), torch.as_tensor(to_display(images[1, 2])))
    plt.close(fig)


def test_show_grid_accepts_nested_lists():
    rows = [[torch.zeros(3, 2, 2), torch.ones(3, 2, 2)]]
    fig = show_grid(rows, show=False)
    assert len(fig.axes) == 2
    plt.close(fig)


@pytest.mark.parametrize("bad", [dict(images=torch.zeros(6, 1, 4, 4)),
                                 dict(images=torch.zeros(2, 3, 1, 4, 4), row_labels=["a"]),
                                 dict(images=torch.zeros(2, 3, 1, 4, 4), col_labels=["a", "b"])])
def test_show_grid_refuses_mismatched_input(bad):
    with pytest.raises(ValueError, match="images must have shape|row_labels|col_labels"):
        show_grid(show=False, **bad)


def test_scatter_2d_keeps_ticks_so_the_scale_can_be_read():
    from lesson_lib.course.plotting import scatter_2d

    fig, (with_ticks, without) = plt.subplots(1, 2)
    points = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    scatter_2d(with_ticks, points, lim=2.0)
    scatter_2d(without, points, lim=2.0, ticks=False)
    assert with_ticks.get_xlim() == (-2.0, 2.0) and with_ticks.get_ylim() == (-2.0, 2.0)
    assert len(with_ticks.get_xticks()) > 1 and len(with_ticks.get_yticks()) > 1
    assert len(without.get_xticks()) == 0 and len(without.get_yticks()) == 0
    plt.close(fig)
