"""The routes of the web service (see ``cifarlab.web.app`` for the service behind them).

No ``from __future__ import annotations`` here: FastAPI reads these signatures at run
time, and string annotations naming UploadFile would not resolve.
"""

from pathlib import Path

from fastapi import File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from cifarlab import __version__
from cifarlab.errors import CifarlabError, ModelError
from cifarlab.web.decode import Refused
from cifarlab.web.examples import favicon_ico

STATIC = Path(__file__).parent / "static"


def add_routes(app, service) -> None:
    @app.get("/health", summary="liveness and the number of models")
    async def health() -> dict:  # on the event loop itself: no thread hop, so it answers while the server is busy
        return {"status": "ok", "version": __version__, "models": await service.model_count()}

    @app.get("/api/models", summary="the models a client may name, with their test accuracy and model card",
             description="Each model has `card` (accuracy, per class, calibration error before and after its "
                         "temperature, mean corruption accuracy, confused pairs, training data and budget; a "
                         "figure never measured is null) and `card_sections` (the same in sentences and tables, "
                         "as the page shows it). A card that cannot be read is `{\"error\": \"...\"}`.")
    def models() -> dict:
        entries = service.catalog.entries()
        return {"default": entries[0].name if entries else None,
                "models": [{**e.public(), **service.card(e)} for e in entries],
                "limits": {"max_upload_bytes": service.limits.max_upload_bytes,
                           "max_pixels": service.limits.max_pixels, "max_files": service.limits.max_files,
                           "max_request_pixels": service.limits.max_request_pixels}}

    @app.post("/api/predict", summary="class probabilities for one or several pictures",
              description="Refusals are `{\"detail\": \"...\"}`: 401 without the server's token, 408 upload too "
                          "slow, 413 too large, 415 not a picture, 429 too many requests in flight, "
                          "503 busy (retry).")
    async def predict(file: list[UploadFile] | None = File(None, description="one or more pictures, any size"),
                      model: str | None = Form(None, description="a name from /api/models; default: the first"),
                      top_k: int = Form(3, description="classes listed in `top` (1-10)"),
                      view: bool = Form(False, description="add the 32x32 input the model saw, as a PNG data URL"),
                      explain: bool = Form(False, description="add `heat`: where the model looked for its class "
                                                              "(Grad-CAM), a PNG data URL with the picture's aspect "
                                                              "ratio, coloured, its alpha the weight to lay it over "
                                                              "the picture with"),
                      raw_probs: bool = Form(False, description="the model's own probabilities, without the "
                                                                "temperature fitted on its validation split (see "
                                                                "`temperature` and `calibrated` in the answer)")):
        files = file or []
        if not files:
            raise HTTPException(422, "no picture in the request; send one or more 'file' fields")
        if len(files) > service.limits.max_files:
            raise HTTPException(413, f"{len(files)} pictures in one request; at most {service.limits.max_files}")
        if not 1 <= top_k <= 10:
            raise HTTPException(422, f"top_k {top_k} must be between 1 and 10")
        try:
            name = model or service.catalog.first().name
            blobs = [(f.filename or f"upload {i + 1}", await f.read()) for i, f in enumerate(files)]
            # a ready JSONResponse skips FastAPI's per-field encoding of the result
            return JSONResponse(await service.predict(name, blobs, top_k, view, explain, raw_probs))
        except Refused as exc:  # 413 too large, 415 not a picture, 503 busy: one line each
            retry = {"Retry-After": "1"} if exc.status == 503 else None
            return JSONResponse({"detail": exc.detail}, exc.status, headers=retry)
        except ModelError as exc:
            raise HTTPException(404, str(exc)) from None
        except CifarlabError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/api/examples", summary="test pictures of the cached data to try (none without a cache)")
    async def examples() -> dict:
        found = await service.examples()
        return {"examples": [{"name": e.name, "label": e.label, "url": f"/api/examples/{i}.png"}
                             for i, e in enumerate(found)]}

    @app.get("/api/examples/{number}.png", summary="one example picture (32x32 PNG)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def example(number: int):
        found = await service.examples()
        if not 0 <= number < len(found):
            raise HTTPException(404, f"no example {number}; there are {len(found)} (see /api/examples)")
        return Response(found[number].png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    icon = favicon_ico()

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(icon, media_type="image/x-icon", headers={"Cache-Control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
