"""Property-based tests: every endpoint from its own OpenAPI schema (schemathesis), and the decoder on
random bytes and mutated real images (hypothesis). No 5xx, no exception but BadImage, bounded memory."""

import io
import resource

import numpy as np
import pytest
import schemathesis
from conftest import kaggle_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error

import wbc
from wbc.errors import BadImage
from wbc.image.decode import decode_bytes
from wbc.serve.app import Limits, create_app

pytestmark = pytest.mark.serial  # schemathesis' per-operation runs are lost under pytest-xdist: `make test` runs these alone

APP = create_app(wbc.load_model(), limits=Limits(max_files=4, max_mb=1.0))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
SENT = {"requests": 0}


@schema.parametrize()
@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_endpoint_answers_5xx(case):
    SENT["requests"] += 1
    case.call_and_validate(checks=[not_a_server_error])


def test_fuzzing_sent_at_least_1000_requests():
    assert SENT["requests"] >= 1000, SENT  # runs after the fuzzing above (file order)


JPEG = kaggle_images("TEST_SIMPLE", "EOSINOPHIL", 1)[0].read_bytes()
PNG = (lambda b: (Image.open(io.BytesIO(JPEG)).save(b, format="PNG"), b.getvalue())[1])(io.BytesIO())


def _decodes_or_says_bad(data: bytes) -> None:
    try:
        a = decode_bytes(data, "fuzz.bin")
    except BadImage as e:
        assert "fuzz.bin" in str(e) and "\n" not in str(e)
        return
    assert a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_decoder_on_random_bytes(data):
    _decodes_or_says_bad(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([JPEG, PNG]), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=24),
       st.one_of(st.none(), st.integers(0, 10**6)))
def test_decoder_on_mutated_real_images(base, flips, cut):
    data = bytearray(base)
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    _decodes_or_says_bad(bytes(data))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_decoder_memory_stays_bounded():
    """Hostile headers (random declared sizes) decoded in a row: the peak stays within what the 40 Mpx
    limit allows (about 0.5 GB for one image and its copies), and nothing accumulates."""
    import gc

    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(0)
    rss = []
    for rounds in range(2):
        for k in range(500):
            data = bytearray(JPEG if k % 2 else PNG)
            pos = 163 if k % 2 else 16  # JPEG SOF dimensions / PNG IHDR width and height
            data[pos : pos + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
            _decodes_or_says_bad(bytes(data))
        gc.collect()
        rss.append(_rss_mb())
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak_before < 1024
    assert rss[1] - rss[0] < 50  # MB: a second round leaves no more behind than the first
