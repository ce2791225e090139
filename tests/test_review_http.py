"""The review station over real HTTP: a `wbc serve --review-data` process, logins (cookie + CSRF for the page,
bearer token for scripts), every endpoint closed without one, 409 on a stale version, 403 on a wrong
password, the audit trail, and kill -9 in the middle of a burst of reclassifications losing nothing committed."""

import io
import os
import re
import signal
import threading
from datetime import timedelta

import httpx
import pytest
from conftest import KAGGLE, run_cli, start_server
from PIL import Image

from wbc.infer.predictor import shipped_model_path
from wbc.models.io import read_metadata
from wbc.review.db import open_database
from wbc.review.users import add_user

CELLS = [*sorted((KAGGLE / "TEST" / "NEUTROPHIL").glob("*.jpeg"))[:6], *sorted((KAGGLE / "TEST" / "EOSINOPHIL").glob("*.jpeg"))[:6]]


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    d = tmp_path_factory.mktemp("station")
    Session = open_database(d)
    with Session.begin() as s:
        add_user(s, "ana", "technologist", "ana-password")
        add_user(s, "ben", "reviewer", "ben-password")
        add_user(s, "cleo", "admin", "cleo-password")
    return d


@pytest.fixture(scope="module")
def server(station, wbc_cache, tmp_path_factory):
    proc, url = start_server(tmp_path_factory.mktemp("log") / "serve.log", wbc_cache, "--review-data", str(station))
    yield url, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def _login(url: str, name: str) -> tuple[httpx.Client, dict]:
    c = httpx.Client(base_url=url, timeout=120)
    r = c.post("/api/v1/review/login", json={"name": name, "password": f"{name}-password"})
    assert r.status_code == 200, r.text
    return c, r.json()


def _case(url: str) -> tuple[int, dict]:
    c, who = _login(url, "ana")
    csrf = {"X-CSRF-Token": who["csrf"]}
    case = c.post("/api/v1/review/cases", json={"reference": "H-1", "specimen": "blood"}, headers=csrf).json()
    r = c.post(f"/api/v1/review/cases/{case['id']}/import", headers=csrf,
               files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in CELLS] + [("files", ("notes.jpg", b"hello", "image/jpeg"))])
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == len(CELLS) and r.json()["refused"][0]["file"] == "notes.jpg"
    return case["id"], c.get(f"/api/v1/review/cases/{case['id']}").json()


def test_nothing_is_reachable_without_a_login(server):
    url, _ = server
    case_id, case = _case(url)
    anon = httpx.Client(base_url=url, timeout=60)
    for path in ("/cases", f"/cases/{case_id}", f"/cases/{case_id}/audit", f"/cases/{case_id}/export.csv", case["cells"][0]["image"][len("/api/v1/review"):]):
        assert anon.get("/api/v1/review" + path).status_code == 401, path
    assert anon.post(f"/api/v1/review/cases/{case_id}/undo").status_code == 401
    assert anon.post("/api/v1/review/login", json={"name": "ana", "password": "nope"}).status_code == 401
    # a name guessed at is refused for a while, said with when to try again (a name not on the station too: no probing)
    tries = [anon.post("/api/v1/review/login", json={"name": "mallory", "password": f"guess-{i}"}) for i in range(11)]
    assert [r.status_code for r in tries] == [401] * 10 + [429]
    assert "10 wrong passwords for mallory within 15 minutes: try again in 15 minute(s)" in tries[-1].json()["detail"]
    assert 800 < int(tries[-1].headers["retry-after"]) <= 900
    # the session cookie: HttpOnly and SameSite=Strict always, Secure when a proxy on this machine says it was HTTPS
    ana = {"name": "ana", "password": "ana-password"}
    plain = anon.post("/api/v1/review/login", json=ana).headers["set-cookie"].lower()
    proxied = anon.post("/api/v1/review/login", json=ana, headers={"X-Forwarded-Proto": "https"}).headers["set-cookie"].lower()
    assert "httponly" in plain and "samesite=strict" in plain and "secure" not in plain
    assert "httponly" in proxied and "; secure" in proxied
    anon.cookies.clear()
    for forged in ("1.9999999999.00.deadbeef", f"{10**30}.9999999999.00.deadbeef", f"{2**31}.9999999999.00.deadbeef"):
        assert anon.get("/api/v1/review/cases", headers={"Authorization": f"Bearer {forged}"}).status_code == 401, forged
    # a cookie session without its CSRF header may read but not change anything
    c, _ = _login(url, "ana")
    assert c.get(f"/api/v1/review/cases/{case_id}").status_code == 200
    assert c.post(f"/api/v1/review/cases/{case_id}/undo").status_code == 403
    assert c.post(f"/api/v1/review/cases/{case_id}/undo", headers={"Authorization": "Basic YW5hOng="}).status_code == 403  # not a bearer token
    # the image itself, logged in; a path out of the images folder is not served
    assert c.get(case["cells"][0]["image"]).headers["content-type"].startswith("image/")
    assert c.get("/api/v1/review/images/../wbc-review.sqlite").status_code == 404


def test_review_sign_and_export_over_http(server):
    url, _ = server
    case_id, case = _case(url)
    c, who = _login(url, "ana")
    h = {"X-CSRF-Token": who["csrf"]}
    cell = case["cells"][0]
    r = c.post(f"/api/v1/review/cases/{case_id}/reclassify", headers=h, json={"cells": [{"id": cell["id"], "version": cell["version"]}], "class": "MONOCYTE"})
    assert r.status_code == 200 and r.json()["cells"][0]["class"] == "MONOCYTE"
    # ben loaded the case before ana's change: his stale version answers 409, nothing written
    b, bwho = _login(url, "ben")
    r = b.post(f"/api/v1/review/cases/{case_id}/reclassify", headers={"X-CSRF-Token": bwho["csrf"]},
               json={"cells": [{"id": cell["id"], "version": cell["version"]}], "class": "LYMPHOCYTE"})
    assert r.status_code == 409 and "reload" in r.json()["detail"]
    bad = c.post(f"/api/v1/review/cases/{case_id}/reclassify", headers=h, json={"cells": [{"id": cell["id"], "version": 99}], "class": "DRAGON"})
    assert bad.status_code in (400, 409)
    for x in c.get(f"/api/v1/review/cases/{case_id}").json()["cells"]:
        if x["flagged"]:
            assert c.post(f"/api/v1/review/cases/{case_id}/cells/{x['id']}/open", headers=h).json()["opened"]
    assert c.post(f"/api/v1/review/cases/{case_id}/sign", headers=h, json={"password": "guess"}).status_code == 403
    r = c.post(f"/api/v1/review/cases/{case_id}/sign", headers=h, json={"password": "ana-password", "meaning": "verified"})
    assert r.status_code == 200 and r.json()["user"] == "ana"
    r = c.post(f"/api/v1/review/cases/{case_id}/reclassify", headers=h, json={"cells": [{"id": cell["id"], "version": 2}], "class": "NEUTROPHIL"})
    assert r.status_code == 409 and "read-only" in r.json()["detail"]
    # a script with the bearer token signs second, without cookies or CSRF
    r = httpx.post(f"{url}/api/v1/review/cases/{case_id}/sign", headers={"Authorization": f"Bearer {bwho['token']}"},
                   json={"password": "ben-password", "second": True}, timeout=60)
    assert r.status_code == 200 and r.json()["kind"] == "second"
    csv_text = c.get(f"/api/v1/review/cases/{case_id}/export.csv").text
    assert "MONOCYTE" in csv_text and "second ben" in csv_text
    fhir = c.get(f"/api/v1/review/cases/{case_id}/export.fhir.json")
    assert fhir.headers["content-type"].startswith("application/fhir+json") and '"24318-8"' in fhir.text
    hl7 = c.get(f"/api/v1/review/cases/{case_id}/export.hl7").text
    assert hl7.startswith("MSH|") and "26485-3^Monocytes/100 leukocytes in Blood^LN" in hl7
    assert httpx.get(f"{url}/api/v1/review/cases/{case_id}/export.hl7").status_code == 401
    # the enlarged cell's heat-map: a PNG of the model's view, behind the login like everything else
    heat = c.get(f"/api/v1/review/cases/{case_id}/cells/{cell['id']}/heatmap")
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    side = read_metadata(shipped_model_path())["spec"]["input_size"][0]
    assert Image.open(io.BytesIO(heat.content)).size == (side, side)
    assert httpx.get(f"{url}/api/v1/review/cases/{case_id}/cells/{cell['id']}/heatmap").status_code == 401
    assert c.get(f"/api/v1/review/cases/{case_id}/cells/999999/heatmap").status_code == 404
    actions = [a["action"] for a in c.get(f"/api/v1/review/cases/{case_id}/audit").json()]
    assert actions[:3] == ["create", "import", "reclassify"] and actions[-2:] == ["sign", "second_sign"]


def test_only_an_admin_adapts_the_lab_model_from_the_page_api(server, station):
    """After the signed case above: an admin starts the adaptation on its verified cells in the background (the
    server answers meanwhile, one job at a time); with one 12-cell case the job ends saying why it cannot adapt and
    installs nothing (a full adaptation through the same function: tests/test_review.py)."""
    from pathlib import Path

    url, _ = server
    c, who = _login(url, "ben")
    r = c.post("/api/v1/review/adapt", headers={"X-CSRF-Token": who["csrf"]})
    assert r.status_code == 403 and "only an admin" in r.json()["detail"]
    a, who = _login(url, "cleo")
    h = {"X-CSRF-Token": who["csrf"]}
    r = a.post("/api/v1/review/adapt", headers=h)
    assert r.status_code == 202 and r.json()["state"] == "running" and r.json()["by"] == "cleo"
    assert a.post("/api/v1/review/adapt", headers=h).status_code == 409  # one job at a time
    assert a.get("/api/v1/review/cases").status_code == 200  # the server keeps answering meanwhile
    for _ in range(1200):
        j = a.get("/api/v1/review/adapt").json()
        if j["state"] != "running":
            break
        threading.Event().wait(0.5)
    assert j["state"] == "failed" and re.search(r"train holds \d images: adaptation needs at least 20", j["error"]), j
    assert not (Path(station) / "lab_model.safetensors").exists()


def test_a_new_password_ends_the_sessions_of_the_old_one(server, station):
    """A password that may be known is changed: every session logged in with the old one (the page's cookie, a
    script's bearer token) is refused at once, on a server that kept running, and the new password logs in."""
    url, _ = server
    with open_database(station).begin() as s:
        add_user(s, "dora", "technologist", "dora-password")
    page, who = _login(url, "dora")
    script = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {who['token']}"}, timeout=60)
    assert page.get("/api/v1/review/cases").status_code == 200 and script.get("/api/v1/review/cases").status_code == 200
    run_cli("review", "users", "password", "dora", "--data-dir", str(station), env={"WBC_PASSWORD": "dora-new-password"})
    for c in (page, script):
        r = c.get("/api/v1/review/cases")
        assert r.status_code == 401 and "its password was changed" in r.json()["detail"]
    from wbc.review.db import Login

    with open_database(station)() as s:  # the server's record says why the session ended
        assert s.get(Login, who["token"].split(".")[2]).ended == "password changed"
    r = httpx.post(url + "/api/v1/review/login", json={"name": "dora", "password": "dora-new-password"}, timeout=60)
    assert r.status_code == 200 and httpx.get(url + "/api/v1/review/cases", headers={"Authorization": f"Bearer {r.json()['token']}"}).status_code == 200


def test_a_logout_or_an_idle_spell_ends_the_session_on_the_server(server, station):
    """Logging out ends the session itself, not only the page's cookie: a copy of its token (a script, a stolen
    cookie) is refused after. A session without a request for 30 minutes (wbc serve --idle-minutes) is over; one
    in use stays open and its activity is recorded; the account list shows the last login."""
    import sqlalchemy as sa

    from wbc.review import tokens
    from wbc.review.db import Login, aware, now
    from wbc.review.users import list_users

    url, _ = server
    with open_database(station).begin() as s:
        add_user(s, "eve", "technologist", "eve-password")
        assert [u["last_login"] for u in list_users(s) if u["name"] == "eve"] == [None]
    page, who = _login(url, "eve")
    assert who["idle_minutes"] == 30
    copy = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {who['token']}"}, timeout=60)
    assert copy.get("/api/v1/review/cases").status_code == 200
    assert page.post("/api/v1/review/logout", headers={"X-CSRF-Token": who["csrf"]}).status_code == 200
    r = copy.get("/api/v1/review/cases")
    assert r.status_code == 401 and "this session has ended (logged out)" in r.json()["detail"]

    def seen(token: str, minutes_ago: float):  # the session's last request, moved back in time
        with open_database(station).begin() as s:
            s.execute(sa.update(Login).where(Login.id == tokens.login_id(token)).values(last_seen=now() - timedelta(minutes=minutes_ago)))

    used, idle = (httpx.Client(base_url=url, headers={"Authorization": f"Bearer {_login(url, 'eve')[1]['token']}"}, timeout=60) for _ in range(2))
    seen(used.headers["authorization"][7:], 29)
    seen(idle.headers["authorization"][7:], 31)
    assert used.get("/api/v1/review/cases").status_code == 200
    r = idle.get("/api/v1/review/cases")
    assert r.status_code == 401 and "logged out after 30 minutes without activity: log in again" in r.json()["detail"]
    assert idle.get("/api/v1/review/cases").json()["detail"].startswith("this session has ended (idle)")
    with open_database(station)() as s:
        row = s.get(Login, tokens.login_id(used.headers["authorization"][7:]))
        assert row.ended_at is None and now() - aware(row.last_seen) < timedelta(minutes=1)  # the request kept it open
        assert [u["last_login"] for u in list_users(s) if u["name"] == "eve"][0] is not None
    from wbc.review.users import set_active

    with open_database(station).begin() as s:  # eve leaves: her open session is recorded as ended with the account
        set_active(s, "eve", False, "admin (test)")
    with open_database(station)() as s:
        assert s.get(Login, tokens.login_id(used.headers["authorization"][7:])).ended == "account closed"
    assert used.get("/api/v1/review/cases").status_code == 401


def test_kill_9_during_a_burst_loses_nothing_committed(server, station, wbc_cache, tmp_path):
    url, proc = server
    case_id, case = _case(url)
    c, who = _login(url, "ana")
    h = {"X-CSRF-Token": who["csrf"]}
    committed, stop, pending = [], threading.Event(), {}

    def burst():
        versions = {x["id"]: x["version"] for x in case["cells"]}
        current = {x["id"]: x["class"] for x in case["cells"]}
        k = 0
        while not stop.is_set():
            cid = case["cells"][k % len(case["cells"])]["id"]
            new = "MONOCYTE" if current[cid] != "MONOCYTE" else "LYMPHOCYTE"  # every request a real change
            pending["last"] = (cid, new)  # sent, not yet answered: the kill may land after its commit
            try:
                r = c.post(f"/api/v1/review/cases/{case_id}/reclassify", headers=h, json={"cells": [{"id": cid, "version": versions[cid]}], "class": new})
            except httpx.TransportError:
                return
            if r.status_code == 200:
                versions[cid], current[cid] = r.json()["cells"][0]["version"], new
                committed.append((cid, new))
            k += 1

    t = threading.Thread(target=burst)
    t.start()
    while len(committed) < 20:
        threading.Event().wait(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    stop.set()
    t.join(timeout=60)
    proc2, url2 = start_server(tmp_path / "serve2.log", wbc_cache, "--review-data", str(station))
    try:
        c2, _ = _login(url2, "ana")
        now = {x["id"]: x["class"] for x in c2.get(f"/api/v1/review/cases/{case_id}").json()["cells"]}
        last = {}
        for cid, new in committed:
            last[cid] = new
        # every answered change is there; the one request in flight at the kill may have committed unanswered
        assert all(now[cid] == new or (cid, now[cid]) == pending.get("last") for cid, new in last.items())
        changes = [a for a in c2.get(f"/api/v1/review/cases/{case_id}/audit").json() if a["action"] == "reclassify"]
        assert len(changes) >= len(committed)  # every answered change has its audit row (one more may have committed unanswered)
    finally:
        proc2.terminate()
        proc2.wait(timeout=30)

