"""The advice a refused stage gives: the option that names the folder, and --no-resume only where it helps."""

from compress.restart import restart_advice, stage_chain, stage_option


def test_the_advice_names_the_option_that_chose_the_folder():
    assert restart_advice() == "use another --out or --no-resume"
    with stage_chain():  # slim refuses --no-resume over finished stages
        assert restart_advice() == "use another --out"
        with stage_option("--sparse-dir"):  # another --out would not change that folder
            assert restart_advice() == "use another --sparse-dir"
        assert restart_advice() == "use another --out"
