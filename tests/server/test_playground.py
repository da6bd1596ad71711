"""The playground at /playground, driven in a real browser (Debian's chromium and chromium-driver) against a
real `rerankd serve` that needs an API key and serves three models (two cross-encoders, one LLM reranker).

scripts/test.sh installs chromium when it is missing; without it the browser tests skip, saying so.
The screenshot of the ranked page lands in tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from server_harness import ServerProcess

from rerankd.server.app import create_app
from rerankd.server.metrics import Metrics
from rerankd.server.models import ModelRegistry
from rerankd.settings import Settings
from rerankd.testing import make_causal_test_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
KEY = "playground-test-key"
# A generous deadline on each page event (an answer drawn, a dialog shown), never a measured wait.
EVENT_S = 120
QUERY = "What do giant pandas eat?"
DOCUMENTS = [
    "The giant panda's diet is over 99% bamboo.",
    "Panda Express is an American fast-food chain.",
    "Red pandas also eat bamboo, plus fruit and insects.",
]


@pytest.fixture(scope="module")
def server(start_module_server: Callable[..., ServerProcess], xlmr_dir: Path, bert_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    qwen3 = make_causal_test_model(tmp_path_factory.mktemp("qwen3-tiny"), shape="tiny", arch="qwen3")
    return start_module_server([f"xlmr={xlmr_dir}", f"bert={bert_dir}", f"qwen3={qwen3}"],
                               ["--api-key", KEY, "--max-documents", "4"])


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver: `apt-get install chromium chromium-driver` "
                    "(scripts/test.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    # The driver given, so Selenium never tries to download one.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def wait(driver: WebDriver) -> WebDriverWait:
    return WebDriverWait(driver, EVENT_S)


@pytest.fixture(scope="module")
def page(browser: WebDriver, server: ServerProcess) -> WebDriver:
    """The playground, loaded without a key: its first call answers 401, so it asks for one."""
    browser.get(server.url + "/playground")
    wait(browser).until(expected_conditions.visibility_of_element_located((By.ID, "api-key"))).send_keys(KEY)
    browser.find_element(By.ID, "key-save").click()
    wait(browser).until(lambda d: "xlmr, bert" in d.find_element(By.ID, "served").text)
    return browser


def fill(
    page: WebDriver, query: str, documents: str, *, top_n: str = "", model: str | None = None, paste: bool = False
) -> None:
    """Type into the form; `paste` sets the documents at once, for texts too long to type in good time."""
    for field, value in (("query", query), ("documents", documents), ("top-n", top_n)):
        element = page.find_element(By.ID, field)
        element.clear()
        if paste and field == "documents":
            page.execute_script("arguments[0].value = arguments[1]", element, value)
        else:
            element.send_keys(value)
    if model is not None:
        Select(page.find_element(By.ID, "model")).select_by_value(model)


def submit(page: WebDriver, query: str, documents: str, **form: object) -> None:
    """Fill the form, send it, and wait until the answer (results or an error) is drawn."""
    fill(page, query, documents, **form)  # type: ignore[arg-type]
    # What the last answer drew goes first, so the wait below can only see this one's.
    page.execute_script("document.getElementById('results').replaceChildren();"
                        "document.getElementById('error').hidden = true")
    page.find_element(By.ID, "submit").click()
    wait(page).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results li")
                     or d.find_element(By.ID, "error").is_displayed())
    wait(page).until(lambda d: d.find_element(By.ID, "submit").is_enabled())


def shown_ranking(page: WebDriver) -> list[tuple[int, str]]:
    """(document index, score as shown) of each result, best first."""
    return [
        (int(item.get_attribute("data-index")), item.find_element(By.CLASS_NAME, "score").text)
        for item in page.find_elements(By.CSS_SELECTOR, "#results li")
    ]


def api_ranking(results: list[dict]) -> list[tuple[int, str]]:
    return [(r["index"], f"{r['relevance_score']:.4f}") for r in results]


def copied(page: WebDriver, format: str) -> str:
    page.find_element(By.CSS_SELECTOR, f"#copy button[data-format={format}]").click()
    snippet = page.find_element(By.ID, "snippet")
    wait(page).until(lambda _: snippet.get_attribute("data-format") == format)
    return snippet.get_attribute("textContent")


def test_the_page_ranks_as_the_api_does_and_its_snippets_run(page: WebDriver, server: ServerProcess) -> None:
    submit(page, QUERY, "\n".join(DOCUMENTS))
    assert page.find_element(By.ID, "error").get_attribute("hidden") is not None
    request = json.loads(copied(page, "json"))
    assert request == {"query": QUERY, "documents": DOCUMENTS, "model": "xlmr", "raw_scores": True}
    with server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        answer = client.post("/rerank", json=request).json()["results"]
    shown = shown_ranking(page)
    assert shown == api_ranking(answer) and len(shown) == 3
    # The logit on hover, the timing split from the response headers.
    bars = [item.find_element(By.CLASS_NAME, "bar") for item in page.find_elements(By.CSS_SELECTOR, "#results li")]
    assert [float(bar.get_attribute("title").rsplit(" ", 1)[1]) for bar in bars] == [r["raw_score"] for r in answer]
    timing = page.find_element(By.ID, "timing").text
    for label in ("tokenize", "queue", "model", "total", "cache hits"):
        assert label in timing
    assert timing.count(" ms") == 4
    ARTIFACTS.mkdir(exist_ok=True)
    page.save_screenshot(str(ARTIFACTS / "playground.png"))

    curl = copied(page, "curl")
    assert f"Bearer {KEY}" in curl
    ran = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=EVENT_S)
    assert ran.returncode == 0, ran.stderr
    assert api_ranking(json.loads(ran.stdout)["results"]) == shown

    program = copied(page, "python")
    ran = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=EVENT_S)
    assert ran.returncode == 0, ran.stderr
    printed = [line.split() for line in ran.stdout.splitlines()]
    assert [(int(index), f"{float(score):.4f}") for index, score in printed] == shown


def test_the_model_selector_a_json_array_and_top_n(page: WebDriver, server: ServerProcess) -> None:
    documents = [{"text": DOCUMENTS[0]}, {"text": DOCUMENTS[1]}, {"text": DOCUMENTS[2]}]
    submit(page, QUERY, json.dumps(documents), top_n="2", model="bert")
    with server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        answer = client.post("/rerank", json={"query": QUERY, "documents": documents, "model": "bert", "top_n": 2})
    assert shown_ranking(page) == api_ranking(answer.json()["results"])


def test_an_llm_reranker_gets_an_instruction_field_and_a_cross_encoder_none(
    page: WebDriver, server: ServerProcess
) -> None:
    field = page.find_element(By.ID, "instruction-field")
    Select(page.find_element(By.ID, "model")).select_by_value("xlmr")
    assert not field.is_displayed()
    Select(page.find_element(By.ID, "model")).select_by_value("qwen3")
    assert field.is_displayed()
    instruction = "Judge whether the passage is about what pandas eat"
    page.find_element(By.ID, "instruction").clear()
    page.find_element(By.ID, "instruction").send_keys(instruction)
    submit(page, QUERY, "\n".join(DOCUMENTS), model="qwen3")
    with server.client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        answer = client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "model": "qwen3",
                                              "instruction": instruction})
        default = client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "model": "qwen3"})
    assert answer.json()["results"] != default.json()["results"]  # the instruction reached the model
    assert shown_ranking(page) == api_ranking(answer.json()["results"])
    page.find_element(By.ID, "instruction").clear()
    Select(page.find_element(By.ID, "model")).select_by_value("xlmr")
    assert not field.is_displayed()


def test_a_truncated_document_is_marked(page: WebDriver) -> None:
    long_document = " ".join(f"Sentence {i} is about bamboo forests and the rivers of Sichuan." for i in range(120))
    submit(page, QUERY, f"{DOCUMENTS[0]}\n{long_document}", paste=True)
    marks = {item.get_attribute("data-index"): item.find_elements(By.CLASS_NAME, "truncated")
             for item in page.find_elements(By.CSS_SELECTOR, "#results li")}
    assert [len(marks["0"]), len(marks["1"])] == [0, 1]
    assert "truncated" in page.find_element(By.ID, "warnings").text


@pytest.mark.parametrize(
    ("query", "documents", "message"),
    [
        ("", "\n".join(DOCUMENTS), "HTTP 400: query is empty"),
        (QUERY, json.dumps([{"title": "no text"}]), "HTTP 422: invalid request: documents.0: an object document"),
        (QUERY, "\n".join(DOCUMENTS + DOCUMENTS), "HTTP 413: 6 documents is more than the limit of 4"),
        (QUERY, '["not", JSON]', "Documents: not a valid JSON array"),  # the page's own check
    ],
)
def test_an_error_shows_the_servers_message(page: WebDriver, query: str, documents: str, message: str) -> None:
    submit(page, query, documents)
    error = page.find_element(By.ID, "error")
    assert error.is_displayed() and error.text.startswith(message), error.text
    assert not page.find_elements(By.CSS_SELECTOR, "#results li")


def test_a_refused_key_is_asked_for_again_and_a_cancel_shows_the_401(page: WebDriver) -> None:
    page.execute_script("sessionStorage.setItem(KEY_STORAGE, 'not-the-key')")
    fill(page, QUERY, DOCUMENTS[0])
    page.find_element(By.ID, "submit").click()
    wait(page).until(expected_conditions.visibility_of_element_located((By.ID, "key-cancel"))).click()
    wait(page).until(lambda d: d.find_element(By.ID, "submit").is_enabled())
    assert page.find_element(By.ID, "error").text.startswith("HTTP 401: missing or wrong API key")
    page.execute_script("sessionStorage.setItem(KEY_STORAGE, arguments[0])", KEY)


def test_a_highlight_marks_its_characters_counted_as_python_counts_them(page: WebDriver) -> None:
    """The page's drawing of a chunked document's best window, fed a hand-made answer (chunk mode comes from
    the server): its offsets count code points, and the panda before it takes two UTF-16 units."""
    text, short = "熊猫 🐼 eats bamboo every day", "A short one 🐼"
    start = text.index("bamboo")
    answer = {
        "results": [
            {"index": 0, "relevance_score": 0.5, "truncated": False, "chunks": 3,
             "highlight": {"start": start, "end": start + len("bamboo")}, "document": {"text": text}},
            # A document that fit in one window is highlighted whole: nothing to mark.
            {"index": 1, "relevance_score": 0.4, "truncated": False, "chunks": 1,
             "highlight": {"start": 0, "end": len(short)}, "document": {"text": short}},
        ],
        "meta": {},
    }
    page.execute_script("showResults(arguments[0], arguments[1])", answer, [text, short])
    chunked, whole = page.find_elements(By.CSS_SELECTOR, "#results li")
    assert chunked.find_element(By.TAG_NAME, "mark").text == "bamboo"
    assert chunked.find_element(By.CLASS_NAME, "text").text == text
    assert "best of 3 chunks" in chunked.text
    assert not whole.find_elements(By.TAG_NAME, "mark") and "chunk" not in whole.text


def test_the_api_reference_links_to_the_playground(browser: WebDriver, server: ServerProcess) -> None:
    playground = browser.current_window_handle
    browser.switch_to.new_window("tab")
    try:
        browser.get(server.url + "/docs")
        link = wait(browser).until(expected_conditions.visibility_of_element_located((By.LINK_TEXT, "the playground")))
        assert link.get_attribute("href") == server.url + "/playground"  # resolved, as a click would
    finally:
        browser.close()
        browser.switch_to.window(playground)


def _app_get(settings: Settings, path: str) -> httpx.Response:
    """GET `path` from the real app in process, with no model loaded (its lifespan never runs)."""
    metrics = Metrics()
    app = create_app(settings, ModelRegistry(settings, [("m", "m")], metrics), metrics)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return await client.get(path)

    return asyncio.run(get())


def test_the_page_its_files_and_its_link_on_docs_are_served_by_default() -> None:
    settings = Settings()
    page = _app_get(settings, "/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert _app_get(settings, "/playground/playground.js").status_code == 200
    assert _app_get(settings, "/playground/").headers["location"] == "../playground"
    assert "(playground)" in _app_get(settings, "/openapi.json").json()["info"]["description"]


def test_no_playground_turns_the_page_and_its_link_off() -> None:
    settings = Settings(no_playground=True)
    for path in ("/playground", "/playground/playground.js"):
        assert _app_get(settings, path).status_code == 404
    assert "playground" not in _app_get(settings, "/openapi.json").json()["info"]["description"]
