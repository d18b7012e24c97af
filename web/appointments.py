"""AppointmentsController, with documents."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp import BodyPartReader, web

from hub import db, errors
from services.booking import AppointmentFilters, CancelDTO, CreateAppointmentDTO, UpdateAppointmentDTO
from web._http import BOOKING, POOL, SETTINGS, created, json, path_id, principal, query, read

routes = web.RouteTableDef()

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
MAX_PARTS = 20  # form fields skipped while looking for `file`
DOCUMENT_TYPES = {"application/pdf": ".pdf", "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp",
                  "image/heic": ".heic"}


@routes.get("/api/appointments")
async def list_appointments(request: web.Request) -> web.Response:
    who = await principal(request)
    filters = query(request, AppointmentFilters, lists=("status",))
    return json(await request.app[BOOKING].list_appointments(who, filters))


@routes.post("/api/appointments")
async def create_appointment(request: web.Request) -> web.Response:
    who = await principal(request)
    body = await read(request, CreateAppointmentDTO)
    booking = request.app[BOOKING]
    idem = booking.idempotency(who, request.headers.get("Idempotency-Key"), request.path.encode() + await request.read())
    return created(await booking.book(who, body, idem))


@routes.get("/api/appointments/{id}")
async def get_appointment(request: web.Request) -> web.Response:
    who = await principal(request)
    appointment, _ = await request.app[BOOKING].appointment(who, path_id(request))
    return json(appointment)


@routes.put("/api/appointments/{id}")
async def update_appointment(request: web.Request) -> web.Response:
    who = await principal(request)
    appointment_id = path_id(request)
    body = await read(request, UpdateAppointmentDTO)
    return json(await request.app[BOOKING].update(who, appointment_id, body))


@routes.delete("/api/appointments/{id}")
async def cancel_appointment(request: web.Request) -> web.Response:
    who = await principal(request)
    appointment_id = path_id(request)
    body = await read(request, CancelDTO) if request.can_read_body else CancelDTO()
    return json(await request.app[BOOKING].cancel(who, appointment_id, body.reason))


@routes.post("/api/appointments/{id}/documents")
async def upload_document(request: web.Request) -> web.Response:
    who = await principal(request)
    appointment, _ = await request.app[BOOKING].appointment(who, path_id(request))
    part = await _file_part(request)
    file_type = (part.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if file_type not in DOCUMENT_TYPES:
        raise errors.invalid(f"Only {', '.join(sorted(DOCUMENT_TYPES))} files are accepted", field="file",
                             content_type=file_type[:100])
    file_name = safe_file_name(part)
    doc_id = uuid.uuid4()
    folder: Path = request.app[SETTINGS].upload_dir / str(appointment["id"])
    target = folder / f"{doc_id}{DOCUMENT_TYPES[file_type]}"
    size = 0
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:  # streamed: never the whole file in memory
                while chunk := await _chunk(part):
                    size += len(chunk)
                    if size > MAX_DOCUMENT_BYTES:
                        raise errors.HubError(errors.ErrorCode.PAYLOAD_TOO_LARGE,
                                              f"Documents are limited to {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB")
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())  # a full disk says so now, not after the row is committed
        except OSError as exc:
            raise errors.storage_error(exc) from None
        async with db.as_caller(request.app[POOL], who) as con:  # RLS bounds the row too (42501: 403)
            row = await con.fetchrow(
                "INSERT INTO public.appointment_documents (id, appointment_id, file_name, file_url, file_type, "
                "file_size, uploaded_by) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
                doc_id, appointment["id"], file_name, f"/api/appointments/{appointment['id']}/documents/{doc_id}",
                file_type, size, who.user_id or uuid.UUID(int=0))
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)  # nothing half-written survives a failed upload
        raise
    return created(dict(row))


@routes.get("/api/appointments/{id}/documents/{doc_id}")
async def download_document(request: web.Request) -> web.StreamResponse:
    who = await principal(request)
    appointment, _ = await request.app[BOOKING].appointment(who, path_id(request))
    doc_id = path_id(request, "doc_id")
    doc = next((d for d in appointment["documents"] if d["id"] == str(doc_id)), None)
    if doc is None:
        raise errors.not_found("document", doc_id)
    path = request.app[SETTINGS].upload_dir / str(appointment["id"]) / f"{doc_id}{DOCUMENT_TYPES[doc['file_type']]}"
    if not path.exists():
        raise errors.not_found("document file", doc_id)
    return web.FileResponse(path, headers={"Content-Type": doc["file_type"],
                                           "Content-Disposition": content_disposition(doc["file_name"])})


# ---- what arrives in a multipart body is hostile until checked -------------------

_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\/]')
_MULTIPART_ERRORS = (ValueError, AssertionError, LookupError, UnicodeError, aiohttp.http_exceptions.BadHttpMessage)


async def _file_part(request: web.Request) -> BodyPartReader:
    """The form's `file` part; VALIDATION_ERROR for anything that is not a well-formed multipart form."""
    if not request.content_type.startswith("multipart/"):
        raise errors.invalid("Upload a file as multipart/form-data (field `file`)", field="file")
    try:
        reader = await request.multipart()
        part = await reader.next()
        for _ in range(MAX_PARTS):
            if part is None or getattr(part, "name", None) == "file":
                break
            part = await reader.next()
    except _MULTIPART_ERRORS as exc:
        raise errors.invalid(f"Malformed multipart body: {exc}"[:300], field="file") from None
    if not isinstance(part, BodyPartReader) or part.name != "file":
        raise errors.invalid("The form has no `file` field", field="file")
    return part


async def _chunk(part: BodyPartReader) -> bytes:
    try:
        return await part.read_chunk(64 * 1024)
    except _MULTIPART_ERRORS as exc:  # e.g. the body ends before the closing boundary
        raise errors.invalid(f"Malformed multipart body: {exc}"[:300], field="file") from None


def safe_file_name(part: BodyPartReader) -> str:
    """The uploader's file name without control characters (CR, LF, NUL), quotes or
    path separators, at most 200 characters; `document` when nothing is left."""
    try:
        raw = part.filename or ""
    except _MULTIPART_ERRORS:
        raw = ""
    name = _UNSAFE.sub("_", raw).strip(" .")[:200]
    return name or "document"


def content_disposition(file_name: str) -> str:
    """RFC 6266: an ASCII fallback and the UTF-8 name, both safe in a header."""
    clean = _UNSAFE.sub("_", file_name)
    fallback = clean.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(clean, safe='')}"
