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
