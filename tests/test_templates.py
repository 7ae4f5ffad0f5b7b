"""Text templates (`embed.text.template`): the fields they read, and one sentence for one that cannot be read."""

from __future__ import annotations

import pytest

from extractors.embed import TemplateError, template_fields
from pipeline.errors import SeerecError


@pytest.mark.parametrize(("template", "fields"), [
    ("{title}", ["title"]),
    ("{title} - {description}", ["title", "description"]),
    ("{{literal}} {title:>5}", ["title"]),
    ("{title}: {meta[brand]}", ["title", "metadata"]),
])
def test_fields_a_template_reads(template, fields):
    assert template_fields(template) == fields


@pytest.mark.parametrize(("template", "problem"), [
    ("{title", "cannot be read (expected '}' before end of string)"),
    ("title}", "cannot be read (Single '}' encountered"),
    ("{title!z}", "unknown conversion !z"),
    ("{}", "positional field"),
    ("no fields", "names no item column"),
])
def test_unreadable_template_is_a_user_error_in_one_sentence(template, problem):
    with pytest.raises(TemplateError) as info:
        template_fields(template)
    assert problem in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, SeerecError)  # shown as one sentence with exit 2, not a traceback

