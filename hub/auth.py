"""JWT authentication and the authorization helpers every endpoint uses.

Tokens are Supabase-style HS256 JWTs: `role` is `authenticated` (a signed-in
user, `sub` is their id, `aud` is `authenticated`), `service_role` (the
chatbot; may act on behalf of a patient it names) or `anon`. Application roles
(patient, dentist, admin) come from `user_roles`, never from the token.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any, Iterable

import jwt

from hub import errors

ALGORITHM = "HS256"
AUDIENCE = "authenticated"
JWT_ROLES = ("authenticated", "service_role", "anon")
APP_ROLES = ("patient", "dentist", "admin")


@dataclasses.dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says; nothing here is trusted beyond the signature."""

    role: str
    sub: uuid.UUID | None
    exp: int
    email: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request or socket, with their application roles."""

    claims: Claims
    roles: frozenset[str] = frozenset()

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.claims.sub

    @property
    def is_service(self) -> bool:
        return self.claims.role == "service_role"

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def has_role(self, role: str) -> bool:
        return role in self.roles


def issue_token(secret: str, sub: uuid.UUID | str | None, *, role: str = "authenticated",
                ttl: int = 3600, email: str | None = None, now: float | None = None) -> str:
    """Sign a token the way Supabase's auth server would."""
    if role not in JWT_ROLES:
        raise ValueError(f"role must be one of {', '.join(JWT_ROLES)}")
    if role == "authenticated" and sub is None:
        raise ValueError("an authenticated token needs a subject (user id)")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"role": role, "iat": issued, "exp": issued + ttl, "iss": "dental-hub"}
    if role == "authenticated":
        claims["aud"] = AUDIENCE
    if sub is not None:
        claims["sub"] = str(sub)
    if email:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


_verified: dict[tuple[str, str], Claims] = {}
_VERIFIED_MAX = 20_000


def verify_token(secret: str, token: str | None) -> Claims:
    """Check signature, algorithm, expiry and the claims we rely on.

    Raises HubError(UNAUTHORIZED) for every way a token can be bad; the message
    says which, without echoing the token. A token that verified once is
    remembered until it expires: clients send the same one on every request,
    and checking an HMAC over again is a tenth of a booking's CPU.
    """
    if not token:
        raise errors.unauthorized("Missing bearer token")
    known = _verified.get((secret, token))
    if known is not None:
        if known.exp > time.time():
            return known
        del _verified[(secret, token)]
    claims = _verify(secret, token)
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()  # bounded; entries are cheap to verify again
    _verified[(secret, token)] = claims
    return claims


def _verify(secret: str, token: str) -> Claims:
    try:
        # `algorithms` pins HS256: `none` and asymmetric algorithms are refused,
        # which closes the classic alg-confusion attacks.
        raw = jwt.decode(token, secret, algorithms=[ALGORITHM],
                         options={"require": ["exp", "role"], "verify_aud": False})
    except jwt.ExpiredSignatureError:
        raise errors.unauthorized("Token has expired") from None
    except jwt.InvalidAlgorithmError:
        raise errors.unauthorized("Token algorithm not allowed") from None
    except jwt.InvalidSignatureError:
        raise errors.unauthorized("Token signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise errors.unauthorized(f"Token is missing the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise errors.unauthorized("Token is malformed") from None
    role = raw.get("role")
    if role not in JWT_ROLES:
        raise errors.unauthorized("Token role is not recognised")
    sub = raw.get("sub")
    if role == "authenticated":
        aud = raw.get("aud")
        if aud != AUDIENCE and not (isinstance(aud, list) and AUDIENCE in aud):
            raise errors.unauthorized("Token audience is not 'authenticated'")
        if sub is None:
            raise errors.unauthorized("Token is missing the 'sub' claim")
    try:
        subject = uuid.UUID(sub) if sub is not None else None
    except (ValueError, TypeError, AttributeError):
        raise errors.unauthorized("Token subject is not a user id") from None
    email = raw.get("email") if isinstance(raw.get("email"), str) else None
    return Claims(role=role, sub=subject, exp=int(raw["exp"]), email=email)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


# ---- authorization: one place, used by REST and sockets alike -------------


def require_user(principal: Principal) -> uuid.UUID:
    """The caller's user id; anon and subject-less service tokens are refused."""
    if principal.user_id is None:
        raise errors.unauthorized("A signed-in user is required")
    return principal.user_id


def require_role(principal: Principal, *roles: str) -> None:
    """Raises FORBIDDEN unless the caller holds one of `roles` (service_role
    passes only where "service_role" is listed)."""
    if principal.is_service and "service_role" in roles:
        return
    if not any(principal.has_role(r) for r in roles):
        raise errors.forbidden(f"Requires role: {' or '.join(roles)}")


def require_owner(principal: Principal, owners: Iterable[uuid.UUID | None], *,
                  staff: Iterable[str] = ("admin",)) -> None:
    """Raises FORBIDDEN unless the caller is one of `owners` or holds a staff role."""
    if any(principal.has_role(r) for r in staff):
        return
    if principal.user_id is None or principal.user_id not in set(owners):
        raise errors.forbidden("You may only access your own records")


def acting_patient(principal: Principal, patient_id: uuid.UUID | None) -> uuid.UUID:
    """Whose booking this is: a patient acts for themselves; the service role
    and admins act on behalf of the patient they name."""
    if principal.is_service or principal.is_admin:
        if patient_id is None:
            if principal.user_id is not None and not principal.is_service:
                return principal.user_id
            raise errors.invalid("patient_id is required when acting on behalf of a patient",
                                 field="patient_id")
        return patient_id
    user = require_user(principal)
    if patient_id is not None and patient_id != user:
        raise errors.forbidden("Patients may only act for themselves")
    return user
