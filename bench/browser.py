"""What the browser does with the lab pages on big samples, on a slow lab PC (CPU throttled 4x).

    python bench/browser.py [--runs 3] [--throttle 4] [--only sample500,gallery2000,...] [--rebuild]

Needs Chromium at /usr/bin/chromium and Playwright (both as tests/browser uses them). Builds (once)
its own SQLite database and media under $LEUKOSCOPE_BENCH_DIR or var/bench-browser/: a sample of
500 cells on 10 photographs, one of 1,000 one-cell photographs, one of 2,000 cells on 20 photographs,
with a small real JPEG for every photograph and every cell's crop; then serves it with gunicorn on
127.0.0.1:$BENCH_BROWSER_PORT (8261) and opens each page in headless Chromium as a technologist,
fresh cache each run. Prints medians over --runs of: the HTML's bytes (sent, gzip; and unpacked),
the DOM's nodes, the time to DOMContentLoaded and load, the long tasks (> 50 ms) during the load,
Chrome's script / layout / style time; then, on the page loaded, the time from a key press to the
next frame that shows its effect (J on the sample page, a type key relabelling a row, the arrows
and a Shift+click range in the gallery, a type key relabelling 500 or 2,000 cells at once), and on
the sample page the cost of the live refresh when a photograph finishes. A relabel's time includes
the server's answer (the host's load shows in it); "server" says how long its requests took.
Not part of the test suite: it measures, it asserts nothing.
"""

import argparse
import functools
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

BENCH_DIR = Path(os.environ.get("LEUKOSCOPE_BENCH_DIR") or REPO_ROOT / "var" / "bench-browser")
PORT = int(os.environ.get("BENCH_BROWSER_PORT", "8261"))
BASE = f"http://127.0.0.1:{PORT}"
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "bench-front", "a-long-bench-passphrase-1"
TYPES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
# accession: (photographs, cells on each, photograph's size)
SAMPLES = {
    "FRONT-500": (10, 50, (1024, 768)),
    "FRONT-1000-ONE": (1000, 1, (300, 300)),
    "FRONT-2000": (20, 100, (1024, 768)),
}


def configure():
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["DATABASE_URL"] = f"sqlite:///{BENCH_DIR / 'browser.sqlite3'}"
    os.environ["LEUKOSCOPE_MEDIA_ROOT"] = str(BENCH_DIR / "media")
    os.environ["LEUKOSCOPE_VAR_DIR"] = str(BENCH_DIR)
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ.setdefault("LEUKOSCOPE_LOG_LEVEL", "WARNING")
    os.environ.pop("LEUKOSCOPE_DEBUG", None)
    # Playwright's sync API keeps an event loop in this thread; the ORM calls here are synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def jpeg(size, seed, quality=80):
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    picture = Image.new("RGB", size, (226, 200, 210))
    draw = ImageDraw.Draw(picture)
    for _ in range(max(3, size[0] * size[1] // 20000)):
        x, y, r = int(rng.integers(0, size[0])), int(rng.integers(0, size[1])), int(rng.integers(8, 40))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(int(rng.integers(90, 200)), 60, 140))
    encoded = io.BytesIO()
    picture.save(encoded, "JPEG", quality=quality)
    return encoded.getvalue()


def build():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import transaction

    from classifier.labels import BINARY_GROUP
    from webapp.models import Cell, ModelVersion, Sample, SmearImage

    user = get_user_model().objects.filter(username=USER).first()
    if user is None:
        user = get_user_model().objects.create_user(USER, password=PASSWORD)
        user.groups.add(Group.objects.get(name="technologist"))
    version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first() or \
        ModelVersion.objects.create(architecture="leukonet", task="4class", status=ModelVersion.Status.ACTIVE,
                                    class_names=list(TYPES), model_sha256="benchbrowser",
                                    input_spec={"height": 96, "width": 96, "mode": "cell", "crop": 120})
    media = BENCH_DIR / "media"
    crop_bytes = [jpeg((110, 110), seed) for seed in range(8)]
    for accession, (n_images, per_image, size) in SAMPLES.items():
        if Sample.objects.filter(accession_number=accession).exists():
            continue
        print(f"building {accession} ...", flush=True)
        rng = random.Random(accession)
        photo_bytes = [jpeg(size, seed + 100) for seed in range(4)]
        with transaction.atomic():
            sample = Sample.objects.create(accession_number=accession, created_by=user)
            for number in range(n_images):
                name = f"smears/front/{accession}-{number}.jpg"
                (media / name).parent.mkdir(parents=True, exist_ok=True)
                (media / name).write_bytes(photo_bytes[number % len(photo_bytes)])
                image = SmearImage.objects.create(
                    sample=sample, image=name, original_filename=f"field-{number:04d}.jpg", width=size[0],
                    height=size[1], file_size=len(photo_bytes[0]), checksum=f"{rng.getrandbits(256):064x}",
                    status=SmearImage.Status.DONE, model_version=version, quality={"focus": 20.0},
                    quality_warnings=[],
                )
                cells = []
                for index in range(per_image):
                    predicted = rng.choice(TYPES)
                    confidence = rng.uniform(0.3, 1.0)
                    crop = f"cells/front/{accession}-{number}-{index}.jpg"
                    (media / crop).parent.mkdir(parents=True, exist_ok=True)
                    (media / crop).write_bytes(crop_bytes[(number + index) % len(crop_bytes)])
                    x0 = 10 + (index % 10) * (size[0] - 20) // 10
                    y0 = 10 + (index // 10) * (size[1] - 20) // 10
                    side = min(60, size[0] - 20)
                    cells.append(Cell(
                        image=image, model_version=version, index=index, x0=x0, y0=y0, x1=x0 + side,
                        y1=y0 + side, crop=crop, predicted_type=predicted,
                        probabilities={t: confidence if t == predicted else (1 - confidence) / 3
                                       for t in TYPES},
                        confidence=confidence, binary_call=BINARY_GROUP[predicted],
                        needs_review=confidence < 0.8, cell_type=predicted, ood_score=0.5,
                    ))
                Cell.objects.bulk_create(cells)


class Server:
    def __enter__(self):
        env = dict(os.environ)
        self.process = subprocess.Popen(
            [str(REPO_ROOT / ".venv" / "bin" / "gunicorn"), "webapp.wsgi", "--bind", f"127.0.0.1:{PORT}",
             "--workers", "2", "--threads", "4", "--timeout", "120", "--log-level", "warning",
             # Else gunicorn makes ~/.gunicorn/gunicorn.ctl, outside this bench's folder, the path
             # a `make run` of the same user listens on too (and that the bench's removes at exit).
             "--no-control-socket"],
            cwd=REPO_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=open(BENCH_DIR / "gunicorn.log", "ab"))
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{BASE}/accounts/login/", timeout=2)
                return self
            except Exception:
                time.sleep(0.2)
        self.__exit__()
        raise SystemExit(f"gunicorn did not answer: see {BENCH_DIR / 'gunicorn.log'}")

    def __exit__(self, *exc):
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


# Long tasks and slow events (Event Timing, as INP reads them) from the page's start.
INIT = """
window.__perf = {longtasks: [], events: []};
try {
  new PerformanceObserver(l => l.getEntries().forEach(e => __perf.longtasks.push([e.startTime, e.duration])))
    .observe({type: 'longtask', buffered: true});
  new PerformanceObserver(l => l.getEntries().forEach(e => __perf.events.push(
    {name: e.name, start: e.startTime, dur: e.duration, handlers: e.processingEnd - e.processingStart})))
    .observe({type: 'event', buffered: true, durationThreshold: 16});
} catch (e) {}
"""

# Arms a watch: t0 at the next keydown (or now, for a mouse action), done at the frame after the
# predicate first holds after a DOM change.
ARM = """(kind) => {
  window.__watch = {t0: null, done: null, sawPending: false};
  const w = window.__watch;
  const selected = document.querySelector('tr.cellrow.selected');
  const oldRow = selected;
  const cell = selected && selected.dataset.cell;
  const predicates = {
    next_row: () => { const s = document.querySelector('tr.cellrow.selected'); return s && s !== oldRow; },
    row_redrawn: () => { const r = document.querySelector('tr.cellrow[data-cell="' + cell + '"]');
                         return r && r !== oldRow && !r.querySelector('button:disabled'); },
    tile_moved: () => { const f = document.activeElement; return f && f.classList.contains('gtile') &&
                         f.classList.contains('selected') && f !== window.__fromTile; },
    range: () => document.querySelectorAll('.gtile.selected').length > 1,
    relabelled: () => { if (document.querySelector('.gtile.pending')) { w.sawPending = true; return false; }
                        return w.sawPending; },
  };
  const holds = predicates[kind];
  window.__fromTile = document.activeElement;
  addEventListener('keydown', e => { if (w.t0 === null) w.t0 = e.timeStamp; }, {capture: true, once: true});
  addEventListener('mousedown', e => { if (w.t0 === null) w.t0 = e.timeStamp; }, {capture: true, once: true});
  const observer = new MutationObserver(() => {
    if (w.done !== null || w.t0 === null || !holds()) return;
    observer.disconnect();
    requestAnimationFrame(() => setTimeout(() => { w.done = performance.now() - w.t0; }, 0));
  });
  observer.observe(document.body, {subtree: true, childList: true, attributes: true,
                                    attributeFilter: ['class', 'disabled']});
}"""

COLLECT = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const lt = __perf.longtasks.filter(t => t[0] < nav.loadEventEnd + 1000);
  return {
    html_sent: nav.encodedBodySize, html: nav.decodedBodySize, transfer: nav.transferSize,
    nodes: document.querySelectorAll('*').length,
    dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, response_end: nav.responseEnd,
    longtasks: lt.length, longtask_ms: lt.reduce((a, t) => a + t[1], 0),
    longest: lt.reduce((a, t) => Math.max(a, t[1]), 0),
    resources: performance.getEntriesByType('resource').length,
    bytes_all: nav.transferSize +
      performance.getEntriesByType('resource').reduce((a, r) => a + r.transferSize, 0),
  };
}"""


def wait_for(page, expression, timeout=120):
    """page.wait_for_function evaluates a string in the page, which the site's CSP refuses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.05)


def cdp_metrics(cdp):
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def open_page(browser, state, url, throttle):
    context = browser.new_context(viewport={"width": 1360, "height": 900}, storage_state=state)
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.add_init_script(INIT)
    cdp = context.new_cdp_session(page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": throttle})
    cdp.send("Performance.enable")
    page.goto(url, wait_until="load")
    page.wait_for_timeout(1500)  # the long tasks just after load, lazy pictures in view
    figures = page.evaluate(COLLECT)
    metrics = cdp_metrics(cdp)
    figures.update(script_ms=metrics["ScriptDuration"] * 1000, layout_ms=metrics["LayoutDuration"] * 1000,
                   style_ms=metrics["RecalcStyleDuration"] * 1000)
    return context, page, cdp, figures


def press(page, key):
    return functools.partial(page.keyboard.press, key)


def timed(page, kind, action):
    """Milliseconds from the key press (or click) that ``action`` makes to the frame showing it,
    with the requests it made meanwhile (their durations) and the long tasks."""
    page.evaluate(ARM, kind)
    page.evaluate("performance.clearResourceTimings(); __perf.longtasks.length = 0")
    action()
    wait_for(page, "window.__watch.done !== null")
    ms = page.evaluate("window.__watch.done")
    server = page.evaluate("performance.getEntriesByType('resource').filter(r => r.initiatorType === 'fetch')"
                           ".reduce((a, r) => a + r.duration, 0)")
    longest = page.evaluate("__perf.longtasks.reduce((a, t) => Math.max(a, t[1]), 0)")
    return {"ms": ms, "server_ms": server, "longest_task": longest}


def median_of(runs):
    keys = runs[0].keys()
    return {key: statistics.median(run[key] for run in runs) for key in keys}


def load_figures(browser, state, url, throttle, runs):
    results = []
    for _ in range(runs):
        context, _page, _cdp, figures = open_page(browser, state, url, throttle)
        context.close()
        results.append(figures)
    return median_of(results)


def sample_keys(browser, state, url, throttle, runs):
    """J to the next row, five times; a type key on the row selected, three times; each run on a
    freshly loaded page."""
    moves, relabels = [], []
    for _ in range(runs):
        context, page, _cdp, _ = open_page(browser, state, url, throttle)
        page.keyboard.press("j")  # the first row
        page.wait_for_timeout(300)
        for _ in range(5):
            moves.append(timed(page, "next_row", press(page, "j")))
            page.wait_for_timeout(200)
        for _ in range(2):
            key = page.evaluate("document.querySelector('tr.cellrow.selected "
                                "button[aria-pressed=false][data-key]').dataset.key")
            relabels.append(timed(page, "row_redrawn", press(page, key.lower())))
            page.wait_for_timeout(300)
            page.keyboard.press("j")
            page.wait_for_timeout(300)
        events = page.evaluate("__perf.events.filter(e => e.name === 'keydown')")
        context.close()
    return median_of(moves), median_of(relabels), events


def live_refresh(browser, state, sample, url, throttle, runs):
    """A photograph of ``sample`` (its last: on a sample of several pages of photographs, one on
    another page than the first, shown) processing when the page opens, marked done in the
    database: the page's poll sees one more finished and redraws its results. The time from the
    results' answer to the frame after the redraw, with the long tasks meanwhile."""
    from webapp.models import SmearImage

    image = SmearImage.objects.filter(sample=sample).order_by("pk").last()
    figures = []
    for _ in range(runs):
        SmearImage.objects.filter(pk=image.pk).update(status=SmearImage.Status.PROCESSING)
        context, page, _cdp, _ = open_page(browser, state, url, throttle)
        page.evaluate("""() => {
          window.__refresh = null; __perf.longtasks.length = 0;
          const results = document.getElementById('results');
          const before = results.querySelectorAll('*').length;
          const seen = new Set(results.querySelectorAll('tr.cellrow'));
          const sidebar = results.querySelector('aside.sidebar');
          new MutationObserver(() => {
            if (window.__refresh) return;
            const rows = results.querySelectorAll('tr.cellrow');
            const fresh = Array.prototype.filter.call(rows, r => !seen.has(r)).length;
            // The formula beside them is redrawn in any case; cards only where they changed.
            if (!fresh && results.querySelector('aside.sidebar') === sidebar) return;
            const t = performance.now();
            requestAnimationFrame(() => setTimeout(() => {
              const fetched = performance.getEntriesByType('resource')
                .filter(r => r.name.includes('/results/'));
              const last = fetched[fetched.length - 1];
              window.__refresh = {ms: performance.now() - (last ? last.responseEnd : t), rows_redrawn: fresh,
                nodes_before: before, longest_task: __perf.longtasks.reduce((a, x) => Math.max(a, x[1]), 0),
                longtask_ms: __perf.longtasks.reduce((a, x) => a + x[1], 0),
                results_kib: last ? last.decodedBodySize / 1024 : 0};
            }, 0));
          }).observe(results, {subtree: true, childList: true});
        }""")
        SmearImage.objects.filter(pk=image.pk).update(status=SmearImage.Status.DONE)
        wait_for(page, "window.__refresh !== null")
        figures.append(page.evaluate("window.__refresh"))
        context.close()
    return median_of(figures)


def gallery_keys(browser, state, url, throttle, runs):
    """ArrowRight and ArrowDown from the first tile; a Shift+click from the first tile to the last;
    a type key relabelling that whole selection (and back, for the next run)."""
    right, down, ranges, relabels = [], [], [], []
    for _ in range(runs):
        context, page, _cdp, _ = open_page(browser, state, url, throttle)
        page.locator(".gtile").first.click()
        page.wait_for_timeout(300)
        for _ in range(3):
            right.append(timed(page, "tile_moved", press(page, "ArrowRight")))
            page.wait_for_timeout(200)
        for _ in range(3):
            down.append(timed(page, "tile_moved", press(page, "ArrowDown")))
            page.wait_for_timeout(200)
        page.locator(".gtile").first.click()
        page.wait_for_timeout(300)
        last = page.locator(".gtile").last
        last.scroll_into_view_if_needed()
        box = last.bounding_box()
        page.keyboard.down("Shift")
        ranges.append(timed(page, "range", functools.partial(page.mouse.click, box["x"] + 5, box["y"] + 5)))
        page.keyboard.up("Shift")
        page.wait_for_timeout(300)
        key = "m" if len(relabels) % 2 == 0 else "l"
        relabels.append(timed(page, "relabelled", press(page, key)))
        context.close()
    return median_of(right), median_of(down), median_of(ranges), median_of(relabels)


def sign_in_state(browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{BASE}/accounts/login/")
    page.fill("#id_username", USER)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{BASE}/")
    state = context.storage_state()
    context.close()
    return state


def show(name, figures):
    print(f"{name:44} " + "  ".join(f"{k}={v:,.0f}" if isinstance(v, (int, float)) else f"{k}={v}"
                                    for k, v in figures.items()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--throttle", type=float, default=4)
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(
        ("sample500", "sample1000", "gallery500", "gallery2000", "refresh", "pages")))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    if args.rebuild:
        import shutil
        shutil.rmtree(BENCH_DIR, ignore_errors=True)
    configure()
    build()
    from playwright.sync_api import sync_playwright

    from webapp.models import Sample

    samples = {s.accession_number: s for s in Sample.objects.filter(accession_number__in=SAMPLES)}
    only = set(filter(None, args.only.split(",")))

    def wanted(name):
        return not only or name in only

    out = {}
    print(f"CPU throttled {args.throttle:g}x, medians of {args.runs} runs, host load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    with Server(), sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        state = sign_in_state(browser)
        s500 = f"{BASE}/samples/{samples['FRONT-500'].pk}/"
        s1000 = f"{BASE}/samples/{samples['FRONT-1000-ONE'].pk}/"
        g500 = f"{BASE}/samples/{samples['FRONT-500'].pk}/gallery/"
        g2000 = f"{BASE}/samples/{samples['FRONT-2000'].pk}/gallery/"
        loads = []
        if wanted("sample500"):
            loads.append(("sample page, 500 cells / 10 photographs", s500))
        if wanted("sample1000"):
            loads.append(("sample page, 1,000 one-cell photographs", s1000))
        if wanted("gallery500"):
            loads.append(("gallery, 500 cells", g500))
        if wanted("gallery2000"):
            loads.append(("gallery, 2,000 cells", g2000))
        if wanted("pages"):
            loads += [("history", f"{BASE}/history/"), ("history, table", f"{BASE}/history/?view=table"),
                      ("report, 500 cells", f"{BASE}/samples/{samples['FRONT-500'].pk}/report/"),
                      ("models", f"{BASE}/models/"), ("sample list", f"{BASE}/samples/")]
        for name, url in loads:
            out[f"load: {name}"] = figures = load_figures(browser, state, url, args.throttle, args.runs)
            show(f"load: {name}", figures)
        for name, url in (("sample500", s500), ("sample1000", s1000)):
            if not wanted(name):
                continue
            move, relabel, _events = sample_keys(browser, state, url, args.throttle, args.runs)
            out[f"{name}: J"], out[f"{name}: type key"] = move, relabel
            show(f"{name}: J to the next row", move)
            show(f"{name}: type key to the row redrawn", relabel)
        if wanted("refresh"):
            for name, accession, url in (("sample500", "FRONT-500", s500),
                                         ("sample1000", "FRONT-1000-ONE", s1000)):
                out[f"{name}: live refresh"] = figures = live_refresh(
                    browser, state, samples[accession], url, args.throttle, args.runs)
                show(f"{name}: live refresh, a photograph done", figures)
        for name, url in (("gallery500", g500), ("gallery2000", g2000)):
            if not wanted(name):
                continue
            right, down, shift, relabel = gallery_keys(browser, state, url, args.throttle, args.runs)
            out.update({f"{name}: right": right, f"{name}: down": down, f"{name}: range": shift,
                        f"{name}: relabel all": relabel})
            show(f"{name}: ArrowRight", right)
            show(f"{name}: ArrowDown", down)
            show(f"{name}: Shift+click, all selected", shift)
            show(f"{name}: type key, all relabelled", relabel)
        browser.close()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
