"""compress.labels: data is scored against a model only under the model's own class list, in order."""

import pytest

from compress.errors import CompressError
from compress.labels import check_class_names


def test_the_same_names_in_the_same_order_pass():
    check_class_names(["cat", "dog"], ["cat", "dog"])


@pytest.mark.parametrize("data, message", [
    (["cat"], "the model has 2 classes, the data 1"),
    (["dog", "cat"], r"class 0 is 'dog' in the data, 'cat' in the model\); labels would not line up"),
    (["cat", "cow"], r"class 1 is 'cow' in the data, 'dog' in the model"),
])
def test_another_count_order_or_name_is_refused(data, message):
    with pytest.raises(CompressError, match=message):
        check_class_names(["cat", "dog"], data)


def test_a_model_nobody_named_is_told_how_to_name_it():
    from compress.labels import placeholder_names

    with pytest.raises(CompressError, match=r"'class0' in the model\); labels would not line up; its classes are "
                                            r"unnamed \(class0, class1, ...\): give their names"):
        check_class_names(placeholder_names(2), ["cat", "dog"])
    with pytest.raises(CompressError, match="labels would not line up$"):  # named classes get no hint
        check_class_names(["class0", "dog"], ["cat", "dog"])


def test_names_that_differ_only_in_unicode_form_say_so():
    nfc, nfd = "caf\u00e9", "cafe\u0301"  # macOS writes folder names in the second form
    with pytest.raises(CompressError, match=r"same letters, written in two Unicode forms .* 'cafe\\u0301' against "
                                            r"'caf\\xe9'"):
        check_class_names(["a", nfc], ["a", nfd])
    with pytest.raises(CompressError) as other:
        check_class_names(["a", "cafe"], ["a", "café"])
    assert "Unicode" not in str(other.value)
