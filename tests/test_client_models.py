"""The Python client's event catalogue (clients/python/researchflow_client/catalogue.py) is
generated from the AsyncAPI document; a changed event model cannot leave the client behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools import client_models
from events.schemas import EVENT_CATALOGUE
from researchflow_client import catalogue as client_catalogue


def test_the_committed_client_catalogue_is_generated_from_the_asyncapi_document() -> None:
    assert client_models.render() == client_models.TARGET.read_text(), (
        "run: python -m devtools.client_models"
    )


def test_the_check_fails_when_the_committed_catalogue_is_out_of_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "catalogue.py"
    stale.write_text(client_models.TARGET.read_text().replace("WORKER_LOST", "WORKER_GONE"))
    monkeypatch.setattr(client_models, "TARGET", stale)
    assert client_models.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert client_models.main([]) == 0
    assert client_models.main(["--check"]) == 0


def test_it_generates_one_model_per_server_payload_model_with_the_same_wire_fields() -> None:
    assert list(client_catalogue.EVENT_CATALOGUE) == list(EVENT_CATALOGUE)
    for event_type, (category, server_model) in EVENT_CATALOGUE.items():
        client_category, client_model = client_catalogue.EVENT_CATALOGUE[event_type]
        assert client_category == category
        assert client_model.__name__ == server_model.__name__
        wire = {f.alias for f in client_model.model_fields.values()}
        assert wire == {f.alias for f in server_model.model_fields.values()}, event_type
