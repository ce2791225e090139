"""`wbc serve`: the web page and HTTP API."""

from __future__ import annotations

from typing import Optional

import typer

from wbc.cli import USE, ModelOpt, app
from wbc.errors import WbcError, check_ranges
from wbc.serve.limits import Limits

S = Limits()  # the server's limits; the options' defaults are theirs


@app.command(rich_help_panel=USE)
def serve(model: Optional[str] = ModelOpt, host: str = typer.Option("127.0.0.1", help="address to listen on"), port: int = typer.Option(8000),
          engine: str = typer.Option("auto", help="auto (ONNX Runtime when installed), onnx or pytorch"),
          max_files: int = typer.Option(S.max_files, help="images a request"), max_mb: float = typer.Option(S.max_mb, help="MB an uploaded image"),
          threads: int = typer.Option(0, help="CPU threads for inference (0: all cores)"),
          queue: int = typer.Option(S.queue, help="requests classifying or waiting; beyond it the server answers 503 with Retry-After"),
          timeout: float = typer.Option(S.timeout_s, help="seconds a request may run before it gets 504"),
          review_data: Optional[str] = typer.Option(None, "--review-data", envvar="WBC_REVIEW_DATA", help="serve the review station on this data folder (SQLite there unless --review-db)"),
          review_db: Optional[str] = typer.Option(None, "--review-db", envvar="WBC_REVIEW_DB", help="review database URL (PostgreSQL, for several server processes)"),
          idle_minutes: float = typer.Option(S.idle_minutes, help="a review station login without activity for this long is logged out")):
    """Web page and HTTP API (POST /api/v1/classify, GET /api/v1/model, /healthz, /readyz; docs at /docs)."""
    from wbc.serve.server import serve as run_serve

    check_ranges(("--port", port, 0 < port < 65536, "from 1 to 65535"), ("--queue", queue, queue >= 1, "at least 1"),
                 ("--timeout", timeout, timeout > 0, "positive (seconds)"), ("--threads", threads, threads >= 0, "at least 0 (0: all cores)"),
                 ("--max-files", max_files, max_files >= 1, "at least 1"), ("--max-mb", max_mb, max_mb > 0, "positive"),
                 ("--idle-minutes", idle_minutes, 0 < idle_minutes <= 24 * 60, "above 0 and at most 1440 (a day)"))
    if review_db and not review_data:
        raise WbcError("--review-db needs --review-data too: the folder the cell images are stored in")
    run_serve(model, host, port, engine, Limits(max_files=max_files, max_mb=max_mb, queue=queue, timeout_s=timeout, idle_minutes=idle_minutes), threads or None,
              review_data, review_db)
