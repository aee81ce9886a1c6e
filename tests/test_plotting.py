"""The figures of anomseg.plotting, checked on what they show: their panels,
titles, labels, colour bars, and the colours drawn at each pixel."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.contour import ContourSet

from anomseg.plotting import most_anomalous_slice, plot_anomaly_overview

# pyplot picks its backend when it draws the first figure
matplotlib.use("Agg")

COLUMNS = ["input", "anomaly map", "predicted mask", "ground truth"]
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def samples():
    """Two 2D samples, 12 x 16, whose masks sit off-centre, so that a panel
    drawn flipped or transposed shows."""
    images = np.random.default_rng(0).random((2, 12, 16)).astype(np.float32)
    masks = np.zeros(images.shape, bool)
    masks[0, 1:4, 2:7] = True
    masks[1, 8:11, 10:15] = True
    truths = np.zeros(images.shape, bool)
    truths[0, 2:5, 3:6] = True
    truths[1, 7:9, 11:13] = True
    maps = 0.2 * images + masks
    return images, maps, masks, truths


def _grid(figure, n_rows, n_columns):
    """The panels, row by row (plt.subplots adds them first, in that order)."""
    panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == n_rows * n_columns
    return np.array(panels, dtype=object).reshape(n_rows, n_columns)


def _drawn(figure, ax):
    """The colour drawn at the centre of each pixel of the image of ``ax``,
    as an array of RGB rows and columns."""
    figure.canvas.draw()
    canvas = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    rows, columns = ax.images[0].get_array().shape
    c, r = np.meshgrid(np.arange(columns), np.arange(rows))
    x, y = ax.transData.transform(np.column_stack([c.ravel(), r.ravel()])).T
    # display coordinates start at the bottom left, the canvas at the top left
    drawn = canvas[canvas.shape[0] - 1 - y.astype(int), x.astype(int)]
    return drawn.reshape(rows, columns, 3)


def test_one_row_per_sample_and_a_titled_column_per_panel(samples):
    figure = plot_anomaly_overview(*samples, titles=["sub-01", "sub-02"])
    grid = _grid(figure, 2, 4)
    assert [ax.get_title() for ax in grid[0]] == COLUMNS
    assert [ax.get_title() for ax in grid[1]] == [""] * 4
    assert [ax.get_ylabel() for ax in grid[:, 0]] == ["sub-01", "sub-02"]
    assert all(ax.get_ylabel() == "" for ax in grid[:, 1:].ravel())
    assert all(len(ax.get_xticks()) == len(ax.get_yticks()) == 0 for ax in grid.ravel())


def test_rows_are_labelled_by_number_without_titles(samples):
    grid = _grid(plot_anomaly_overview(*samples), 2, 4)
    assert [ax.get_ylabel() for ax in grid[:, 0]] == ["sample 0", "sample 1"]


def test_without_truths_there_is_no_ground_truth_column(samples):
    images, maps, masks, _ = samples
    grid = _grid(plot_anomaly_overview(images, maps, masks), 2, 3)
    assert [ax.get_title() for ax in grid[0]] == COLUMNS[:3]


def test_panels_show_the_data_rotated_a_quarter_turn(samples):
    """Each panel shows its array turned 90 degrees counter-clockwise (the
    display orientation of canonical NIfTI slices), in its colour map."""
    grid = _grid(plot_anomaly_overview(*samples), 2, 4)
    for row, arrays in enumerate(zip(*samples)):
        for ax, array, cmap in zip(grid[row], arrays, ["gray", "inferno", "gray", "gray"]):
            [image] = ax.images
            np.testing.assert_array_equal(image.get_array(), np.rot90(array))
            assert image.get_cmap().name == cmap
            assert image.get_interpolation() == "nearest"


@pytest.mark.parametrize("column", [2, 3], ids=["predicted mask", "ground truth"])
def test_masks_are_drawn_white_where_set_and_black_elsewhere(samples, column):
    figure = plot_anomaly_overview(*samples)
    grid = _grid(figure, 2, 4)
    for row in range(2):
        shown = np.rot90(samples[column][row])
        drawn = _drawn(figure, grid[row, column])
        assert (drawn[shown] == WHITE).all()
        assert (drawn[~shown] == BLACK).all()


def test_the_map_is_drawn_brightest_where_it_is_highest(samples):
    """inferno runs from black to pale yellow: the map's highest pixels are
    drawn brighter than its lowest."""
    figure = plot_anomaly_overview(*samples)
    maps, masks = samples[1], samples[2]
    for row, ax in enumerate(_grid(figure, 2, 4)[:, 1]):
        brightness = _drawn(figure, ax).astype(int).sum(axis=-1)
        shown, high = np.rot90(maps[row]), np.rot90(masks[row])
        assert brightness[shown == shown.max()].min() > brightness[shown == shown.min()].max()
        assert brightness[high].min() > brightness[~high].max()


def test_each_map_has_its_colour_bar(samples):
    figure = plot_anomaly_overview(*samples)
    grid = _grid(figure, 2, 4)
    bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2
    for row, ax in enumerate(grid[:, 1]):
        [image] = ax.images
        assert image.colorbar is not None and image.colorbar.ax is bars[row]
        assert image.colorbar.mappable is image
        assert image.colorbar.vmin == samples[1][row].min()
        assert image.colorbar.vmax == samples[1][row].max()
    assert all(ax.images[0].colorbar is None for ax in grid[:, [0, 2, 3]].ravel())


def test_the_threshold_is_outlined_on_the_map(samples):
    """A cyan contour at 0.5 of ``map > threshold`` runs along the pixel
    edges around the pixels above the threshold, and only on the map."""
    maps = samples[1]
    grid = _grid(plot_anomaly_overview(*samples, threshold=0.5), 2, 4)
    for row, ax in enumerate(grid[:, 1]):
        [contour] = ax.collections
        assert isinstance(contour, ContourSet)
        assert list(contour.levels) == [0.5]
        np.testing.assert_array_equal(contour.get_edgecolor(), [[0, 1, 1, 1]])
        rows, columns = np.nonzero(np.rot90(maps[row] > 0.5))
        [path] = contour.get_paths()
        (x0, y0), (x1, y1) = path.get_extents().get_points()
        assert (x0, x1) == (columns.min() - 0.5, columns.max() + 0.5)
        assert (y0, y1) == (rows.min() - 0.5, rows.max() + 0.5)
    assert all(len(ax.collections) == 0 for ax in grid[:, [0, 2, 3]].ravel())


def test_no_threshold_no_contour(samples):
    grid = _grid(plot_anomaly_overview(*samples), 2, 4)
    assert all(len(ax.collections) == 0 for ax in grid.ravel())


@pytest.fixture
def volumes():
    """One 10 x 12 x 6 volume whose ground truth is largest at slice 4 of
    the last axis and whose predicted mask is largest at slice 1."""
    image = np.random.default_rng(1).random((10, 12, 6)).astype(np.float32)
    truth = np.zeros(image.shape, bool)
    truth[2:4, 3:5, 2] = True
    truth[2:6, 3:9, 4] = True
    mask = np.zeros(image.shape, bool)
    mask[1:8, 1:8, 1] = True
    mask[2:4, 3:5, 4] = True
    return [image], [image + mask], [mask], [truth]


@pytest.mark.parametrize(
    "with_truth, slice_indices, shown",
    [(True, None, 4), (False, None, 1), (True, [2], 2)],
    ids=["largest-truth", "largest-mask", "given"],
)
def test_volumes_are_shown_at_one_labelled_slice(volumes, with_truth, slice_indices, shown):
    """By default at the slice of largest ground truth (else of largest
    predicted mask), or at the one given; the row label names it."""
    images, maps, masks, truths = volumes
    figure = plot_anomaly_overview(
        images, maps, masks, truths if with_truth else None, slice_indices=slice_indices
    )
    arrays = [images, maps, masks, truths][: 3 + with_truth]
    grid = _grid(figure, 1, len(arrays))
    assert grid[0, 0].get_ylabel() == f"sample 0\nslice {shown}"
    for ax, [array] in zip(grid[0], arrays):
        np.testing.assert_array_equal(ax.images[0].get_array(), np.rot90(array[..., shown]))


def test_volumes_are_sliced_along_the_given_axis(volumes):
    images, maps, masks, truths = volumes
    truths = [np.moveaxis(truths[0], -1, 0)]
    moved = [np.moveaxis(a[0], -1, 0) for a in (images, maps, masks)]
    grid = _grid(plot_anomaly_overview(*[[m] for m in moved], truths, axis=0), 1, 4)
    for ax, array in zip(grid[0], [*moved, truths[0]]):
        np.testing.assert_array_equal(ax.images[0].get_array(), np.rot90(array[4]))


def test_most_anomalous_slice():
    mask = np.zeros((5, 6, 7), bool)
    mask[1, :3, 2] = True  # 3 pixels in slice 2 of the last axis
    mask[2:4, 4, 5] = True  # 2 pixels in slice 5
    assert most_anomalous_slice(mask) == 2
    assert most_anomalous_slice(mask, axis=0) == 1
    assert most_anomalous_slice(mask, axis=1) == 4
    assert most_anomalous_slice(np.zeros((4, 4, 4))) == 0


def test_the_demo_figure_shows_each_patient_at_its_largest_lesion(tmp_path, monkeypatch, capsys):
    """``anomseg demo`` draws, for each embedded patient, its FLAIR, its map
    with a colour bar, the mask it wrote and the ground truth, at the slice
    of largest lesion area."""
    import nibabel

    from anomseg.cli import main
    from anomseg.datasets import load_demo_mslub

    saved = []
    savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "savefig",
        lambda figure, *args, **kwargs: saved.append(figure) or savefig(figure, *args, **kwargs),
    )
    assert main(["demo", "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    [figure] = saved
    data = load_demo_mslub()
    grid = _grid(figure, len(data.subjects), 4)
    assert [ax.get_title() for ax in grid[0]] == COLUMNS
    for row, subject in enumerate(data.subjects):
        truth = data.masks[row]
        largest = int(np.argmax(truth.sum(axis=(0, 1))))
        assert grid[row, 0].get_ylabel() == f"{subject}\nslice {largest}"
        anomaly_map, written = (
            nibabel.load(tmp_path / f"{subject}_{kind}.nii.gz").get_fdata()
            for kind in ("anomaly_map", "mask")
        )
        arrays = [np.ma.getdata(data.images[row]), anomaly_map, written > 0, truth]
        for ax, array in zip(grid[row], arrays):
            np.testing.assert_allclose(ax.images[0].get_array(), np.rot90(array[..., largest]))
        assert grid[row, 1].images[0].colorbar is not None
        assert written[..., largest].any()
