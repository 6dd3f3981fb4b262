"""The bounded JSON reader: what is within the limits is read exactly, and properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.errors import (
    MalformedMessage,
    PoisonMessage,
)
from libs.messages import codec, safe_json
from libs.messages.envelope import CONTENT_TYPE, Envelope
from libs.messages.safe_json import JsonLimits
from tests.unit.test_hostile_json import (
    LIMIT,
    MAX_BYTES,
    body_of,
    decode,
    event,
    nested_arrays,
    nested_objects,
    with_data,
)

# --- what is within the limits is read exactly --------------------------------------------------


def test_the_limits_are_inclusive() -> None:
    limits = JsonLimits(
        max_depth=3,
        max_keys_per_object=2,
        max_items_per_array=3,
        max_total_values=9,
        max_string_chars=3,
        max_number_chars=3,
    )

    def ok(text: str) -> Any:
        return safe_json.loads(text.encode(), limits=limits)

    def refused(text: str, reason: str) -> None:
        with pytest.raises(MalformedMessage, match=reason):
            safe_json.loads(text.encode(), limits=limits)

    assert ok("[[[]]]") == [[[]]]
    refused("[[[[]]]]", "deeper than 3")
    assert ok('{"a":1,"b":2}') == {"a": 1, "b": 2}
    refused('{"a":1,"b":2,"c":3}', "more than 2 keys")
    assert ok("[1,2,3]") == [1, 2, 3]
    refused("[1,2,3,4]", "more than 3 items")
    assert ok("[[1,2,3],[4,5,6]]") == [[1, 2, 3], [4, 5, 6]]  # 3 containers, 6 numbers
    refused("[[1,2,3],[4,5,6],7]", "more than 9 values")
    assert ok('{"a":{"b":[]}}') == {"a": {"b": []}}  # keys count too: 3 containers, 2 keys
    assert ok('"abc"') == "abc"
    assert ok('"\\u0061\\u0062\\u0063"') == "abc"  # escapes count as the characters they stand for
    assert ok('"\\ud83d\\ude00"') == "\U0001f600"  # a surrogate pair is one character
    refused('"abcd"', "longer than 3")
    assert ok("[123,-12,1.5]") == [123, -12, 1.5]
    refused("[1234]", "4 characters long")
    refused("[1e10]", "4 characters long")


def test_brackets_commas_quotes_and_escapes_inside_strings_are_not_structure() -> None:
    tricky = [
        "[" * 100,
        "{" * 100,
        "," * 2000,
        '\\"[[[[',
        '"' * 50,
        "\\" * 51,
        '\\\\"',
        "]]]]}}}}",
        "\\u005b\\u005b",
    ]
    value = {"strings": tricky, "keys": {s[:10] + str(i): i for i, s in enumerate(tricky)}}
    for ensure_ascii in (True, False):
        text = json.dumps(value, ensure_ascii=ensure_ascii)
        assert safe_json.loads(text.encode()) == value


@pytest.mark.parametrize("ending", ["\\", "\\\\", "\\" * 51, 'q\\"'])
def test_a_string_ending_in_backslashes_does_not_hide_the_brackets_after_it(ending: str) -> None:
    # Misreading the escaped backslash before the closing quote would swap what is inside and
    # outside strings from there on, and the deep nesting after it would look like string text.
    value = [ending, json.loads(nested_arrays(LIMIT.max_depth + 5)), ending]
    with pytest.raises(MalformedMessage, match="nests deeper"):
        safe_json.loads(json.dumps(value).encode())


def test_whitespace_inside_empty_containers_does_not_count() -> None:
    limits = JsonLimits(max_total_values=3)
    assert safe_json.loads(b"[ [ \n ] ,\t{ } ]", limits=limits) == [[], {}]
    with pytest.raises(MalformedMessage, match="more than 3 values"):
        safe_json.loads(b"[ [ 0 ] , { } ]", limits=limits)


def test_a_string_long_only_in_its_escapes_is_read() -> None:
    value = "é" * LIMIT.max_string_chars  # 6 characters each when escaped, 1 when decoded
    assert safe_json.loads(json.dumps(value).encode()) == value


def test_limits_must_be_positive_integers() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        JsonLimits(max_depth=0)
    with pytest.raises(ValueError, match="max_total_values"):
        JsonLimits(max_total_values=True)


# --- properties -------------------------------------------------------------------------------


def measure(value: Any, depth: int = 1) -> dict[str, int]:
    """What safe_json limits, measured on the parsed value (the reference for the scan)."""
    found = {"depth": 0, "keys": 0, "items": 0, "values": 1, "string": 0, "number": 0}
    if isinstance(value, str):
        found["string"] = len(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        found["number"] = len(json.dumps(value))
    elif isinstance(value, list | dict):
        found["depth"] = depth
        if isinstance(value, dict):
            found["keys"] = len(value)
            found["values"] += len(value)  # the keys
            found["string"] = max((len(k) for k in value), default=0)
            children = list(value.values())
        else:
            found["items"] = len(value)
            children = value
        for child in children:
            inner = measure(child, depth + 1)
            found["values"] += inner["values"]
            for name in ("depth", "keys", "items", "string", "number"):
                found[name] = max(found[name], inner[name])
    return found


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab"\\[]{},:é\U0001f600 \n'), max_size=8)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(
            st.text(alphabet=st.sampled_from('k"\\[{,é'), max_size=4), inner, max_size=6
        )
    ),
    max_leaves=400,
)
small_limits = st.builds(
    JsonLimits,
    max_depth=st.integers(1, 8),
    max_keys_per_object=st.integers(1, 6),
    max_items_per_array=st.integers(1, 6),
    max_total_values=st.integers(1, 200),
    max_string_chars=st.integers(1, 8),
    max_number_chars=st.integers(1, 25),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, limits=small_limits, ensure_ascii=st.booleans())
def test_safe_json_refuses_exactly_what_breaks_a_limit(
    value: Any, limits: JsonLimits, ensure_ascii: bool
) -> None:
    body = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    found = measure(value)
    within = (
        found["depth"] <= limits.max_depth
        and found["keys"] <= limits.max_keys_per_object
        and found["items"] <= limits.max_items_per_array
        and found["values"] <= limits.max_total_values
        and found["string"] <= limits.max_string_chars
        and found["number"] <= limits.max_number_chars
    )
    if within:
        assert safe_json.loads(body, limits=limits) == value
    else:
        with pytest.raises(MalformedMessage):
            safe_json.loads(body, limits=limits)


def decodes_or_refuses(body: bytes) -> None:
    """The property: an Envelope, or a PoisonMessage; nothing else."""
    try:
        result = codec.decode(body, content_type=CONTENT_TYPE, max_bytes=MAX_BYTES)
    except PoisonMessage:
        return
    except BaseException as exc:  # pragma: no cover - the failure being tested for
        pytest.fail(f"decode raised {type(exc).__name__}: {exc!r}"[:500])
    assert isinstance(result, Envelope)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_decode_or_are_refused(body: bytes) -> None:
    decodes_or_refuses(body)


VALID = body_of(event(subject="order-1", ext="x", data={"amount": "1", "lines": [1, 2]}))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.binary(max_size=4), st.integers(0, 3)),
        min_size=1,
        max_size=6,
    )
)
def test_a_valid_event_with_random_bytes_spliced_in_decodes_or_is_refused(
    edits: list[tuple[int, bytes, int]],
) -> None:
    body = bytearray(VALID)
    for at, insert, remove in edits:
        body[at : at + remove] = insert
    decodes_or_refuses(bytes(body))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, as_data=st.booleans())
def test_random_json_decodes_or_is_refused(value: Any, as_data: bool) -> None:
    decodes_or_refuses(body_of(event(data=value)) if as_data else body_of(value))


@settings(max_examples=200, deadline=None)
@given(
    depth=st.integers(1, 5000),
    shape=st.sampled_from(["arrays", "objects", "mixed", "unclosed", "in data"]),
)
def test_nesting_of_any_depth_decodes_or_is_refused(depth: int, shape: str) -> None:
    if shape == "arrays":
        body = nested_arrays(depth).encode()
    elif shape == "objects":
        body = nested_objects(depth).encode()
    elif shape == "mixed":
        body = ('[{"a":' * depth + "0" + "}]" * depth).encode()
    elif shape == "unclosed":
        body = b"[" * depth
    else:
        body = with_data('{"x":' + nested_arrays(depth) + "}")
    if depth >= 40:  # far past the limit: refused, never a RecursionError
        with pytest.raises(MalformedMessage, match="nests deeper"):
            decode(body)
    else:
        decodes_or_refuses(body)
