"""The playground page in a real browser: Debian's chromium, driven by Playwright, against the real server.

A tiny model is trained in-process for a few seconds (snapshots at steps 0, 40, 80, 120), the server runs in
a thread, and the test does what a learner does: type a prompt, press Generate, watch tokens arrive, click
one, read the probability bars and the attention heatmap, move the stage slider back to step 0 and look
again. The last screen is saved as out/playground.png under the test's temporary folder (and copied to
/tmp/playground_screenshot.png, to look at).

Playwright drives the system's chromium (`apt-get install chromium`); it never downloads a browser of its
own (`playwright install` is not needed). Without chromium or playwright the test is skipped, except on CI
(the environment variable CI is set), where that is a failure.
"""

from __future__ import annotations

import os
import shutil

import pytest

import src.playground as playground
from src.engine.config import TrainConfig
from src.train import train

INSTALL = "install with: apt-get install chromium; pip install playwright"

# (Predicates are written as functions: the page's Content-Security-Policy forbids eval, which Playwright
# would need to poll a bare expression.)

# Is the heatmap drawn? Some of its pixels differ from the others (a blank canvas is all one colour).
HEATMAP_DRAWN = """() => {
  const canvas = document.getElementById("heatmap");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const colours = new Set();
  for (let i = 0; i < pixels.length; i += 4 * 37) colours.add(pixels.slice(i, i + 4).join(","));
  return colours.size > 5;
}"""


def missing(what: str):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing on CI ({INSTALL})")
    pytest.skip(f"{what} is missing: {INSTALL}")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        missing("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_text):
    """A tiny GPT trained for 120 steps, with a snapshot every 40: six stages with best/ and the latest."""
    root = tmp_path_factory.mktemp("browser")
    data = root / "input.txt"
    data.write_text(tiny_text, encoding="utf-8")
    out = root / "out"
    train(TrainConfig(
        data=str(data), out_dir=str(out), cache_dir=str(root / "cache"), n_layer=2, n_head=2, d_model=32,
        block_size=32, batch_size=8, lr=1e-2, warmup_iters=5, max_iters=120, eval_interval=40, eval_iters=2,
        log_interval=40, sample_tokens=0, peak_flops=1e12, device="cpu", dtype="float32", compile="off", seed=1234,
    ))
    return out


def test_generate_click_a_token_and_replay_through_training(browser, trained, tmp_path):
    app = playground.make_app(trained)
    problems = []  # anything the page logs as an error (a failed request, a blocked script, a JS exception)
    with playground.serve_in_background(app) as url:
        page = browser.new_page(viewport={"width": 1360, "height": 980})
        page.set_default_timeout(20_000)
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda err: problems.append(str(err)))
        page.goto(url)

        # The stages are there, the latest one chosen, its label shown.
        page.wait_for_function("() => document.getElementById('stage-label').textContent.length > 0")
        # 6 stages: snapshots 0, 40, 80, 120, best/, latest; the latest is chosen
        assert page.input_value("#stage") == page.get_attribute("#stage", "max") == "5"
        assert page.text_content("#stage-label") == "latest (step 120)"
        assert page.locator("#layer option").count() == 2 and page.locator("#head option").count() == 2

        page.fill("#prompt", "The king")
        page.fill("#max-new-tokens", "60")
        page.click("#generate")
        page.wait_for_function("() => document.querySelectorAll('#output .token.generated').length >= 5")
        page.wait_for_function("() => document.getElementById('status').textContent.includes('tokens in')")
        assert page.locator("#output .token.prompt").count() == len("The king")
        assert page.locator("#output .token.generated").count() == 60
        latest_text = page.text_content("#output")
        assert latest_text.startswith("The king")

        # Click a generated token: ten bars (one of them the chosen token, when it is among them) and a heatmap.
        page.locator("#output .token.generated").nth(6).click()
        page.wait_for_function("() => document.querySelectorAll('#probs .bar').length === 10")
        page.wait_for_function(HEATMAP_DRAWN)
        assert "Token 14 (the generated" in page.text_content("#caption")
        assert "was predicted at position 13" in page.text_content("#caption")
        widths = page.eval_on_selector_all("#probs .bar .fill", "bars => bars.map(b => parseFloat(b.style.width))")
        assert widths == sorted(widths, reverse=True) and 0 < sum(widths) <= 100.01
        assert page.locator("#row span").count() == 14  # the attention row over the 14 tokens seen

        # Another head redraws the heatmap.
        before = page.evaluate("document.getElementById('heatmap').toDataURL()")
        page.select_option("#head", "1")
        page.wait_for_function(f"() => document.getElementById('heatmap').toDataURL() !== {before!r}")

        # Back to step 0 with the slider (the keyboard, as a person would): the same prompt and seed again.
        page.focus("#stage")
        page.keyboard.press("Home")
        assert page.text_content("#stage-label") == "step 0"
        page.wait_for_function("() => document.getElementById('status').textContent.includes('step 0')")
        early_text = page.text_content("#output")
        assert early_text.startswith("The king") and early_text != latest_text

        # Generate once more at step 40, and leave the page showing a clicked token for the screenshot.
        page.keyboard.press("ArrowRight")
        page.click("#generate")
        page.wait_for_function("() => document.getElementById('status').textContent.includes('tokens in')")
        assert "step 40" in page.text_content("#status")
        page.locator("#output .token.generated").nth(10).click()
        page.wait_for_function("() => document.querySelectorAll('#probs .bar').length === 10")
        page.wait_for_function(HEATMAP_DRAWN)

        screenshot = tmp_path / "out" / "playground.png"
        screenshot.parent.mkdir()
        page.screenshot(path=str(screenshot), full_page=True)
        shutil.copy(screenshot, "/tmp/playground_screenshot.png")
        page.close()
    assert problems == []
    assert app.state.generations_active == 0
