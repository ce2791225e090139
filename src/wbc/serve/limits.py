"""The server's request limits: a plain dataclass, so `wbc serve --help` reads its defaults without
importing the web framework."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """The server's limits; `wbc serve` takes its option defaults from here."""

    max_files: int = 50  # images a request
    max_mb: float = 10.0  # size of one uploaded file
    queue: int = 32  # requests classifying or waiting to; more get 503 + Retry-After
    timeout_s: float = 120.0  # a request running longer gets 504
    idle_minutes: float = 30.0  # a review station login without a request for this long is over (a bench left logged in)
