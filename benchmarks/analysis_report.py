"""Does the analysis page stay usable at scale? Three systems on 5,000 sentences (How2Sign's
test set is 2,349): the time to build the page, its size, and in headless Chromium the time
to load it, to sort the sentence table and to filter it.

    python -m benchmarks.analysis_report            # about 2 minutes on 2 cores

The sentences are synthetic: references of 3 to 45 words drawn from a Zipf-distributed
vocabulary, each system's hypotheses the references with words dropped, replaced and cut
short at its own rates, and a few stock outputs. A sort or a filter is timed from the click
(or the choice of a bucket) until the browser has laid the table out again.
"""
import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from sonar_t5.evaluation.analysis.__main__ import main as analysis_main

from .browser import chromium_driver

SYSTEMS = {"weak": (0.35, 0.25), "middle": (0.2, 0.15), "strong": (0.08, 0.05)}  # drop, replace
STOCK = ["good.", "thank you.", "hi."]


def make_systems(folder, sentences, seed=0):
    """Writes each system's translations.txt under folder/NAME -> their directories."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(3000)]
    weights = [1 / (i + 1) for i in range(len(vocabulary))]
    references = [" ".join(rng.choices(vocabulary, weights, k=rng.randint(3, 45)))
                  for _ in range(sentences)]
    folders = []
    for name, (drop, replace) in SYSTEMS.items():
        lines = ["id\treference\ttranslation"]
        for i, reference in enumerate(references):
            if rng.random() < 0.02:
                hypothesis = rng.choice(STOCK)
            else:
                words = [rng.choice(vocabulary) if rng.random() < replace else w
                         for w in reference.split() if rng.random() >= drop]
                cut = len(words) if len(words) < 25 else rng.randint(20, len(words))
                hypothesis = " ".join(words[:cut]) or "hi."
            lines.append(f"id_{i:05d}\t{reference}\t{hypothesis}")
        (folder / name).mkdir(parents=True)
        (folder / name / "translations.txt").write_text("\n".join(lines) + "\n")
        folders.append(folder / name)
    return folders


# From the event to the browser's next layout of the table: the handlers run synchronously,
# reading offsetHeight forces the layout they caused.
TIMED = """
const started = performance.now();
%s
document.body.offsetHeight;
return performance.now() - started;
"""
SORT = "document.querySelector('#sentences th[data-col=\"%d\"]').click();"
FILTER = ("const s = document.getElementById('bucket'); s.value = '%s';"
          "s.dispatchEvent(new Event('change'));")


def browser_timings(page):
    driver = chromium_driver()
    try:
        started = time.perf_counter()
        driver.get(page.as_uri())  # returns once the page has loaded and its script ran
        load_s = time.perf_counter() - started
        rows = driver.execute_script("return document.querySelectorAll('#sentences tbody tr')"
                                     ".length")
        sorts = [driver.execute_script(TIMED % (SORT % col)) for col in (4, 4, 8, 1)]
        filters = [driver.execute_script(TIMED % (FILTER % value))
                   for value in ("len:6-10", "miss:0", "")]
        return {"rows": rows, "load_s": load_s, "sort_ms": sorts, "filter_ms": filters}
    finally:
        driver.quit()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sentences", type=int, default=5000)
    p.add_argument("--output", default="benchmarks/analysis_report_results.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_systems(Path(tmp), args.sentences)
        page = Path(tmp) / "report.html"
        started = time.perf_counter()
        analysis_main([*map(str, folders), "--output", str(page), "--n_samples", "1000"])
        build_s = time.perf_counter() - started
        result = {"sentences": args.sentences, "systems": len(folders), "build_s": build_s,
                  "page_mb": page.stat().st_size / 1e6, **browser_timings(page)}
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{result['systems']} systems x {result['sentences']} sentences: page built in "
          f"{build_s:.0f} s, {result['page_mb']:.1f} MB; in headless Chromium loaded in "
          f"{result['load_s']:.1f} s, sorted in {max(result['sort_ms']):.0f} ms at most "
          f"({', '.join(f'{t:.0f}' for t in result['sort_ms'])}), filtered in "
          f"{max(result['filter_ms']):.0f} ms at most")
    return result


if __name__ == "__main__":
    main()
