"""Training: upload a CSV, check the guessed columns, run edge-train, read the report.

Signed-in users only. Starting a job is a CSRF-checked POST (``/api/training/start``) like
every other action; the report figures and the model-set zip are served to signed-in
sessions only.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from nicegui import events, ui

from ..runtime import Console
from ..training import TrainingJob, TrainingJobs, sniff_csv, training_available
from .auth import CSRF_HEADER, check_csrf, current_user
from .layout import frame, post_json

_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_JOB_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


def _job_or_404(jobs: TrainingJobs, request: Request, job_id: str) -> TrainingJob:
    if current_user(request) is None:
        raise HTTPException(401)
    job = jobs.jobs.get(job_id) if _JOB_ID.match(job_id) else None
    if job is None:
        raise HTTPException(404)
    return job


def register(console: Console, app: FastAPI) -> None:
    settings = console.settings
    jobs = TrainingJobs(settings.training_dir, settings.training.command)

    @app.post("/api/training/start")
    async def start(request: Request) -> JSONResponse:
        if current_user(request) is None:
            return JSONResponse({"ok": False, "message": "sign in first"}, 401)
        if not check_csrf(request, request.headers.get(CSRF_HEADER)):
            return JSONResponse({"ok": False, "message": "CSRF check failed"}, 403)
        body: Any = await request.json()
        upload = str(body.get("upload", "")) if isinstance(body, dict) else ""
        path = jobs.uploads() / f"{upload}.csv"
        if not _UPLOAD_ID.match(upload) or not path.is_file():
            return JSONResponse({"ok": False, "message": "unknown upload"}, 400)
        extra = []
        for key, flag in (("epochs", "--epochs"), ("window", "--window")):
            value = body.get(key)
            if value is not None:
                if not isinstance(value, int | float) or not 1 <= int(value) <= 10_000:
                    return JSONResponse({"ok": False, "message": f"bad {key}"}, 400)
                extra += [flag, str(int(value))]
        try:
            job = jobs.start(
                path,
                timestamp=str(body.get("timestamp") or ""),
                sensors=[str(s) for s in body.get("sensors") or []],
                label=str(body["label"]) if body.get("label") else None,
                separator=str(body.get("separator") or ","),
                extra=extra,
            )
        except (RuntimeError, ValueError) as exc:
            return JSONResponse({"ok": False, "message": str(exc)}, 409)
        return JSONResponse({"ok": True, "job": job.id, "message": f"training job {job.id}"})

    @app.get("/training/{job_id}/model-set.zip")
    def download(request: Request, job_id: str) -> Response:
        job = _job_or_404(jobs, request, job_id)
        if job.state != "done":
            raise HTTPException(409)
        return Response(
            job.zip_model_set(),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="model-set-{job.id}.zip"'},
        )

    @app.get("/training/{job_id}/report/{name}")
    def figure(request: Request, job_id: str, name: str) -> FileResponse:
        job = _job_or_404(jobs, request, job_id)
        path = job.out_dir / "report" / name
        if "/" in name or not name.endswith(".png") or not path.is_file():
            raise HTTPException(404)
        return FileResponse(path, media_type="image/png")

    @ui.page("/training")
    def training(request: Request) -> None:
        user, token = frame(console, request, "Training")
        ui.label("Train a model set on your own data").classes("text-h6")
        if not training_available():
            ui.label(
                "The trainer is not installed with this console (pip install -e '.[train]')."
            ).classes("text-grey-7")
        if user is None:
            ui.label("Sign in to upload data and train models.").classes("text-grey-7")
            return
        chosen: dict[str, Any] = {}
        upload = ui.upload(
            label="CSV file (timestamp column, one numeric column per sensor, optional 0/1 label)",
            auto_upload=True,
            max_file_size=settings.training.max_upload_bytes,
        )
        upload.props("accept=.csv,.txt,.tsv data-testid=upload").classes("w-full")
        form = ui.column().classes("w-full gap-2")
        form.set_visibility(False)
        with form:
            sniffed = ui.label().props("data-testid=sniffed").classes("text-sm")
            with ui.row().classes("gap-4 items-end"):
                ts_select = ui.select([], label="Timestamp column").classes("w-56")
                ts_select.props("data-testid=timestamp-column")
                label_select = ui.select([], label="Label column (0/1)").classes("w-56")
                epochs = ui.number("LSTM epochs", value=5, min=1, max=200).classes("w-32")
                window = ui.number("Window (steps)", value=60, min=5, max=1000).classes("w-32")
            sensor_select = ui.select([], multiple=True, label="Sensor columns").classes("w-full")
            sensor_select.props("use-chips data-testid=sensor-columns")
            run = ui.button("Train").props("data-testid=train")
        status = ui.label().props("data-testid=training-status")
        bar = ui.linear_progress(value=0, show_value=False).props("data-testid=training-progress")
        bar.set_visibility(False)
        log = ui.log(max_lines=300).classes("w-full h-48")
        log.set_visibility(False)
        result = ui.column().classes("w-full")

        async def uploaded(e: events.UploadEventArguments) -> None:
            upload_id = uuid.uuid4().hex
            path = jobs.uploads() / f"{upload_id}.csv"
            await e.file.save(path)
            try:
                guess = sniff_csv(path)
            except (ValueError, OSError) as exc:
                path.unlink(missing_ok=True)
                ui.notify(f"cannot read {e.file.name}: {exc}", type="negative")
                return
            chosen.update(upload=upload_id, separator=guess.separator, name=e.file.name)
            sep = "tab" if guess.separator == "\t" else repr(guess.separator)
            sniffed.text = (
                f"{e.file.name}: {len(guess.columns)} columns, separator {sep}, "
                + ("decimal comma, " if guess.decimal == "," else "")
                + f"{guess.rows_sampled} rows looked at"
            )
            ts_select.set_options(guess.columns, value=guess.timestamp)
            label_select.set_options(["none", *guess.columns], value=guess.label or "none")
            numeric = [c for c in guess.columns if c not in (guess.timestamp,)]
            sensor_select.set_options(numeric, value=guess.sensors)
            form.set_visibility(True)

        upload.on_upload(uploaded)

        async def start_job() -> None:
            payload = {
                "upload": chosen.get("upload"),
                "timestamp": ts_select.value,
                "sensors": sensor_select.value or [],
                "label": None if label_select.value in (None, "none") else label_select.value,
                "separator": chosen.get("separator"),
                "epochs": int(epochs.value or 5),
                "window": int(window.value or 60),
            }
            reply = await post_json("/api/training/start", payload, token)
            body = reply.get("body") or {}
            if not body.get("ok"):
                ui.notify(body.get("message") or f"HTTP {reply.get('status')}", type="warning")
                return
            chosen["job"] = body["job"]
            chosen["shown"] = 0
            chosen["reported"] = False
            bar.set_visibility(True)
            log.set_visibility(True)
            log.clear()
            result.clear()

        run.on_click(start_job)

        def follow() -> None:
            job = jobs.jobs.get(chosen.get("job", ""))
            if job is None:
                return
            lines = list(job.lines)
            for line in lines[chosen["shown"] :]:
                log.push(line)
            chosen["shown"] = len(lines)
            bar.value = job.progress
            status.text = f"job {job.id}: {job.state} ({100 * job.progress:.0f} %)"
            status.props(f"data-state={job.state}")
            run.set_enabled(job.state in ("done", "failed"))
            if job.state in ("done", "failed") and not chosen.get("reported"):
                chosen["reported"] = True
                _show_result(result, job)

        ui.timer(0.5, follow)


def _show_result(result: ui.column, job: TrainingJob) -> None:
    with result:
        if job.state != "done":
            ui.label(f"training failed (exit code {job.returncode}); see the log").classes(
                "text-negative"
            )
            return
        ui.link("Download the model set (zip)", f"/training/{job.id}/model-set.zip").props(
            "data-testid=download"
        )
        report = job.report_markdown()
        if report:
            # Figures are linked relative to report.md; serve them through the route above.
            text = re.sub(
                r"\]\(([\w.-]+\.png)\)",
                lambda m: f"](/training/{job.id}/report/{m.group(1)})",
                report,
            )
            ui.markdown(text).classes("w-full").props("data-testid=report")
        for fig in sorted(Path(job.out_dir / "report").glob("*.png")):
            if report and fig.name in report:
                continue
            ui.image(f"/training/{job.id}/report/{fig.name}").classes("w-96")
