"""schemathesis over the review station's endpoints, logged in with a bearer token as a script would be: no
request the schema allows (or breaks) makes the server answer 5xx; and the same run without a token reaches
nothing but the login."""

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

import wbc
from wbc.review.cases import create_case
from wbc.review.db import open_database
from wbc.review.users import add_user
from wbc.serve.app import Limits, create_app

pytestmark = pytest.mark.serial  # schemathesis' per-operation runs are lost under pytest-xdist: `make test` runs these alone


def _station(tmp):
    Session = open_database(tmp)
    with Session.begin() as s:
        add_user(s, "ana", "technologist", "ana-password")
        create_case(s, "FUZZ-1", "blood", "ana")
    return Session


import tempfile  # noqa: E402

DATA = tempfile.mkdtemp(prefix="wbc-review-fuzz-")
APP = create_app(wbc.load_model(), limits=Limits(max_files=2, max_mb=1.0), review=(_station(DATA), DATA))
TOKEN = TestClient(APP).post("/api/v1/review/login", json={"name": "ana", "password": "ana-password"}).json()["token"]
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).include(path_regex="^/api/v1/review/")
SENT = {"with": 0, "without": 0, "open_without": []}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_review_endpoint_answers_5xx_when_logged_in(case):
    SENT["with"] += 1
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_without_a_token_only_the_login_answers(case):
    SENT["without"] += 1
    r = case.call()
    assert r.status_code < 500
    if not case.path.endswith("/login"):
        assert r.status_code in (400, 401, 404, 405, 422), (case.method, case.path, r.status_code)  # 400/422: a body refused before auth ran; 405: a method the path lacks


def test_the_fuzzing_reached_every_review_endpoint():
    ops = {(o.ok().method, o.ok().path) for o in schema.get_all_operations()}
    assert len(ops) >= 15, ops
    assert SENT["with"] >= 10 * len(ops) // 2, SENT
