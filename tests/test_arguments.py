"""The one parser of operating points on the command line (compress, eval, bench)."""

import pytest

from gicl.arguments import parse_points, parse_size
from gicl.errors import UserError


def test_points_parse_objects_and_lists():
    assert parse_points('{"stages": 3}', "--point", one=True) == [{"stages": 3}]
    assert parse_points('[{"stages": 1}, {"stages": 2}]', "--points") == [{"stages": 1}, {"stages": 2}]


@pytest.mark.parametrize("text,one,message", [
    ("{stages: 3}", True, r"--point '\{stages: 3\}' is not valid JSON; e\.g\. --point '\{\"stages\": 5\}'"),
    ("[{}]", True, "--point must be a JSON object"),
    ("[]", False, "--point must be a JSON object or a list of them"),
    ("[1]", False, "--point must be a JSON object or a list of them"),
])
def test_bad_points_are_user_errors_with_an_example(text, one, message):
    with pytest.raises(UserError, match=message):
        parse_points(text, "--point", one=one, example={"stages": 5})


def test_size_is_width_by_height():
    assert parse_size("768x512") == (512, 768)
    with pytest.raises(UserError, match="WIDTHxHEIGHT"):
        parse_size("768")
