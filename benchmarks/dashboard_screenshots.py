"""Screenshots of the dashboard on a replayed store, for docs/dashboard/.

    persona bench online --seeds 0 --keep /tmp/replay_home ...   # a store after launch + replay
    python benchmarks/dashboard_screenshots.py --home /tmp/replay_home --out docs/dashboard \
        --offline benchmarks/results/reward_popquorn.json

Serves ``create_app`` over the store with uvicorn on a loopback port, logs in with a fresh API key
in Debian's headless Chromium (Selenium, /usr/bin/chromium and /usr/bin/chromedriver), and saves
the overview, the users map, the page of the user the model serves worst, and that page after the
"try it" box ranked a few of the store's texts for them. With ``--offline``, the active model's
offline figure (the reward benchmark's unseen-user accuracy at k=20) is recorded first, so the
overview shows it beside the online curve.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from selenium.webdriver.common.by import By

from persona_engine.engine import Engine
from persona_engine.service.app import create_app
from persona_engine.testing.browser import chromium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="The store's user directory.")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard"))
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--offline", type=Path, default=None)
    args = parser.parse_args()
    engine = Engine(args.home, encoder=args.encoder)
    rec = engine.model_record()
    if args.offline is not None:
        fig = json.loads(args.offline.read_text())["results"][rec.backend]["unseen"]["20"]
        engine.set_offline_figure(
            rec.id,
            fig["per_user"],
            ci=tuple(fig["per_user_ci95"]),
            source=f"{args.offline.name}: unseen users, k=20",
        )
    report = engine.online_report(worst=1)
    worst = report["models"][0]["worst_users"][0]["user_id"]
    texts = [c.chosen for c in engine.store.comparisons(worst)[:3]]
    texts = list(dict.fromkeys(texts + [c.rejected for c in engine.store.comparisons(worst)[:3]]))[
        :5
    ]
    app = create_app(engine)
    key = app.state.service.keys.create(name="screenshots")[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/dashboard"
    driver = chromium(Path(tempfile.mkdtemp(prefix="chromium-")), window=(1280, 1800))
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(url)
        driver.find_element(By.ID, "key").send_keys(key)
        driver.find_element(By.ID, "login-submit").click()
        for _ in range(120):  # the first overview computes its figures (bootstrap CIs)
            if "as of" in driver.page_source or driver.find_elements(By.TAG_NAME, "img"):
                break
            time.sleep(1)
            driver.refresh()
        driver.save_screenshot(str(args.out / "overview.png"))
        driver.get(f"{url}/users")
        time.sleep(1)
        driver.save_screenshot(str(args.out / "users.png"))
        driver.get(f"{url}/user?id={worst}")
        driver.save_screenshot(str(args.out / "user.png"))
        driver.find_element(By.NAME, "prompt").send_keys("Which comment is more acceptable?")
        driver.find_element(By.NAME, "candidates").send_keys("\n".join(texts))
        driver.find_element(By.CSS_SELECTOR, "form[action$='/user/rank'] button").click()
        time.sleep(1)
        driver.save_screenshot(str(args.out / "user-try-it.png"))
    finally:
        driver.quit()
        server.should_exit = True
    print(f"wrote {sorted(p.name for p in args.out.glob('*.png'))} to {args.out}")


if __name__ == "__main__":
    main()
