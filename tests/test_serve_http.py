"""`wbc serve` as a user runs it: a real process on a loopback port, real HTTP, a real browser."""

import concurrent.futures as cf
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import CLASSES, DATA, KAGGLE, kaggle_images, start_server
from PIL import Image

from wbc.image.framing import SMEAR_SCALES

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def server(wbc_cache, tmp_path_factory):
    proc, url = start_server(tmp_path_factory.mktemp("serve") / "serve.log", wbc_cache)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_a_request_of_many_cells_gives_its_scale_to_a_cell_without_red_cells(server):
    """As `wbc predict` on a folder: ten or more images in one request are one run, and a cell without red cells
    takes their scale (`scale` run, flagged with that reason) instead of guessing it from its own size."""
    from wbc.image.decode import decode
    from wbc.image.framing import frame, run_scale
    from wbc.infer.predictor import load_model

    spec = load_model().spec
    blasts = sorted((DATA / "munich-aml" / "train" / "BLAST").glob("*.jpg"))[:60]
    own = {f: frame(decode(f), spec).scale for f in blasts}
    lonely = next(f for f in blasts if own[f] == "cell")
    batch = [lonely, *[f for f in blasts if own[f] == "measured"][:11]]

    def post(paths):
        r = httpx.post(server + "/api/v1/classify", files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths], timeout=300)
        assert r.status_code == 200, r.text
        return r.json()["results"]

    together = post(batch)
    assert together[0]["scale"] == "run" and "the run's median" in together[0]["review_reason"]
    assert together[0]["px_per_um"] == pytest.approx(run_scale(batch).px_per_um, abs=1e-3)  # the run's, as predict takes it
    assert 10 < together[0]["px_per_um"] < 16  # Munich: about 14 px/um
    assert all(r["scale"] in SMEAR_SCALES for r in together[1:])
    alone = post([lonely])[0]
    assert alone["scale"] == "cell" and abs(alone["px_per_um"] / together[0]["px_per_um"] - 1) > 0.1


def test_concurrent_clients_all_served(server):
    paths = [p for c in CLASSES for p in kaggle_images("TEST_SIMPLE", c, 2)]

    def one(p: Path):
        r = httpx.post(server + "/api/v1/classify", files=[("files", (p.name, p.read_bytes(), "image/jpeg"))], timeout=120)
        return r.status_code, r.json()["results"][0]["class"] if r.status_code == 200 else r.text

    with cf.ThreadPoolExecutor(8) as ex:
        first = list(ex.map(one, paths * 2))
    assert all(code == 200 for code, _ in first), first
    assert [c for _, c in first[: len(paths)]] == [c for _, c in first[len(paths):]]  # same answers under load
    assert httpx.get(server + "/healthz").json() == {"status": "ok"}


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (.ci/run installs it)")
def test_web_page_in_chromium(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    cells = [kaggle_images("TEST_SIMPLE", "LYMPHOCYTE", 1)[0], kaggle_images("TEST_SIMPLE", "NEUTROPHIL", 1)[0]]
    want = [httpx.post(server + "/api/v1/classify", files=[("files", (p.name, p.read_bytes(), "image/jpeg"))]).json()["results"][0]["class"]
            for p in cells]
    json_model = httpx.get(server + "/api/v1/model").json()
    bad = tmp_path / "notes.jpeg"
    bad.write_text("this is not a picture")
    formula = tmp_path / "=1+1.jpeg"  # a file name a spreadsheet would run as a formula
    formula.write_bytes(cells[0].read_bytes())
    cells[0] = formula
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        refused = []  # what the page's Content-Security-Policy blocked: nothing it needs
        page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text and refused.append(m.text))
        page.goto(server)
        expect(page.get_by_test_id("model-info")).to_contain_text("tf_efficientnet_lite0")
        expect(page.get_by_test_id("model-info")).to_contain_text("when trained: Kaggle official TEST")  # not today's figures
        page.get_by_test_id("file-input").set_input_files([str(p) for p in cells])
        labels = page.get_by_test_id("label")
        expect(labels).to_have_count(2, timeout=120_000)
        shown = sorted(t.split()[0] for t in labels.all_inner_texts())
        assert shown == sorted(want)
        expect(page.get_by_test_id("summary-count")).to_have_text("(2 cells)")
        for cls in set(want):
            expect(page.locator(f'#tally tr[data-class="{cls}"] td').nth(1)).to_have_text(str(want.count(cls)))
        toggles = page.get_by_test_id("heatmap-toggle")
        expect(toggles).to_have_count(2)
        toggles.first.check()
        assert page.locator(".card img").first.get_attribute("src").startswith("data:image/png;base64,")
        assert page.locator(".card").first.locator(".bar").count() == len(json_model["classes"])  # a bar per class of the model
        blank = tmp_path / "blank.png"
        Image.new("RGB", (320, 240), (128, 128, 128)).save(blank)
        page.get_by_test_id("file-input").set_input_files([str(blank)])
        expect(labels).to_have_count(3, timeout=60_000)
        expect(labels.first).to_have_text("no white cell found")
        expect(page.locator('#tally tr[data-class="NO_WHITE_CELL"] td').nth(1)).to_have_text("1")
        expect(page.locator(".card").first.get_by_test_id("review")).to_have_count(0)  # a blank image: nothing to look at
        speck = KAGGLE / "TEST" / "EOSINOPHIL" / "_8_963.jpeg"  # red cells and a speck of stain: dropped, so flagged
        page.get_by_test_id("file-input").set_input_files([str(speck)])
        expect(labels).to_have_count(4, timeout=60_000)
        first = page.locator(".card").first
        expect(first.get_by_test_id("label")).to_contain_text("no white cell found")
        expect(first.get_by_test_id("review")).to_have_count(1)
        expect(first.get_by_test_id("review-reason")).to_contain_text("something is stained, but less than a nucleus")
        page.get_by_test_id("file-input").set_input_files([str(bad)])
        expect(page.get_by_test_id("error")).to_contain_text("not an image file", timeout=60_000)
        smear = KAGGLE.parents[2] / "bccd" / "JPEGImages" / "BloodImage_00000.jpg"
        if smear.is_file():  # the whole-field view: annotated image, counts, differential (as the API counts it)
            api = httpx.post(server + "/api/v1/count", files=[("files", (smear.name, smear.read_bytes(), "image/jpeg"))], timeout=120).json()
            page.get_by_test_id("smear-input").set_input_files([str(smear)])
            expect(page.get_by_test_id("smear-counts")).to_contain_text(f"WBC {api['totals']['WBC']}", timeout=120_000)
            expect(page.get_by_test_id("smear-scale")).to_contain_text("px/um (measured)")
            expect(page.get_by_test_id("smear-totals")).to_contain_text("1 field(s)")
            assert page.locator("#smear-results img").first.get_attribute("src").startswith("data:image/png;base64,")
            expect(page.get_by_test_id("smear-warning")).to_have_count(0)
            bright = tmp_path / "bright.png"  # an overexposed camera: the field says it may miss cells
            Image.fromarray(np.clip(np.asarray(Image.open(smear), np.float32) * 1.6, 0, 255).astype(np.uint8)).save(bright)
            page.get_by_test_id("smear-input").set_input_files([str(bright)])
            expect(page.get_by_test_id("smear-warning")).to_contain_text("overexposed", timeout=120_000)
        with page.expect_download() as dl:
            page.get_by_test_id("download").click()
        lines = Path(dl.value.path()).read_text().splitlines()
        assert lines[0].startswith("filename,class,probability") and lines[0].endswith(",cells_seen") and len(lines) == 5
        assert sorted(line.rsplit(",", 1)[1] for line in lines[1:]) == ["", "", "1", "1"]  # two cells; the blank and the speck: none answered
        assert any(line.startswith('"\'=1+1.jpeg",') for line in lines), lines  # kept as text (OWASP's CSV injection advice)
        # ten files go as one run; a bad one among them spoils the request, so each is sent again alone
        good = [*kaggle_images("TEST_SIMPLE", "MONOCYTE", 5), *kaggle_images("TEST_SIMPLE", "EOSINOPHIL", 5)][:9]
        assert len(good) == 9
        page.get_by_test_id("file-input").set_input_files([str(p) for p in [*good, bad]])
        expect(labels).to_have_count(4 + 9, timeout=120_000)
        expect(page.get_by_test_id("error")).to_have_count(2)
        expect(page.get_by_test_id("summary-count")).to_have_text("(13 cells)")
        expect(page.get_by_test_id("cells-seen")).to_have_count(0)  # single cells
        field = KAGGLE.parents[2] / "bccd" / "JPEGImages" / "BloodImage_00010.jpg"  # a train field with two white cells
        if field.is_file():  # the API and the card say the answer is one of two
            api = httpx.post(server + "/api/v1/classify", files=[("files", (field.name, field.read_bytes(), "image/jpeg"))], timeout=120).json()
            assert api["results"][0]["cells_seen"] == 2
            page.get_by_test_id("file-input").set_input_files([str(field)])
            expect(page.get_by_test_id("cells-seen")).to_contain_text("2 white cells in this image", timeout=60_000)
        page.screenshot(path=str(tmp_path / "wbc-page.png"), full_page=True)
        assert page.evaluate("getComputedStyle(document.getElementById('px-per-um')).width") == "64px"  # its style from the sheet
        browser.close()
    assert (tmp_path / "wbc-page.png").stat().st_size > 10_000
    assert not refused, refused


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (.ci/run installs it)")
def test_page_shows_unidentified_cells_and_the_run_warning(wbc_cache, tmp_path):
    """A copy of the shipped model whose distances real blasts pass (far: half of them, near: three quarters), served
    as a user would: the page marks the UNIDENTIFIED cards, counts them first in the tally, and warns once about the run.
    The 22 files go as one run, as `wbc predict` takes a folder: the cells take the run's scale."""
    from playwright.sync_api import expect, sync_playwright

    import wbc
    from wbc.image.framing import run_scale
    from wbc.models.io import save_model

    cells = sorted((DATA / "munich-aml" / "test" / "BLAST").glob("*.jpg"))[:22]
    strict = wbc.load_model()
    run = run_scale(cells)
    d = sorted(p.distance for p in strict.predict(cells, px_per_um=run))
    strict.model.spec.near_distance, strict.model.spec.far_distance = d[len(d) // 4], d[len(d) // 2]
    save_model(strict.model, tmp_path / "strict.safetensors", strict.meta["info"])
    proc, url = start_server(tmp_path / "serve.log", wbc_cache, "--model", str(tmp_path / "strict.safetensors"))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            expect(page.get_by_test_id("model-info")).to_contain_text("tf_efficientnet_lite0")
            page.get_by_test_id("file-input").set_input_files([str(p) for p in cells])
            expect(page.get_by_test_id("label")).to_have_count(len(cells), timeout=180_000)
            unidentified = page.locator(".card.alarm", has_text="UNIDENTIFIED: unlike every known cell type")
            expect(unidentified.first).to_be_visible()
            n = unidentified.count()
            assert len(cells) // 3 <= n <= len(cells) - len(cells) // 3
            assert page.locator(".card.alarm").count() >= n  # the blasts called BLAST stand out too
            expect(page.locator('#tally tr[data-class="UNIDENTIFIED"] td').nth(1)).to_have_text(str(n))
            expect(page.get_by_test_id("lab-warning")).to_contain_text("lie far from the cells the model was trained on")
            expect(page.locator("#review-count")).to_contain_text("cells flagged for review: lab unlike the training sources")
            scales = [t for t in page.locator(".card .note").all_inner_texts() if t.startswith("scale ")]
            assert len(scales) == len(cells) and sum("(corrected)" in t or "(run)" in t for t in scales) >= len(cells) - 3, scales
            assert all(f"{run.px_per_um:.1f} px/um" in t for t in scales if "(corrected)" in t or "(run)" in t)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
