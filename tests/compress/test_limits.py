"""compress.limits: sizes are bounded before allocation, with the figure in the message."""

import pytest

from compress.errors import CompressError
from compress.limits import TooLargeError, available_memory, check_allocation, element_count, human_bytes


def test_refuses_more_than_available_with_the_figure():
    with pytest.raises(TooLargeError) as err:
        check_allocation(10 ** 12, "float32", "model.dcz: tensor w", available=2 ** 30)
    text = str(err.value)
    assert text == ("model.dcz: tensor w needs 3.6 TiB (1,000,000,000,000 × float32), "
                    "more than the 1.0 GiB of memory available")


def test_accepts_what_fits_and_returns_bytes():
    assert check_allocation(1000, "int64", "x", available=2 ** 30) == 8000
    assert check_allocation(0, "float32", "x") == 0
    # Small allocations are never refused because of a misread memory figure.
    assert check_allocation(2 ** 20, "float32", "x", available=1) == 4 * 2 ** 20


def test_the_boundary_is_exact():
    limit = 2 ** 27
    assert check_allocation(limit // 4, "float32", "x", available=limit) == limit
    with pytest.raises(TooLargeError):
        check_allocation(limit // 4 + 1, "float32", "x", available=limit)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_element_counts_must_be_integers(bad):
    with pytest.raises(CompressError, match="element count"):
        check_allocation(bad, "float32", "x")


def test_element_count_checks_every_dimension():
    assert element_count([2, 3, 4], "t") == 24
    assert element_count([10 ** 6] * 4, "t") == 10 ** 24  # exact, no overflow
    for shape in ([2, -1], [2, 1.0], [True, 2], ["2"]):
        with pytest.raises(CompressError, match="non-negative integers"):
            element_count(shape, "t")


def test_available_memory_is_plausible():
    assert 2 ** 26 < available_memory() < 2 ** 50


def test_human_bytes():
    assert [human_bytes(n) for n in (5, 2048, 3 * 2 ** 20, 2 ** 30, 2 ** 41)] == [
        "5 bytes", "2.0 KiB", "3.0 MiB", "1.0 GiB", "2.0 TiB"]


def test_counts_seeds_and_float32_values_name_their_bound():
    from compress.limits import FLOAT32_MAX, MAX_SEED, TooLargeError, check_count, check_float32, check_seed

    assert check_count(3, 3, "x", "MAX_X") == 3
    with pytest.raises(TooLargeError, match=r"^layers is 4, over the bound of 3 \(MAX_X\)$"):
        check_count(4, 3, "layers", "MAX_X")
    assert check_seed(MAX_SEED) == MAX_SEED
    for bad in (-1, MAX_SEED + 1, 2 ** 70, 1.0, True, "3"):
        with pytest.raises(CompressError, match="seed"):
            check_seed(bad)
    assert check_float32(-FLOAT32_MAX, "x") == -FLOAT32_MAX
    for bad in (1e39, float("nan"), float("inf"), "1", None):
        with pytest.raises(CompressError, match="x"):
            check_float32(bad, "x")


def test_regular_file_refuses_fifos_and_devices_without_opening_them(tmp_path):
    import os

    from compress.limits import NotRegularFileError, regular_file

    (tmp_path / "f").write_text("x")
    assert regular_file(tmp_path / "f").st_size == 1
    assert regular_file(tmp_path, directory_ok=True)
    os.mkfifo(tmp_path / "p")  # opening it would block: the check must only stat it
    with pytest.raises(NotRegularFileError, match=r"^--plan .*/p is a FIFO \(named pipe\), not a regular file$"):
        regular_file(tmp_path / "p", "--plan")
    with pytest.raises(NotRegularFileError, match="/dev/zero is a character device, not a regular file or directory"):
        regular_file("/dev/zero", directory_ok=True)
    with pytest.raises(NotRegularFileError, match="is a directory"):
        regular_file(tmp_path)
    with pytest.raises(FileNotFoundError):
        regular_file(tmp_path / "missing")


def test_json_depth_is_counted_without_recursion():
    from compress.limits import json_depth

    assert json_depth(1) == 0 and json_depth([]) == 1 and json_depth({"a": [1, {"b": []}]}) == 4
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep, limit=64) == 65  # stops once past the limit
