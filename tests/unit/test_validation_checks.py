"""The pure per-field and per-row tests: the field readers of `dpo_cli.data.rows` and the checks of
`dpo_cli.validation.checks`."""

from __future__ import annotations

import pytest

from dpo_cli.data.rows import (
    RowProblem,
    common_prefix_len,
    content_text,
    conversation_problem,
    messages_field,
    split_implicit_prompt,
    text_field,
)
from dpo_cli.validation.checks import (
    CHECKS,
    DROPPED,
    ERROR,
    WARNING,
    Findings,
    Lengths,
    digest,
    length_bias_message,
    normalized,
    text_problems,
)

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}
S = {"role": "system", "content": "be brief"}


def test_every_check_has_a_known_severity() -> None:
    assert {c.severity for c in CHECKS.values()} == {ERROR, WARNING, DROPPED}
    assert {c.id for c in CHECKS.values() if c.severity == DROPPED} == {"tie", "no_label", "small_gap", "no_pairs"}
    errors = {c.id for c in CHECKS.values() if c.severity == ERROR}
    assert {"malformed_line", "null_field", "identical_pair", "response_cut_off", "bad_conversation"} <= errors
    assert {"duplicate_pair", "near_identical", "leakage", "length_bias", "template_mismatch"}.isdisjoint(errors)


def _problem(read, value) -> str | None:
    try:
        read({"x": value}, "x")
    except RowProblem as problem:
        return problem.check
    return None


@pytest.mark.parametrize(
    ("value", "conversational", "expected"),
    [
        (None, False, "null_field"),
        (3, False, "wrong_type"),
        (["a"], False, "wrong_type"),
        ("   ", False, "empty_field"),
        ("fine", True, "wrong_type"),
        ([], True, "empty_field"),
        ([{"content": "x"}], True, "bad_conversation"),
        ([{"role": "user", "content": None}], True, "bad_conversation"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], True, "unsupported_content"),
    ],
)
def test_field_problems(value, conversational, expected) -> None:
    assert _problem(messages_field if conversational else text_field, value) == expected
    assert _problem(text_field, "x") is None


@pytest.mark.parametrize(("value", "conversational"), [("text", False), ([U], True), ([S, U, A, U], True)])
def test_usable_fields_pass(value, conversational) -> None:
    assert _problem(messages_field if conversational else text_field, value) is None


def test_messages_are_normalized_from_sharegpt_and_typed_parts() -> None:
    row = {
        "m": [
            {"from": "human", "value": "hi"},
            {"from": "gpt", "value": [{"type": "text", "text": "a"}, {"type": "text", "value": "b"}]},
        ]
    }
    assert messages_field(row, "m") == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ab"}]
    assert content_text([{"type": "text", "text": "x"}], "m") == "x"


@pytest.mark.parametrize(
    ("prompt", "response", "fragment"),
    [
        ([U, U], [A], "two user turns"),
        ([U, A], [A], "ends with an assistant turn"),
        ([U], [U], "does not start with the assistant"),
        ([U, S], [A], "system message after"),
        ([{"role": "narrator", "content": "x"}], [A], "unknown role"),
    ],
)
def test_conversation_structure_problems(prompt, response, fragment) -> None:
    assert fragment in conversation_problem(prompt, response)


@pytest.mark.parametrize(
    ("prompt", "response"),
    [
        ([U], [A]),
        ([S, U], [A]),
        ([U, A, U], [A]),
        ([U], [A, {"role": "tool", "content": "42"}, A]),
        ([A, U], [A]),
    ],  # an opening assistant greeting (OpenAI's examples have them)
)
def test_well_formed_conversations_pass(prompt, response) -> None:
    assert conversation_problem(prompt, response) is None


def test_implicit_prompt_split_like_trl_on_text() -> None:
    chosen = "\n\nHuman: Hi?\n\nAssistant: Hello there."
    rejected = "\n\nHuman: Hi?\n\nAssistant: Go away."
    # TRL moves the space before the responses out of the prompt.
    assert split_implicit_prompt(chosen, rejected) == ("\n\nHuman: Hi?\n\nAssistant:", " Hello there.", " Go away.")


def test_implicit_prompt_split_on_messages() -> None:
    other = {"role": "assistant", "content": "bye"}
    assert split_implicit_prompt([U, A], [U, other]) == ([U], [A], [other])


def test_implicit_prompt_when_one_response_contains_the_other() -> None:
    # TRL keeps the last element of the shorter response as the response; train will too.
    assert split_implicit_prompt("abc", "abcd") == ("ab", "c", "cd")


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3, 4], [1, 2, 9]) == 2
    assert common_prefix_len("abc", "abcdef") == 3
    assert common_prefix_len("x", "y") == 0
    assert common_prefix_len([], [1]) == 0


def test_text_problems() -> None:
    assert text_problems(["ok\nfine\ttab"]) == []
    assert text_problems(["broken \ufffd"]) == ["replacement_char"]
    assert text_problems(["bell \x07"]) == ["control_chars"]


def test_digest_and_normalized() -> None:
    assert digest("a") == digest("a") != digest("b")
    assert normalized("  Hello\n  World ") == normalized("hello world")
    assert 0 <= digest("x") < 2**64


def test_lengths_quantiles_in_bounded_memory() -> None:
    lengths = Lengths()
    for value in range(1, 101):
        lengths.add(value)
    for _ in range(1000):
        lengths.add(50)
    summary = lengths.summary()
    assert summary["min"] == 1 and summary["max"] == 100 and summary["p50"] == 50
    assert len(lengths.counts) == 100  # distinct values, not rows


def test_length_bias_message_fires_only_on_bias() -> None:
    assert (
        length_bias_message(
            {"mean_length_ratio": 1.0, "chosen_longer_fraction": 0.5, "rejected_longer_fraction": 0.5}, "character"
        )
        is None
    )
    longer = length_bias_message(
        {"mean_length_ratio": 1.2, "chosen_longer_fraction": 0.9, "rejected_longer_fraction": 0.1}, "token"
    )
    assert "longer in 90%" in longer
    shorter = length_bias_message(
        {"mean_length_ratio": 0.5, "chosen_longer_fraction": 0.3, "rejected_longer_fraction": 0.6}, "token"
    )
    assert "shorter" in shorter


def test_findings_keep_a_few_examples_and_count_all() -> None:
    findings = Findings()
    for i in range(20):
        findings.add("null_field", f"f.jsonl:{i}", "`chosen`")
    finding = findings.by_id["null_field"]
    assert finding.count == 20 and len(finding.examples) == 5
    assert finding.examples[0] == "f.jsonl:0 (`chosen`)"
    assert findings.count(ERROR) == 20 and findings.count(WARNING) == 0
