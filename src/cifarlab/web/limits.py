"""The web service's limits, apart so that the CLI can show their defaults cheaply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeLimits:
    max_upload_bytes: int = 10 * 2**20  # whole request body; a phone photo is 2-8 MB
    max_pixels: int = 40_000_000  # per picture, checked from the header before decoding
    max_files: int = 16  # pictures per request
    max_batch: int = 64  # pictures per forward pass across requests
    max_wait_ms: float = 2.0  # how long a batch waits for company; bounds the latency it adds
