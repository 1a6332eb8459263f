"""Click parameter types that validate numbers at the edge (compress/cli/params.py)."""

import click
import pytest


def test_sparsity_option_takes_lambda_auto_or_a_budget():
    from compress.cli.params import SPARSITY
    from compress.sparsity import Budget, SparsityConfig

    assert SPARSITY.convert("1e-4", None, None) == 1e-4
    auto = SPARSITY.convert("auto", None, None)
    assert isinstance(auto, SparsityConfig) and auto.mode == "proximal" and auto.strength == "auto"
    assert SPARSITY.convert("budget:2", None, None).strength == Budget(2.0)
    for bad in ("nan", "-1", "budget:0", "budget:inf", "lots"):
        with pytest.raises(click.BadParameter):
            SPARSITY.convert(bad, None, None)


def test_round_to_option_takes_a_whole_number_or_auto():
    from compress.cli.params import ROUND_TO

    assert ROUND_TO.convert("16", None, None) == 16 and ROUND_TO.convert(8, None, None) == 8
    assert ROUND_TO.convert(" AUTO ", None, None) == "auto"
    for bad in ("0", "-8", "1.5", "nan", "sixteen"):
        with pytest.raises(click.BadParameter):
            ROUND_TO.convert(bad, None, None)
