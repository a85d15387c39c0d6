"""The plug-in spec grammar (triage.specs): ``format_spec`` writes what ``parse_spec`` reads back."""

from __future__ import annotations

import pytest

from triage.specs import format_spec, parse_spec


@pytest.mark.parametrize("options", [{}, {"aux": False}, {"variant": "int8-l2", "max_tokens": 128, "aux": True},
                                     {"pca": 16, "scale": 0.5}])
def test_format_spec_reads_back_as_the_same_options(options: dict) -> None:
    text = format_spec("text", options, separator=";")
    assert parse_spec(text, separator=";") == ("text", options)


@pytest.mark.parametrize("value", ["a;b", "a,b", "k=v", "x:y", "3", None, [1]])
def test_format_spec_refuses_a_value_that_would_read_back_as_something_else(value: object) -> None:
    with pytest.raises(ValueError, match="cannot be written as a spec"):
        format_spec("text", {"opt": value}, separator=";")
