"""The web service's limits, apart so that the CLI can show their defaults cheaply.

Together they bound the server's memory: the model and libraries (0.26 GiB for the
shipped model), plus the upload bytes admitted at once (``max_inflight_bytes``, held about
twice while the form is parsed), plus the decode budget (``decode_budget_bytes``, the
estimated peak of the pictures being decoded at once): about 1.2 GiB with the defaults.
``benchmarks/serve_load.py --hostile`` measures the peak.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class ServeLimits:
    max_upload_bytes: int = 10 * 2**20  # whole request body; a phone photo is 2-8 MB
    max_pixels: int = 24_000_000  # per picture, from the header before decoding: a 6000x4000 camera
    max_files: int = 16  # pictures per request
    max_batch: int = 64  # pictures per forward pass across requests
    max_wait_ms: float = 2.0  # how long a batch waits for company; bounds the latency it adds
    max_request_pixels: int = 48_000_000  # all pictures of one request together, from their headers
    decode_budget_bytes: int = 640 * 2**20  # estimated decode memory of all pictures decoding at once
    decode_threads: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))  # pictures decoding at once
    max_jpeg_scans: int = 100  # scans in one JPEG: a progressive photo has about 10, each is a pass over it
    max_scan_pixels: int = 400_000_000  # a JPEG's pixels x scans: a 24 Mpx photo in 16 scans
    max_inflight: int = 32  # requests past the door at once (reading, waiting, decoding, in the model)
    max_inflight_bytes: int = 160 * 2**20  # their declared upload sizes together
    max_client_inflight: int | None = None  # of them from one address; default a quarter of max_inflight
    max_client_inflight_bytes: int | None = None  # one address's uploads; default a fifth, at least one upload
    body_timeout_s: float = 15.0  # a whole upload must arrive within this (slow senders)
    work_timeout_s: float = 30.0  # waiting for decode memory + decoding + the model, per request

    def __post_init__(self):
        if self.max_client_inflight is None:
            self.max_client_inflight = max(1, self.max_inflight // 4)
        if self.max_client_inflight_bytes is None:
            self.max_client_inflight_bytes = min(self.max_inflight_bytes,
                                                 max(self.max_upload_bytes, self.max_inflight_bytes // 5))
