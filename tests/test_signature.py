"""Error signatures: the groups of the quarantine's triage table."""

from __future__ import annotations

from avtomatika.reads import error_signature, normalise_message


def test_numbers_ids_and_quoted_values_are_replaced() -> None:
    assert normalise_message("file 123 corrupt") == normalise_message("file 456 corrupt") == "file <n> corrupt"
    assert normalise_message("bad codec 'h265' in job 3f2a9c81-1111-2222-3333-444455556666") == (
        "bad codec <value> in job <id>"
    )
    assert normalise_message("user 9f8e7d6c5b4a39281706 not found") == "user <id> not found"
    assert normalise_message("chunk 0x1f at s3://b/k2 after 30.5s") == "chunk <id> at s3://b/k2 after <n>s"
    assert normalise_message("a\n  b") == "a b"
    assert len(normalise_message("x " * 500)) == 200


def test_a_signature_is_task_type_code_and_normalised_message() -> None:
    first = error_signature("PERMANENT_ERROR: file 123 corrupt", "transcode")
    second = error_signature("PERMANENT_ERROR: file 456 corrupt", "transcode")
    assert first == second
    assert (first.task_type, first.code, first.message) == ("transcode", "PERMANENT_ERROR", "file <n> corrupt")
    assert first.key == second.key
    assert len(first.key) == 12
    assert error_signature("PERMANENT_ERROR: file 1 corrupt", "upload").key != first.key
    assert error_signature("INVALID_INPUT_ERROR: file 1 corrupt", "transcode").key != first.key
    handler = error_signature(None)
    assert (handler.task_type, handler.code, handler.message) == ("handler", "", "no error message")
    assert error_signature("boom: it broke").code == "", "only an upper-case code counts as one"
