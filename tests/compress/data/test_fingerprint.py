"""The data fingerprint: a finished stage is kept, and an interrupted one resumed, only on the data it was
trained on."""

from click.testing import CliRunner
from tests_support import make_image_folder

from compress.cli import main
from compress.data.fingerprint import as_recorded, data_fingerprint


def test_a_folder_fingerprint_follows_paths_and_sizes_not_where_it_lies(tmp_path):
    import shutil

    a = make_image_folder(tmp_path / "a")
    shutil.copytree(a, tmp_path / "copy")  # other mtimes, same files
    before = data_fingerprint(a)
    assert data_fingerprint(tmp_path / "copy") == before
    (a / "train" / "cat" / "0.png").rename(a / "train" / "dog" / "moved.png")  # a label changed
    assert data_fingerprint(a) != before
    (tmp_path / "x.tar").write_bytes(b"x" * 3_000_000)
    first = data_fingerprint(tmp_path / "x.tar")
    (tmp_path / "y.tar").write_bytes(b"x" * 2_999_999 + b"y")
    assert data_fingerprint(tmp_path / "y.tar") != first


def test_a_stage_trained_on_other_images_is_refused_not_kept(tmp_path):
    """Swapping the folder under the same --data kept every stage ("already trained; keeping it")."""
    data = make_image_folder(tmp_path / "imgs", per_class=4, size=16)
    args = ["train", "--arch", "vgg11", "--width", "0.0625", "--data", str(data), "--epochs", "1", "--batch-size",
            "8", "--device", "cpu", "--out", str(tmp_path / "m")]
    env = {"COMPRESS_CACHE": str(tmp_path / "cache")}
    assert CliRunner().invoke(main, args, env=env).exit_code == 0
    kept = CliRunner().invoke(main, args, env=env)
    assert kept.exit_code == 0 and "already trained; keeping it" in kept.output
    (data / "train" / "cat").rename(data / "train" / "tmp")  # the labels of the two classes swapped
    (data / "train" / "dog").rename(data / "train" / "cat")
    (data / "train" / "tmp").rename(data / "train" / "dog")
    (data / "train" / "cat" / "0.png").unlink()
    refused = CliRunner().invoke(main, args, env=env)
    assert refused.exit_code == 2 and "holds a model trained with other settings (data)" in refused.output


def test_settings_recorded_before_fingerprints_compare_without_one():
    current = {"epochs": 1, "data": {"spec": "imgs", "fingerprint": "folder:ab"}}
    old = {"epochs": 1, "data": {"spec": "imgs"}}
    assert as_recorded(current, old) == old
    assert as_recorded(current, {"epochs": 1, "data": {"spec": "imgs", "fingerprint": "folder:cd"}}) == current
    same_images = {"epochs": 1, "data": {"spec": "/abs/imgs", "fingerprint": "folder:ab"}}
    assert as_recorded(current, same_images) == same_images  # the same files under another spelling
