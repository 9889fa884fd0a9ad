"""schemathesis against the running app's OpenAPI, positive and negative
cases: no 5xx over at least 5,000 generated requests (the schema describes
the Segment Spec bodies, so generated events look real), and bad input gets
a 4xx that says what was wrong, with ``code`` and ``message``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from pydantic import SecretStr
from schemathesis import GenerationMode

from models.intent_online import OnlineIntentModel
from serving.app import create_app
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.server import ServerThread
from serving.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
WRITE, READ = "schema-admin-key", "schema-read-key"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("schema")
    settings = Settings(
        state_dir=state, clock="event", write_keys=[SecretStr(WRITE)], read_keys=[SecretStr(READ)],
        segments=ROOT / "config" / "segments.yaml", tracking_uri=f"sqlite:///{state / 'mlflow.db'}",
    )  # fmt: skip
    with ServerThread(create_app(settings, Scorers(OnlineIntentModel(), intent_feature_names()))) as url:
        yield url


@pytest.fixture
def api_schema(live: str) -> Any:
    schema = schemathesis.openapi.from_url(live + "/openapi.json", headers={"authorization": f"Bearer {READ}"})
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES)
    return schema


# the live stream of changes never ends, by design (tests/test_destinations_delivery.py follows it)
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/v1/transitions/stream")

_WRITES = ("/v1/track", "/v1/page", "/v1/identify", "/v1/batch", "/v1/admin/", "/v1/segments/preview")
EXAMPLES = 250  # per operation and mode: over 5,000 requests in all
CALLS: list[int] = []


@schema.parametrize()
def test_no_server_errors_and_clear_client_errors(case: Any, live: str) -> None:
    writes = case.path.startswith(_WRITES) or case.method.upper() == "DELETE"
    key = WRITE if writes else READ
    response = case.call(base_url=live, headers={"authorization": f"Bearer {key}"})
    CALLS.append(response.status_code)
    assert response.status_code < 500, response.text
    if response.status_code in (400, 413, 422):
        body = response.json()
        assert body["detail"] and body["code"] and body["message"], "a client error must say what was wrong"


def test_the_fuzzing_above_sent_at_least_5000_requests() -> None:
    assert len(CALLS) >= 5000, len(CALLS)
    assert sum(code < 300 for code in CALLS) >= 500  # and many of them were good enough to be accepted
