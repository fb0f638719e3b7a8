"""Request bodies as Mailgun clients send them: application/x-www-form-urlencoded or multipart/form-data,
with repeated keys (`to`, `o:tag`, `attachment`) kept in order. Multipart parsing is python-multipart's
job, URL-encoded bodies the standard library's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import FormParser, parse_options_header

from opentracking.core.errors import BadRequest

# Files stay in memory: Lambda's payload limit (6 MB) bounds them long before memory does.
_IN_MEMORY = {"MAX_MEMORY_FILE_SIZE": 64 * 1024 * 1024, "MAX_BODY_SIZE": 64 * 1024 * 1024}


@dataclass(frozen=True)
class UploadedFile:
    field_name: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Form:
    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[UploadedFile] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]

    def last(self, name: str) -> str | None:
        values = self.all(name)
        return values[-1] if values else None

    def with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        return [(key[len(prefix) :], value) for key, value in self.fields if key.startswith(prefix)]

    def files_named(self, name: str) -> list[UploadedFile]:
        return [upload for upload in self.files if upload.field_name == name]


def _text(raw: bytes | None) -> str:
    # Mailgun clients send UTF-8; undecodable bytes are replaced rather than rejected.
    return (raw or b"").decode("utf-8", "replace")


def parse_form(content_type: str | None, body: bytes) -> Form:
    if not content_type:
        raise BadRequest("Content-Type must be multipart/form-data or application/x-www-form-urlencoded")
    mime_type, params = parse_options_header(content_type)
    mime_type_str = mime_type.decode("latin-1").lower()
    if mime_type_str not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise BadRequest("Content-Type must be multipart/form-data or application/x-www-form-urlencoded")
    boundary = params.get(b"boundary")
    if mime_type_str == "multipart/form-data" and not boundary:
        raise BadRequest("multipart/form-data without a boundary")

    if mime_type_str == "application/x-www-form-urlencoded":
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError as exc:
            raise BadRequest("malformed application/x-www-form-urlencoded body") from exc
        return Form(fields=parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="replace"))

    form = Form()

    def on_field(item: Any) -> None:
        form.fields.append((_text(item.field_name), _text(item.value)))

    def on_file(item: Any) -> None:
        item.file_object.seek(0)
        form.files.append(
            UploadedFile(
                field_name=_text(item.field_name),
                filename=_text(item.file_name),
                content_type=item.content_type,
                data=item.file_object.read(),
            )
        )

    try:
        parser = FormParser("multipart/form-data", on_field, on_file, boundary=boundary, config=_IN_MEMORY)
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise BadRequest(f"malformed {mime_type_str} body") from exc
    return form
