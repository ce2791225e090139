"""What every upload endpoint shares: request limits applied before any decoding, a bound on
requests in flight (503 beyond it), a time limit (504), and image errors as the client's 413/415."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException, UploadFile
from starlette.concurrency import run_in_threadpool

from wbc.errors import BadImage, ImageTooLarge
from wbc.serve.limits import Limits


class Gate:
    def __init__(self, limits: Limits):
        self.limits, self.busy = limits, 0

    async def read(self, files: list[UploadFile]) -> list[tuple[str, bytes]]:
        """The uploads as (name, bytes), with the request limits applied before any decoding."""
        lim = self.limits
        if not files:
            raise HTTPException(400, "no image in the request: send one or more files in the multipart field 'files'")
        if len(files) > lim.max_files:
            raise HTTPException(413, f"{len(files)} images in one request: send at most {lim.max_files}")
        cap = int(lim.max_mb * 1024 * 1024)
        blobs = []
        for f in files:
            data = await f.read(cap + 1)
            if len(data) > cap:
                raise HTTPException(413, f"{f.filename} is over the {lim.max_mb:g} MB upload limit: send a smaller image")
            blobs.append((f.filename or "upload", data))
        return blobs

    @staticmethod
    async def in_worker(fn, *args):
        """Run fn off the event loop; an unreadable or over-large image is the client's 415/413."""
        try:
            return await run_in_threadpool(fn, *args)
        except ImageTooLarge as e:
            raise HTTPException(413, str(e)) from None
        except BadImage as e:
            raise HTTPException(415, str(e)) from None

    async def run(self, one, blobs: list[tuple[str, bytes]], *args) -> list[dict]:
        """Every file of a request through `one(name, data, *args)`, under the queue bound and the time limit."""
        lim = self.limits
        if self.busy >= lim.queue:
            raise HTTPException(503, f"busy: {self.busy} requests are queued (limit {lim.queue}); retry in a second",
                                headers={"Retry-After": "1"})
        self.busy += 1
        try:
            async def every_file():
                return [await self.in_worker(one, name, data, *args) for name, data in blobs]

            return await asyncio.wait_for(every_file(), lim.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the request took over {lim.timeout_s:g} s: send fewer or smaller images") from None
        finally:
            self.busy -= 1
