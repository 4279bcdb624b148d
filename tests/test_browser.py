"""The real ComfyUI frontend in Debian's chromium, headless, against the test server: every
UI-format workflow loads with all its node types known and no error shown, the pack's templates
are in the template browser, and a queued workflow shows its image. Screenshots are kept in
test-artifacts/browser/ as the test's artifacts."""
import json
import time

import pytest
import requests
from chromium import Chromium
from comfy_server import REPO, ComfyServer

SHOTS = REPO / "test-artifacts" / "browser"
UI_WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
# the frontend's own dialogs and toasts that report a problem
PROBLEMS = """Array.from(document.querySelectorAll('.p-dialog, .p-toast-message-error, .p-toast-message-warn'))
  .filter(e => e.offsetParent !== null).map(e => e.innerText.trim().slice(0, 300))"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with ComfyServer(tmp_path_factory.mktemp("comfy")) as server, Chromium() as browser:
        # a first visit would open the template browser over the canvas
        requests.post(server.url + "/settings/Comfy.TutorialCompleted", json=True, timeout=10).raise_for_status()
        browser.open(server.url)
        browser.wait_for("!!(window.app && window.app.graph && window.LiteGraph && "
                         "window.LiteGraph.registered_node_types"
                         "['HSpaceEditedSampler'])")
        yield server, browser


def close_dialogs(browser: Chromium) -> None:
    # the template browser's close button has no label: try its icon buttons from the last one on
    for _ in range(4):
        if not browser.evaluate("document.querySelectorAll('.p-dialog').length"):
            return
        browser.evaluate("Array.from(document.querySelectorAll('.p-dialog button')).filter(b => !b.innerText.trim())"
                         ".reverse().forEach((b, i) => { if (document.querySelector('.p-dialog')) b.click(); })")
        time.sleep(0.5)
    raise AssertionError("a dialog stays open: " + str(browser.evaluate(PROBLEMS)))


def test_template_browser_lists_the_pack(page):
    server, browser = page
    browser.evaluate("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    browser.wait_for("document.querySelector('.p-dialog') !== null", timeout=30)
    browser.wait_for("""(() => { const item = Array.from(document.querySelectorAll('.p-dialog *')).reverse()
        .find(e => e.innerText && e.innerText.trim() === 'comfy-hspace');
        if (item) item.click();
        return !!item; })()""", timeout=30)
    names = [p.stem for p in UI_WORKFLOWS]
    # the grid draws the first cards (25 in this frontend); the others are found with its search box
    shown = browser.wait_for(f"""(() => {{ const text = document.querySelector('.p-dialog').innerText;
        return {json.dumps(names)}.filter(n => text.includes(n)).length >= {min(len(names), 20)} && text; }})()""",
                             timeout=30)
    for name in [n for n in names if n not in shown]:
        shown += browser.wait_for(f"""(() => {{ const box = document.querySelector('.p-dialog input');
            if (box.value !== {json.dumps(name)}) {{
                box.value = {json.dumps(name)}; box.dispatchEvent(new Event('input', {{bubbles: true}})); }}
            const text = document.querySelector('.p-dialog').innerText;
            return text.includes({json.dumps(name)}) && text; }})()""", timeout=30)
    browser.evaluate("(() => { const box = document.querySelector('.p-dialog input'); box.value = '';"
                     " box.dispatchEvent(new Event('input', {bubbles: true})); })()")
    # our thumbnails (512 × 384, fetched by the frontend as blobs) are drawn in the cards
    browser.wait_for("Array.from(document.querySelectorAll('.p-dialog img')).filter(i => i.complete"
                     " && i.naturalWidth === 512 && i.naturalHeight === 384).length >= 4", timeout=30)
    browser.screenshot(SHOTS / "templates.png")
    assert all(n in shown for n in names)
    # the API twins in workflows/api/ are not templates
    twins = [p.name.replace(".json", "") for p in (REPO / "workflows" / "api").rglob("*.api.json")]
    assert twins and not any(t in shown for t in twins)
    close_dialogs(browser)


@pytest.mark.parametrize("workflow", UI_WORKFLOWS, ids=[w.stem for w in UI_WORKFLOWS])
def test_workflow_loads_without_missing_nodes_or_errors(page, workflow):
    server, browser = page
    close_dialogs(browser)
    browser.evaluate(f"app.loadGraphData({workflow.read_text()}, true, true, {json.dumps(workflow.stem)})")
    browser.wait_for(f"app.graph._nodes.length === {len(json.loads(workflow.read_text())['nodes'])}", timeout=30)
    missing = browser.evaluate("app.graph._nodes.filter(n => !(n.type in LiteGraph.registered_node_types))"
                               ".map(n => n.type)")
    browser.evaluate("app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    time.sleep(0.5)
    browser.screenshot(SHOTS / f"{workflow.stem}.png")
    assert missing == []
    assert browser.evaluate(PROBLEMS) == []
    assert browser.errors == []


def test_queued_workflow_shows_its_image(page):
    server, browser = page
    close_dialogs(browser)
    workflow = REPO / "workflows" / "random_direction_strip.json"
    browser.evaluate(f"app.loadGraphData({workflow.read_text()}, true, true, 'random_direction_strip')")
    browser.evaluate("app.queuePrompt(0, 1)")
    browser.wait_for("app.graph._nodes.some(n => n.type === 'SaveImage' && n.imgs && n.imgs.length > 0"
                     " && n.imgs[0].complete && n.imgs[0].naturalWidth > 0)", timeout=600)
    browser.evaluate("app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    time.sleep(0.5)
    browser.screenshot(SHOTS / "queued_random_direction_strip.png")
    assert browser.evaluate(PROBLEMS) == []
    assert browser.errors == []
    assert list((server.base / "output").glob("*.png"))
