"""What every error answer of the API must be: its status, a JSON body with a code, and a
sentence a person can act on."""

from __future__ import annotations


def assert_error(response, status: int, code: str) -> dict:
    """Check a Flask test client's response; return its ``error`` object."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 10  # a sentence, not a bare code
    return error
