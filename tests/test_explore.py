"""`wbc data explore` writes the pictures and finds the reference thresholds from the data."""

import json

from conftest import run_cli


def test_explore_report_and_thresholds(tiny_kaggle, tmp_path):
    out = tmp_path / "explore"
    run_cli("data", "explore", str(tiny_kaggle), "--out", str(out), "--per-class", "24")
    for f in ("samples_color.png", "samples_gray.png", "histograms_per_class.png", "histogram_combined.png", "black_border.png", "report.md"):
        assert (out / f).stat().st_size > 1000 or f == "report.md", f
    s = json.loads((out / "explore.json").read_text())
    t = s["thresholds_combined"]
    # the reference analysis read ~150 (target cell), ~180 (cells), ~200 (background) off its plots
    assert 135 <= t["target_cell_below"] <= 170
    assert 170 <= t["cells_below"] <= 195
    assert 195 <= t["background_above"] <= 220
    assert t["target_cell_below"] < t["cells_below"] < t["background_above"]
    # rotation left black fill in most augmented TRAIN images
    assert all(v["images_with_border"] > 0.5 for v in s["black_border_fraction"].values())
    assert "samples_color.png" in (out / "report.md").read_text()
