"""The evaluation report of a real run, as a browser shows it: headless Chromium renders the page, and the
rendered DOM has the plots (SVG with tick labels) and the gained/lost tables (with the queries' texts).

Skipped when Chromium is not installed, unless EMBEDPIPE_REQUIRE_BROWSER=1 (CI: `.ci/run` installs it).
"""

import html
import os
import re
import struct

import pandas as pd
import pytest

from tests.browser import chromium, evaluation_report_of_a_run, run_chromium, screenshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    if chromium() is None:
        if os.environ.get("EMBEDPIPE_REQUIRE_BROWSER") == "1":
            pytest.fail("EMBEDPIPE_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); the rendered report is not checked")
    folder = tmp_path_factory.mktemp("browser")
    report, evaluations = evaluation_report_of_a_run(folder)
    dom = run_chromium(report, folder / "chromium", "--dump-dom")
    png = folder / "report.png"
    screenshot(report, png, folder / "chromium")
    return dom, png, evaluations, folder


def test_the_rendered_report_has_plots_with_ticks(rendered):
    dom, _, _, _ = rendered
    assert "<h1>Retrieval evaluation — test split</h1>" in dom
    svgs = re.findall(r"<svg.*?</svg>", dom, re.S)
    assert len(svgs) == 3  # per-query NDCG@10, gains, recall@k
    scatter, gains, recall = svgs
    # Tick labels are text elements of the page (0 to 1 on both axes of the scatter plot).
    assert {"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"} <= set(re.findall(r">\s*([0-9.]+)\s*</text>", scatter))
    assert "unchanged" in gains and "queries" in gains
    assert {"1", "10", "100"} <= set(re.findall(r">\s*([0-9]+)\s*</text>", recall)) and "mean recall@k" in recall


def test_the_rendered_report_lists_the_queries_that_gained_and_lost(rendered):
    dom, _, evaluations, folder = rendered
    base, tuned = evaluations
    gains = {q: tuned.per_query[q]["ndcg@10"] - base.per_query[q]["ndcg@10"] for q in base.per_query}
    gained, lost = sum(g > 1e-9 for g in gains.values()), sum(g < -1e-9 for g in gains.values())
    assert gained and lost, f"the few training steps moved queries one way only: {gained} up, {lost} down"
    queries = pd.read_parquet(folder / "prepared" / "queries.parquet").set_index("_id")["text"]
    sections = {
        "gained": dom.split('id="gained"')[1].split('id="lost"')[0],
        "lost": dom.split('id="lost"')[1],
    }
    for name, count in (("gained", gained), ("lost", lost)):
        rows = re.findall(r'<td class="query"><code>([^<]+)</code>(.*?)</td>', sections[name], re.S)
        assert len(rows) == min(10, count), name
        sign = -1 if name == "gained" else 1
        assert rows[0][0] == min(gains, key=lambda q: (sign * gains[q], q)), name  # the biggest change first
        for query_id, text in rows:
            assert html.unescape(text).strip() == queries[query_id].strip()
            assert (gains[query_id] > 0) == (name == "gained")
        # Each row shows the labelled documents and what each model ranked first, marked relevant or not.
        assert sections[name].count('class="rel"') >= len(rows)


def test_the_screenshot_is_a_non_empty_png(rendered):
    _, png, _, _ = rendered
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 1250) and 10_000 < len(data) < 300_000
