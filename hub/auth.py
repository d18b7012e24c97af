"""JWT authentication and the authorization helpers every endpoint uses.

Tokens are Supabase Auth's: HS256 with the project's secret, or ES256/RS256
with a key from the project's JWKS (hub.keys), both accepted together during a
key rotation. `role` is `authenticated` (a signed-in user, `sub` is their id,
`aud` is `authenticated`; `is_anonymous` marks Supabase's anonymous sign-ins),
`service_role` (the chatbot; may act on behalf of a patient it names) or
`anon`. Application roles (patient, dentist, admin) come from `user_roles`,
never from the token.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from typing import Any, Iterable, Mapping

import jwt

from hub import errors
from hub.keys import ASYMMETRIC, Keys

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
    is_anonymous: bool = False
    # The whole verified payload (Supabase's app_metadata, aal, amr, session_id...),
    # handed to PostgreSQL as `request.jwt.claims` for its policies.
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)


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
                ttl: int = 3600, email: str | None = None, now: float | None = None,
                issuer: str = "dental-hub") -> str:
    """Sign an HS256 token the way Supabase's auth server would."""
    if role not in JWT_ROLES:
        raise ValueError(f"role must be one of {', '.join(JWT_ROLES)}")
    if role == "authenticated" and sub is None:
        raise ValueError("an authenticated token needs a subject (user id)")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"role": role, "iat": issued, "exp": issued + ttl, "iss": issuer}
    if role == "authenticated":
        claims["aud"] = AUDIENCE
    if sub is not None:
        claims["sub"] = str(sub)
    if email:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


@functools.lru_cache(maxsize=16)
def _secret_only(secret: str) -> Keys:
    return Keys(secret)


def verify_token(keys: Keys | str, token: str | None) -> Claims:
    """Check signature, algorithm, expiry, issuer and the claims we rely on.

    `keys` is the app's key set (a bare secret means HS256 only). Raises
    HubError(UNAUTHORIZED) for every way a token can be bad; the message says
    which, without echoing the token. A token that verified once is remembered
    until it expires or the key set changes (at most `Keys.verified_max`):
    clients send the same one on every request, and checking its signature
    each time would be a sizeable share of a request's CPU.
    """
    if not token:
        raise errors.unauthorized("Missing bearer token")
    if isinstance(keys, str):
        keys = _secret_only(keys)
    try:
        return keys.verified[token]  # Keys.verified forgets a token when it expires
    except KeyError:
        pass
    claims = _verify(keys, token)
    keys.verified[token] = claims
    return claims


def _key_for(keys: Keys, token: str) -> tuple[Any, str]:
    """The key and the one algorithm this token may be verified with. The
    algorithm comes from the key, never from the token alone: an HS256 token
    is checked only against the secret, so a public key used as an HMAC
    secret (alg confusion) fails, and `none` is never accepted."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise errors.unauthorized("Token is malformed") from None
    alg = header.get("alg")
    if alg == ALGORITHM and keys.secret:
        return keys.secret, ALGORITHM
    if alg in ASYMMETRIC and keys.jwks_url:
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise errors.unauthorized("Token has no key id ('kid')")
        key = keys.key(kid)
        if key is None:
            raise errors.unauthorized("Token is signed with a key the project does not publish")
        return key.key, key.algorithm_name
    raise errors.unauthorized("Token algorithm not allowed")


def _verify(keys: Keys, token: str) -> Claims:
    key, algorithm = _key_for(keys, token)
    try:
        raw = jwt.decode(token, key, algorithms=[algorithm], issuer=keys.issuers or None,
                         options={"require": ["exp", "role", *(["iss"] if keys.issuers else [])],
                                  "verify_aud": False})
    except jwt.ExpiredSignatureError:
        raise errors.unauthorized("Token has expired") from None
    except jwt.InvalidAlgorithmError:
        raise errors.unauthorized("Token algorithm not allowed") from None
    except jwt.InvalidSignatureError:
        raise errors.unauthorized("Token signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise errors.unauthorized(f"Token is missing the {exc.claim!r} claim") from None
    except jwt.InvalidIssuerError:
        raise errors.unauthorized("Token issuer is not accepted") from None
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
    email = raw.get("email") if isinstance(raw.get("email"), str) and raw.get("email") else None
    anonymous = raw.get("is_anonymous", False)
    if not isinstance(anonymous, bool):
        raise errors.unauthorized("Token claim 'is_anonymous' must be true or false")
    return Claims(role=role, sub=subject, exp=int(raw["exp"]), email=email, is_anonymous=anonymous, raw=raw)


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
