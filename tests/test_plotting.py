"""The figures of anomseg.plotting, checked on what they show: their panels,
titles, labels, colour bars, and the colours drawn at each pixel."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.contour import ContourSet

from anomseg.plotting import (
    lesion_point,
    most_anomalous_slice,
    plot_anomaly_overview,
    plot_orthogonal_views,
    plot_overlay,
    plot_scan_figure,
)

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
    """A green contour at 0.5 of ``map > threshold`` runs along the pixel
    edges around the pixels above the threshold, and only on the map."""
    maps = samples[1]
    grid = _grid(plot_anomaly_overview(*samples, threshold=0.5), 2, 4)
    for row, ax in enumerate(grid[:, 1]):
        [contour] = ax.collections
        assert isinstance(contour, ContourSet)
        assert list(contour.levels) == [0.5]
        np.testing.assert_array_equal(contour.get_edgecolor(), [[0, 1, 0, 1]])
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
    """``anomseg demo`` draws, for each embedded patient, at the slice of
    largest lesion area: its FLAIR, its map with a colour bar and the
    threshold's contour, and the mask it wrote and the ground truth outlined
    over the FLAIR; the title names the method and the healthy FPR, and
    each row its Dice (that of the mask written) and its threshold."""
    import re

    import nibabel

    from anomseg.cli import main
    from anomseg.datasets import load_demo_mslub
    from anomseg.metrics import dice_score

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
    assert figure.get_suptitle().startswith(
        "FlairThreshold (Meissen et al. 2021), mask at healthy FPR 0.01"
    )
    data = load_demo_mslub()
    grid = _grid(figure, len(data.subjects), 3)
    assert [ax.get_title() for ax in grid[0]] == ["input", "anomaly map", "mask and truth"]
    assert [t.get_text() for t in grid[0, 2].get_legend().get_texts()] == [
        "predicted mask",
        "ground truth",
    ]
    for row, subject in enumerate(data.subjects):
        truth = data.masks[row]
        largest = int(np.argmax(truth.sum(axis=(0, 1))))
        anomaly_map, written = (
            nibabel.load(tmp_path / f"{subject}_{kind}.nii.gz").get_fdata()
            for kind in ("anomaly_map", "mask")
        )
        label = re.fullmatch(
            rf"{subject}\nDice (\d\.\d{{3}}), threshold (\S+)\nslice {largest}",
            grid[row, 0].get_ylabel(),
        )
        assert label, grid[row, 0].get_ylabel()
        assert float(label[1]) == round(dice_score(truth, written > 0), 3)
        threshold = float(label[2])
        flair = np.ma.getdata(data.images[row])[..., largest]
        for ax, array in zip(grid[row], [flair, anomaly_map[..., largest], flair]):
            np.testing.assert_allclose(ax.images[0].get_array(), np.rot90(array))
        assert grid[row, 1].images[0].colorbar is not None
        # the map's contour, at the threshold the row names (to its 3 digits)
        [contour] = grid[row, 1].collections
        assert tuple(contour.get_edgecolor()[0]) == (0, 1, 0, 1)
        shown = np.rot90(anomaly_map[..., largest])
        near = np.isclose(shown, threshold, rtol=1e-3)
        assert ((shown > threshold) == np.rot90(written[..., largest] > 0))[~near].all()
        # the mask written and the truth, outlined over the FLAIR
        outlines = grid[row, 2].collections
        assert [tuple(c.get_edgecolor()[0][:3]) for c in outlines] == [
            matplotlib.colors.to_rgb(c) for c in ("orangered", "cyan")
        ]
        for outline, outlined in zip(outlines, [written > 0, truth]):
            _check_outline(outline, np.rot90(outlined[..., largest]))


# -- plot_overlay, plot_orthogonal_views, plot_scan_figure ---------------------------
def _check_outline(contour, shown):
    """Every vertex of the contour lies on a pixel edge between a pixel of
    ``shown`` (as drawn: rows down, columns across) and one outside it,
    and the outline spans the pixels' edges."""
    vertices = np.concatenate([path.vertices for path in contour.get_paths()])
    padded = np.pad(shown, 1)
    for x, y in vertices:
        if float(x).is_integer():  # on a horizontal edge: pixels above and below
            pair = (
                padded[int(np.floor(y)) + 1, int(x) + 1],
                padded[int(np.ceil(y)) + 1, int(x) + 1],
            )
        else:
            assert float(y).is_integer(), (x, y)
            pair = (
                padded[int(y) + 1, int(np.floor(x)) + 1],
                padded[int(y) + 1, int(np.ceil(x)) + 1],
            )
        assert sorted(pair) == [False, True], (x, y)
    rows, columns = np.nonzero(shown)
    (x0, y0), (x1, y1) = vertices.min(axis=0), vertices.max(axis=0)
    assert (x0, x1) == (columns.min() - 0.5, columns.max() + 0.5)
    assert (y0, y1) == (rows.min() - 0.5, rows.max() + 0.5)


@pytest.fixture
def slice_2d():
    """A 12 x 16 slice whose mask touches the border and whose truth has
    two parts."""
    image = np.random.default_rng(2).random((12, 16))
    mask = np.zeros(image.shape, bool)
    mask[0:3, 2:6] = True
    truth = np.zeros(image.shape, bool)
    truth[6:9, 8:12] = True
    truth[10, 14] = True
    return image, mask, truth


def test_the_overlay_outlines_the_mask_and_the_truth_along_pixel_edges(slice_2d):
    image, mask, truth = slice_2d
    ax = plot_overlay(image, mask, truth)
    [shown] = ax.images
    np.testing.assert_array_equal(shown.get_array(), np.rot90(image))
    assert shown.get_cmap().name == "gray"
    mask_outline, truth_outline = ax.collections
    assert isinstance(mask_outline, ContourSet) and isinstance(truth_outline, ContourSet)
    assert matplotlib.colors.to_rgb(mask_outline.get_edgecolor()[0]) == matplotlib.colors.to_rgb(
        "orangered"
    )
    assert matplotlib.colors.to_rgb(truth_outline.get_edgecolor()[0]) == matplotlib.colors.to_rgb(
        "cyan"
    )
    _check_outline(mask_outline, np.rot90(mask))
    _check_outline(truth_outline, np.rot90(truth))
    # the mask on the image's border is closed there: its outline is one loop
    [path] = mask_outline.get_paths()
    np.testing.assert_array_equal(path.vertices[0], path.vertices[-1])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "predicted mask",
        "ground truth",
    ]
    assert len(ax.get_xticks()) == len(ax.get_yticks()) == 0


def test_no_mask_no_outline(slice_2d):
    image, mask, _ = slice_2d
    ax = plot_overlay(image, np.zeros_like(mask), None)
    assert len(ax.collections) == 0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["predicted mask"]
    ax = plot_overlay(image, legend=True)
    assert len(ax.collections) == 0 and ax.get_legend() is None
    ax = plot_overlay(image, None, mask, legend=False)
    [outline] = ax.collections
    _check_outline(outline, np.rot90(mask))
    assert ax.get_legend() is None


def test_the_overlay_draws_on_the_axes_given_with_its_aspect(slice_2d):
    _, (left, right) = plt.subplots(1, 2)
    assert plot_overlay(slice_2d[0], slice_2d[1], ax=right, aspect=2.0) is right
    assert len(left.images) == 0 and right.get_aspect() == 2.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image": np.zeros((3, 4, 5))}, "'image' must be a 2D slice"),
        ({"image": np.zeros((3, 4)), "mask": np.zeros((4, 3))}, "'mask' must have the shape"),
        ({"image": np.zeros((3, 4)), "truth": np.zeros(3)}, "'truth' must have the shape"),
    ],
)
def test_the_overlay_refuses_what_it_cannot_draw(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_overlay(**kwargs)


@pytest.fixture
def volume():
    """A 10 x 12 x 8 volume whose mask and truth hold most at x = 3, y = 7,
    z = 5."""
    image = np.random.default_rng(3).random((10, 12, 8)) + 1
    mask = np.zeros(image.shape, bool)
    mask[2:5, 6:9, 5] = True
    truth = np.zeros(image.shape, bool)
    truth[3, 7, 4:7] = True
    return image, mask, truth


def test_lesion_point(volume):
    _, mask, truth = volume
    assert lesion_point(mask, truth) == (3, 7, 5)
    assert lesion_point(None, truth) == (3, 7, 4)
    assert lesion_point(np.zeros((10, 12, 8)), None) == (5, 6, 4)


def test_orthogonal_views_cut_through_the_lesion(volume):
    image, mask, truth = volume
    figure = plot_orthogonal_views(image, mask, truth, voxel_size=(1.0, 1.5, 3.0))
    sagittal, coronal, axial = figure.axes
    assert [ax.get_title() for ax in figure.axes] == [
        "sagittal (x = 3)",
        "coronal (y = 7)",
        "axial (z = 5)",
    ]
    slices = [image[3], image[:, 7], image[..., 5]]
    masks = [mask[3], mask[:, 7], mask[..., 5]]
    for ax, shown, outlined in zip(figure.axes, slices, masks):
        np.testing.assert_array_equal(ax.images[0].get_array(), np.rot90(shown))
        _check_outline(ax.collections[0], np.rot90(outlined))
    # a voxel drawn as tall (vertical size over horizontal) as it is
    assert [ax.get_aspect() for ax in figure.axes] == [3.0 / 1.5, 3.0 / 1.0, 1.5 / 1.0]
    assert sagittal.get_legend() is None and coronal.get_legend() is None
    assert axial.get_legend() is not None


def test_orthogonal_views_through_a_point_given(volume):
    image, mask, _ = volume
    figure = plot_orthogonal_views(image, mask, point=(0, 1, 2))
    assert [ax.get_title() for ax in figure.axes] == [
        "sagittal (x = 0)",
        "coronal (y = 1)",
        "axial (z = 2)",
    ]
    # no mask in these slices: no outline
    assert all(len(ax.collections) == 0 for ax in figure.axes)
    with pytest.raises(ValueError, match="'point' must be a voxel"):
        plot_orthogonal_views(image, point=(0, 12, 2))


def test_the_scan_figure_shows_the_slices_of_most_lesion_and_orthogonal_views(volume):
    image, mask, truth = volume
    image[:6] = 0  # background on the right, outside the zoom
    figure = plot_scan_figure(image, mask, truth, title="scan\nmethod", n_slices=2)
    assert figure.get_suptitle() == "scan\nmethod"
    axes = [ax for ax in figure.axes if ax.axison]
    assert [ax.get_title() for ax in axes] == [
        "axial (z = 4): 1 voxels outlined",
        "axial (z = 5): 9 voxels outlined",
        "sagittal (x = 3)",
        "coronal (y = 7)",
        "axial (z = 5)",
    ]
    np.testing.assert_array_equal(axes[0].images[0].get_array(), np.rot90(image[..., 4]))
    _check_outline(axes[1].collections[0], np.rot90(mask[..., 5]))
    # zoomed on the non-zero voxels (x from 6) with a margin of 3; the data
    # drawn is the whole slice's
    for ax in axes[0], axes[1], axes[3], axes[4]:
        assert ax.get_xlim() == (2.5, 9.5)
    assert axes[2].get_xlim() == (-0.5, 11.5)
    assert axes[2].images[0].get_array().shape == (8, 12)


def test_without_lesion_the_scan_figure_spreads_its_slices(volume):
    image, _, _ = volume
    figure = plot_scan_figure(image, np.zeros(image.shape, bool))
    titles = [ax.get_title() for ax in figure.axes if ax.axison][:3]
    assert titles == [f"axial (z = {z}): 0 voxels outlined" for z in (2, 4, 5)]
