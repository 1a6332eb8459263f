"""`compress info`: --json prints one object with integer counts."""

import json

from click.testing import CliRunner

from compress.cli import main


def run(args, **kw):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kw)


def test_info_json_is_one_object_with_integer_counts():
    result = run(["info", "vgg19", "--json"])
    assert result.exit_code == 0
    obj = json.loads(result.stdout)
    assert obj["params"] == 20_035_018 and obj["macs"] == 398_136_320 and obj["flops"] == 2 * obj["macs"]
    assert all(isinstance(obj[k], int) for k in ("params", "macs", "flops"))
