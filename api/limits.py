"""Length limits of every text a caller can submit: one table, used by the request models
(declared in the OpenAPI schema as ``maxLength``/``maxItems``) and by the Open311 form, which
has no model. Query strings and paths are bounded by the server's request-line limit.
"""

from __future__ import annotations

from geo.core.errors import InvalidInput, Problem

TEXT_LIMITS: dict[str, int] = {
    "code": 64,          # category, department, CRS, status names
    "area_code": 15,     # district 6 ... grid 15 digits
    "description": 2000,
    "note": 2000,
    "address": 300,
    "actor": 128,
    "reporter_name": 100,
    "reporter_contact": 200,
    "device_id": 128,
    "username": 64,
    "password": 256,
}
MAX_LIST_ITEMS = 1000  # codes in one merge, departments of one category, ...

# Open311 form fields (GeoReport v2 names) -> the limit they fall under.
OPEN311_FIELDS = {
    "service_code": "code", "description": "description", "address_string": "address",
    "first_name": "reporter_name", "last_name": "reporter_name", "email": "reporter_contact",
    "phone": "reporter_contact", "device_id": "device_id", "crs": "code",
    "lat": "code", "long": "code", "api_key": "code", "account_id": "code",
}


def check_form(form: dict[str, str]) -> None:
    """Refuse (422) every form value longer than its limit (unknown fields: ``note``'s)."""
    problems = [Problem(field=k, reason=f"longer than {TEXT_LIMITS[OPEN311_FIELDS.get(k, 'note')]}"
                        " characters")
                for k, v in form.items()
                if len(v) > TEXT_LIMITS[OPEN311_FIELDS.get(k, "note")]]
    if problems:
        raise InvalidInput("a field is too long", problems)
