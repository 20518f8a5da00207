"""The analysis report: each statistic against an independent computation on hand-made files,
the page as a browser runs it (headless Chromium), its bad input."""
import json
import re

import pytest
from sacrebleu.metrics import BLEU

from benchmarks.browser import BrowserMissing, chromium_driver
from sonar_t5.evaluation.analysis import breakdown
from sonar_t5.evaluation.report import bleu_by_length

from .conftest import assert_user_error, run_script

ANALYSIS = ("-m", "sonar_t5.evaluation.analysis")
HEADER = "id\treference\ttranslation\n"
ATTACK = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'

REFERENCES = [
    "the cat sat on the mat",                          # 6 words
    "we fold the paper along the middle line now",     # 9
    "good morning to everyone here",                   # 5
    "cut the apple into four thin slices",             # 7
    "you can see the red apple pie on the table",      # 10
    "now mix the flour and the sugar together in a bowl before you add the eggs",  # 16
    "this is how you tie a knot",                      # 7
    ATTACK,
]
SYSTEM_A = [
    "the cat sat on the mat",                          # perfect
    "we fold the paper in the middle",
    "good.",                                           # a stock output
    "cut the apple into thin slices",
    "you can see the red apple pie",
    "now mix the flour and sugar in a bowl",
    "good.",
    "good.",
]
SYSTEM_B = [
    "it is on the",                                    # no content word of the reference
    "we fold the paper along the line",
    "good morning everyone",
    "you slice it",                                    # no content word either (slice, slices)
    "you can see the green apple pie on the table",
    "now mix the flour and the sugar together in a bowl",
    "this is how you tie a knot",
    ATTACK,
]


def write_outputs(folder, hypotheses, references=REFERENCES, ids=None):
    folder.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"s{i:02d}" for i in range(len(references))]
    (folder / "translations.txt").write_text(HEADER + "".join(
        f"{i}\t{r}\t{h}\n" for i, r, h in zip(ids, references, hypotheses)), encoding="utf-8")
    return folder


def test_each_statistic_matches_a_computation_by_hand():
    # a bucket's BLEU and length ratio: sacrebleu on that bucket's sentences alone
    rows = {bucket: (n, bleu, ratio) for bucket, n, bleu, ratio in
            bleu_by_length(REFERENCES, SYSTEM_A)}
    short = [i for i, r in enumerate(REFERENCES) if len(r.split()) <= 5]
    score = BLEU().corpus_score([SYSTEM_A[i] for i in short], [[REFERENCES[i] for i in short]])
    assert rows["1-5"] == (len(short), pytest.approx(score.score),
                           pytest.approx(score.sys_len / score.ref_len))
    assert rows["16-20"][0] == 1 and sum(n for n, _, _ in rows.values()) == len(REFERENCES)

    # hypotheses sharing no content word with their reference: B's first and fourth
    assert breakdown.no_content_overlap(SYSTEM_B, REFERENCES) == ([0, 3], len(REFERENCES))
    assert breakdown.no_content_overlap(REFERENCES, REFERENCES) == ([], len(REFERENCES))

    # repeated outputs, most frequent first; none where every output is distinct
    assert breakdown.repeated_outputs(SYSTEM_A) == [("good.", 3)]
    assert breakdown.repeated_outputs(SYSTEM_B) == []

    # word F by frequency: "cat" and "dog" seen once in training, "bird" never. Bucket 1:
    # reference words cat + dog = 2, hypothesis words cat x2 = 2, matched min(2, 1) = 1
    rows = breakdown.word_f_by_frequency(["cat cat bird"], ["cat dog"],
                                         {"cat": 1, "dog": 1, "bird": 0})
    assert rows == [("1", 2, pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))]

    # n-grams one system matches and the other does not
    more_a, more_b = breakdown.ngram_differences(["red apple pie"], ["green apple pie"],
                                                 ["red apple pie"])
    assert {g for g, _, _ in more_a[:3]} == {"red", "red apple", "red apple pie"}
    assert all(a == 1 and b == 0 for _, a, b in more_a[:3])
    assert {"apple", "pie", "apple pie"} <= {g for g, a, b in more_a + more_b if a == b == 1}


def test_the_page_holds_every_number_and_shows_markup_as_text(tmp_path):
    a = write_outputs(tmp_path / "system_a", SYSTEM_A)
    b = write_outputs(tmp_path / "system_b", SYSTEM_B)
    train = tmp_path / "train.tsv"
    train.write_text("id\ttext\n" + "".join(f"t{i}\tthe cat sat on the mat and the dog\n"
                                            for i in range(12)))
    page = tmp_path / "report.html"
    result = run_script(*ANALYSIS, a, b, "--output", page, "--train_manifest", train,
                        "--n_samples", "20", check=True)
    assert f"wrote {page}" in result.stdout
    html = page.read_text()
    assert html.count("<tr data-bucket=") == len(REFERENCES)
    # markup in a sentence is text: escaped in the page, never a tag
    assert "<script>window.pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html
    # nothing outside the file: every src and href is inside it (data: or #anchor)
    assert re.findall(r'(?:src|href)="([^"]*)"', html)
    assert all(u.startswith(("data:image/png;base64,", "#"))
               for u in re.findall(r'(?:src|href)="([^"]*)"', html))
    assert "default-src 'none'" in html
    # the numbers: the stock output with its count, B's no-overlap share (2 of 8)
    assert re.search(r"<td>good\.</td><td class=\"num\">3</td>", html)
    assert "25.0%" in html and "2 of 8" in html
    assert "the training text" in html and "12 sentences" in html
    assert "system_b against system_a" in html


@pytest.fixture
def two_systems(tmp_path):
    return (write_outputs(tmp_path / "system_a", SYSTEM_A),
            write_outputs(tmp_path / "system_b", SYSTEM_B))


def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, two_systems):
    a, b = two_systems
    page = tmp_path / "report.html"
    other = write_outputs(tmp_path / "other", SYSTEM_B,
                          ids=[f"s{i:02d}" for i in range(7)] + ["x99"])
    assert_user_error(run_script(*ANALYSIS, a, other, "--output", page), "differ at sentence 8",
                      "x99")
    shorter = write_outputs(tmp_path / "shorter", SYSTEM_B[:5], REFERENCES[:5])
    assert_user_error(run_script(*ANALYSIS, a, shorter, "--output", page), "scored 5 sentences")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "translations.txt").write_text(HEADER)
    assert_user_error(run_script(*ANALYSIS, empty, "--output", page), "no translations",
                      "translations.txt")
    assert_user_error(run_script(*ANALYSIS, a, "--output", tmp_path / "missing" / "r.html"),
                      "directory does not exist")
    assert_user_error(run_script(*ANALYSIS, a, "--output", tmp_path / "report.pdf"),
                      "must end in .html")
    assert_user_error(run_script(*ANALYSIS, a, "--attention_ids", "s01", "--output", page),
                      "give --checkpoint too")
    assert not page.exists()


def test_a_run_with_its_checkpoint_gets_attention_maps_and_training_names_the_command(
        tiny_run, tiny_data, tmp_path):
    run, training = tiny_run
    command = next(line for line in training.stdout.splitlines()
                   if "sonar_t5.evaluation.analysis" in line)
    assert f"{run} --split test --train_manifest" in command
    ids = [line.split("\t")[0] for line in
           (run / "results" / "test" / "translations.txt").read_text().splitlines()[1:]]
    page = tmp_path / "report.html"
    run_script(*ANALYSIS, run, "--output", page, "--checkpoint", run / "best_model.pt",
               "--attention_ids", ids[4], ids[1], "--n_samples", "20", check=True)
    html = page.read_text()
    assert re.findall(r'alt="attention of ([^"]+)"', html) == [ids[4], ids[1]]
    assert html.count("<tr data-bucket=") == len(ids)
    assert_user_error(run_script(*ANALYSIS, run, "--output", page, "--checkpoint",
                                 run / "best_model.pt", "--attention_ids", "no_such_id"),
                      "'no_such_id'", "not a sentence")


# -- in a real browser ------------------------------------------------------------------------
def chromium():
    try:
        return chromium_driver()
    except BrowserMissing as why:
        pytest.skip(str(why))


def visible_rows(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#sentences tbody tr'))"
        ".filter(r => !r.hidden).map(r => r.cells[0].textContent)")


def test_the_page_sorts_filters_and_runs_nothing_from_the_data_in_chromium(tmp_path,
                                                                            two_systems):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    a, b = two_systems
    page = tmp_path / "report.html"
    run_script(*ANALYSIS, a, b, "--output", page, "--n_samples", "20", check=True)
    driver = chromium()
    try:
        driver.get(page.as_uri())
        ids = [f"s{i:02d}" for i in range(len(REFERENCES))]
        assert visible_rows(driver) == ids

        # sort by system_a's sentence BLEU: ascending, then descending
        header = driver.find_element(By.CSS_SELECTOR, '#sentences th[data-col="4"]')
        header.click()
        order = visible_rows(driver)
        values = driver.execute_script(
            "return Array.from(document.querySelectorAll('#sentences tbody tr'))"
            ".map(r => parseFloat(r.cells[4].dataset.sort))")
        assert order[0] != ids[0] and values == sorted(values)
        assert header.get_attribute("aria-sort") == "ascending"
        header.click()
        assert visible_rows(driver)[0] == "s00"  # system_a's perfect sentence: BLEU 100

        # filter by text (after the pause in typing), then by bucket
        driver.find_element(By.ID, "filter").send_keys("apple")
        WebDriverWait(driver, 5).until(lambda d: len(visible_rows(d)) < len(ids))
        assert sorted(visible_rows(driver)) == ["s03", "s04"]
        assert driver.find_element(By.ID, "shown").text == "2 of 8 sentences shown"
        driver.find_element(By.ID, "filter").clear()
        driver.execute_script("document.getElementById('filter').dispatchEvent("
                              "new Event('input'))")
        Select(driver.find_element(By.ID, "bucket")).select_by_value("miss:1")
        assert sorted(visible_rows(driver)) == ["s00", "s03"]  # system_b's misses

        # the data's markup is text: shown as written, never run
        assert driver.execute_script("return window.pwned") is None
        cells = driver.execute_script(
            "return Array.from(document.querySelectorAll('#sentences td'))"
            ".map(c => c.textContent)")
        assert ATTACK in cells

        driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests
                if m["method"] == "Network.requestWillBeSent"]
        assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
    finally:
        driver.quit()
