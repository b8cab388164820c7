"""The Training page: column sniffing, progress parsing, and a real edge-train run from the
browser (upload, pre-filled columns, progress, report, model-set download)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("nicegui")

from edge_console.training import progress_of, sniff_csv, training_available
from harness import REPO
from harness.broker import MosquittoBroker
from harness.console import PASSWORD, ConsoleProcess, console_config

SIM_HEADER = (
    "timestamp,steam_temperature,steam_pressure,feedwater_flow,turbine_vibration,load,"
    "flue_gas_temperature,condenser_vacuum,bearing_temperature,label,fault_kind"
)


def test_sniff_finds_timestamp_sensors_and_label(tmp_path: Path) -> None:
    sim = tmp_path / "sim.csv"
    sim.write_text(
        SIM_HEADER + "\n"
        "2026-01-01T00:00:00.000Z,535.9,132.2,359.6,3.06,451.8,131.5,6.34,68.7,0,\n"
        "2026-01-01T00:00:01.000Z,534.6,131.5,354.9,3.02,453.1,131.2,6.33,68.5,1,spike\n",
        encoding="utf-8",
    )
    g = sniff_csv(sim)
    assert (g.separator, g.timestamp, g.label) == (",", "timestamp", "label")
    assert g.sensors == SIM_HEADER.split(",")[1:9]  # fault_kind is text: not a sensor
    semi = tmp_path / "skab.csv"
    semi.write_text(
        "datetime;Pressure;Temperature;anomaly\n1700000000;1.2;80.1;0\n1700000001;1.3;80.2;1\n",
        encoding="utf-8",
    )
    g = sniff_csv(semi)
    assert (g.separator, g.timestamp, g.label, g.sensors) == (
        ";", "datetime", "anomaly", ["Pressure", "Temperature"],
    )  # fmt: skip
    euro = tmp_path / "euro.csv"  # decimal commas: numeric columns, as edge-train reads them
    euro.write_text(
        "datetime;Pressure;Temperature;anomaly\n"
        "2020-03-09 10:14:33;1,2;80,1;0,0\n2020-03-09 10:14:34;1,3;80,2;1,0\n",
        encoding="utf-8",
    )
    g = sniff_csv(euro)
    assert (g.separator, g.decimal, g.timestamp, g.label, g.sensors) == (
        ";", ",", "datetime", "anomaly", ["Pressure", "Temperature"],
    )  # fmt: skip
    tab = tmp_path / "tab.tsv"
    tab.write_text("time\ta\tb\n2026-01-01 00:00:00\t1\t2\n2026-01-01 00:00:01\t1\t3\n")
    g = sniff_csv(tab)
    assert (g.separator, g.timestamp, g.label, g.sensors) == ("\t", "time", None, ["a", "b"])
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b\n")
    with pytest.raises(ValueError, match="no rows"):
        sniff_csv(empty)


def test_progress_lines() -> None:
    assert progress_of("[    0.0s] loading /x.csv …") == pytest.approx(0.03)
    assert progress_of("[   33.2s] lstm_ae epoch 2/4 loss 0.87 val_loss 4.1") == pytest.approx(0.55)
    assert progress_of("[   42.2s] total 42.2s") == 1.0
    assert progress_of("I0000 oneDNN custom operations are on") is None


@pytest.mark.slow
@pytest.mark.skipif(not training_available(), reason="the train extra is not installed")
def test_train_from_the_browser(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from test_console_browser import ARTIFACTS

    from harness.browser import chrome, wait_until

    data = tmp_path / "plant.csv"
    subprocess.run(
        [sys.executable, "-m", "training", "generate", "--out", str(data), "--steps", "3000",
         "--units", "1", "--events", "2"],
        check=True, capture_output=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    console = ConsoleProcess(tmp_path / "console", console_config(tmp_path, mosquitto.port))
    console.start()
    driver = chrome()
    try:
        driver.get(console.url + "/login?next=/training")
        driver.find_element(By.ID, "username").send_keys("alice")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "sign-in").click()
        upload = wait_until(
            "the upload field", lambda: driver.find_element(By.CSS_SELECTOR, "input[type=file]")
        )
        upload.send_keys(str(data))  # type: ignore[attr-defined]
        sniffed = wait_until(
            "the sniffed columns",
            lambda: driver.find_element(By.CSS_SELECTOR, '[data-testid="sniffed"]').text,
        )
        assert "plant.csv: 11 columns, separator ','" in str(sniffed)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "bearing_temperature" in body and "steam_pressure" in body  # sensor chips
        for name, value in (("LSTM epochs", "1"), ("Window (steps)", "20")):
            field = driver.find_element(By.CSS_SELECTOR, f'[aria-label="{name}"]')
            field.send_keys(Keys.CONTROL, "a")  # .clear() does not reach Vue's model
            field.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, '[data-testid="train"]').click()
        status = '[data-testid="training-status"]'
        seen: set[str] = set()

        def finished() -> bool:
            el = driver.find_element(By.CSS_SELECTOR, status)
            seen.add(el.text)
            return el.get_attribute("data-state") in ("done", "failed")

        started = time.monotonic()
        wait_until("the training job to finish", finished, timeout=240, every=0.5)
        final = driver.find_element(By.CSS_SELECTOR, status)
        log = driver.find_element(By.CSS_SELECTOR, ".nicegui-log").text
        assert final.get_attribute("data-state") == "done", (final.text, log[-3000:])
        running = [s for s in seen if ": running (" in s]
        assert len({s.split("(")[1] for s in running}) >= 3, seen  # the bar moved
        assert time.monotonic() - started < 240
        report = wait_until(
            "the report", lambda: driver.find_element(By.CSS_SELECTOR, '[data-testid="report"]')
        )
        assert "Isolation Forest" in report.text or "iforest" in report.text  # type: ignore[attr-defined]
        time.sleep(1.0)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "training-done.png"))
        href = driver.find_element(By.CSS_SELECTOR, '[data-testid="download"]').get_attribute(
            "href"
        )
        cookie = driver.get_cookie("edge_console_session")
        assert href is not None and cookie is not None
        req = urllib.request.Request(
            href, headers={"Cookie": f"{cookie['name']}={cookie['value']}"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            names = zipfile.ZipFile(io.BytesIO(r.read())).namelist()
        assert any(n.endswith("/manifest.json") for n in names)
        assert any(n.endswith("/lstm_ae.onnx") for n in names)
        # Without the session, nothing.
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(href, timeout=10)
        assert err.value.code == 401
    finally:
        driver.quit()
        console.stop()
