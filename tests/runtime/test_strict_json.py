"""The one bounded, strict JSON reader: every refusal is one line naming the file and the problem."""

import json
import os

import pytest

from compress.runtime.errors import InputFileError
from compress.runtime.strict_json import nesting_depth, parse_json, read_json
from hostile_support import deadline


def test_a_plain_document_reads_back(tmp_path):
    doc = {"widths": {"conv": {"out_channels": 4}}, "classes": ["a", "[b]", "{c"], "x": 1.5e-3, "n": None}
    (tmp_path / "m.json").write_text(json.dumps(doc))
    assert read_json(tmp_path / "m.json", "model.json") == doc
    assert parse_json("\ufeff[1]", "bom") == [1]  # an editor's byte-order mark is not content


@pytest.mark.parametrize("text,words", [
    ("[" * 100_000 + "]" * 100_000, "nests JSON deeper than 64 levels"),
    ('{"a": 1, "a": 2}', "key 'a' appears twice"),
    ('{"a": {"b": [1, NaN]}}', "a.b[1] is nan"),
    ('{"t": -Infinity}', "t is -inf"),
    ('{"t": 1e999}', "t is inf"),
    ('{"a": ', "is not valid JSON"),
])
def test_refusals_name_the_problem(tmp_path, text, words):
    (tmp_path / "p.json").write_text(text)
    with pytest.raises(InputFileError) as err:
        read_json(tmp_path / "p.json", "plan")
    assert words in str(err.value) and "p.json" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_depth_counts_brackets_outside_strings_only():
    assert nesting_depth('{"a": "[[[[{{{{", "b": [[1]]}') == 3
    assert nesting_depth('["\\"[[[", [2]]') == 2
    assert parse_json("[" * 64 + "]" * 64, "x", max_depth=64) is not None


def test_an_unterminated_string_of_escaped_quotes_is_refused_at_once():
    """1 MB of quote-backslash pairs after a bracket: the string pattern used to retry at every quote
    (quadratic, about an hour at this size); now the depth scan ends in one pass and the parser refuses
    the text."""
    hostile = "[" + '"\\' * 500_000
    assert nesting_depth('["open [[[') == 1
    with deadline(30), pytest.raises(InputFileError, match="metadata is not valid JSON"):
        parse_json(hostile, "metadata", max_bytes=2**20)


def test_size_and_encoding_are_checked_before_parsing(tmp_path):
    (tmp_path / "big.json").write_text("[" + " " * 2000 + "]")
    with pytest.raises(InputFileError, match="big.json is 2.0 KiB, above the bound of 1.0 KiB"):
        read_json(tmp_path / "big.json", "model.json", max_bytes=1024)
    (tmp_path / "latin.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(InputFileError, match="not UTF-8 text \\(byte 0xe9 at offset 13\\)"):
        read_json(tmp_path / "latin.json")


def test_non_regular_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)  # opening a FIFO for reading blocks until a writer comes: it must never be opened
    with pytest.raises(InputFileError, match="plan.json is a FIFO \\(named pipe\\), not a regular file"):
        read_json(fifo, "plan")
    with pytest.raises(InputFileError, match="is a character device"):
        read_json("/dev/zero", "model.json")
    with pytest.raises(InputFileError, match="is a directory"):
        read_json(tmp_path, "model.json")
    with pytest.raises(InputFileError, match="not found"):
        read_json(tmp_path / "none.json", "model.json")
