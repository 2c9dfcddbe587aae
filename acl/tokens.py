"""Bearer-token (JWT) verification and the development token issuer.

The accepted algorithms are fixed by configuration, never by the token: HS256 when a shared
secret is configured, and the family of the configured public key (RSA, EC or EdDSA) when a
key is configured. The token's ``alg`` header only selects among those, so ``alg: none`` and
algorithm confusion (an HS256 token keyed with the public key's PEM text) cannot succeed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from acl.exceptions import InvalidToken
from acl.principal import Principal, Role, is_valid_user_id

#: RFC 7518 section 3.2: an HS256 key must be at least as long as the hash (256 bits).
#: PyJWT only warns below that; we refuse such secrets up front instead.
MIN_HS256_SECRET_BYTES: Final = 32
#: NIST SP 800-131A; PyJWT warns below this size.
MIN_RSA_KEY_BITS: Final = 2048
#: Tokens longer than this are refused before any parsing (a real one is well under 2 KiB).
MAX_TOKEN_LENGTH: Final = 8192

_PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
_VerifyKey = str | _PublicKey

_RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256")
# ES algorithms are bound to one curve each (RFC 7518 section 3.4).
_EC_ALGORITHM_BY_CURVE: Final[dict[type[ec.EllipticCurve], str]] = {
    ec.SECP256R1: "ES256",
    ec.SECP384R1: "ES384",
    ec.SECP521R1: "ES512",
}

_ROLE_VALUES: Final = frozenset(role.value for role in Role)

# First match wins: order subclasses before their bases (InvalidSignatureError is a DecodeError).
_REASON_BY_ERROR: Final[tuple[tuple[type[jwt.PyJWTError], str], ...]] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "bad_audience"),
    (jwt.InvalidIssuerError, "bad_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (InvalidSubjectError, "bad_subject"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidKeyError, "bad_signature"),
    (InvalidJTIError, "malformed"),
    (jwt.PyJWTError, "malformed"),
)


@dataclass(frozen=True)
class TokenConfig:
    """How tokens are verified. At least one of ``hs256_secret`` and ``public_key_pem``."""

    hs256_secret: str | None = None
    """Shared HS256 secret (the dev secret, or the login service's); enables HS256."""
    public_key_pem: str | None = None
    """PEM public key or certificate; enables the algorithms of its key type."""
    audience: str | None = None
    issuer: str | None = None
    leeway_seconds: int = 0


class TokenVerifier:
    """Verifies bearer tokens against one :class:`TokenConfig`. Thread-safe, no I/O.

    Build one at start-up and reuse it: the public key is parsed once, here.
    """

    def __init__(self, config: TokenConfig) -> None:
        keys: dict[str, _VerifyKey] = {}
        if config.hs256_secret is not None:
            _check_hs256_secret(config.hs256_secret)
            keys["HS256"] = config.hs256_secret
        if config.public_key_pem is not None:
            public_key = _load_public_key(config.public_key_pem)
            for algorithm in _algorithms_for(public_key):
                keys[algorithm] = public_key
        if not keys:
            raise ValueError("TokenConfig needs hs256_secret or public_key_pem")
        if config.leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        self._config = config
        self._keys = keys
        self._jwt = jwt.PyJWT(
            {
                "require": ["exp", "sub"],
                # With no audience configured, a token that names one is still fine.
                "verify_aud": config.audience is not None,
                # Keys are checked above; never let PyJWT fall back to a warning.
                "enforce_minimum_key_length": True,
            }
        )

    @property
    def algorithms(self) -> frozenset[str]:
        """The JWT ``alg`` values this verifier accepts."""
        return frozenset(self._keys)

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid token; raise :class:`InvalidToken` otherwise."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("malformed", "empty token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("malformed", f"token longer than {MAX_TOKEN_LENGTH} characters")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
            if key is None or not isinstance(algorithm, str):
                raise InvalidToken("algorithm_not_allowed", f"algorithm {algorithm!r:.40} is not accepted")
            claims = self._jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._config.audience,
                issuer=self._config.issuer,
                leeway=self._config.leeway_seconds,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason_for(exc), str(exc)) from exc
        except (ValueError, TypeError, RecursionError) as exc:
            # Hostile JSON in the header (e.g. deep nesting) that PyJWT does not wrap.
            raise InvalidToken("malformed", "unparsable token") from exc
        return _principal_from_claims(claims)


def issue_token(
    secret: str,
    user_id: str,
    *,
    role: Role = Role.MEMBER,
    ttl: timedelta = timedelta(hours=1),
    audience: str | None = None,
    issuer: str | None = None,
    jti: str | None = None,
    now: datetime | None = None,
) -> str:
    """Sign an HS256 token for ``user_id`` (development and the service account).

    Claims: ``sub``, ``role``, ``iat``, ``nbf``, ``exp``, ``jti`` (a uuid4 hex when not given), and
    ``aud``/``iss`` when given. Raises ``ValueError`` for a bad user id, role, ttl, secret or a
    naive ``now``.
    """
    _check_hs256_secret(secret)
    if not is_valid_user_id(user_id):
        raise ValueError(f"invalid user id: {user_id!r:.80}")
    role = Role(role)
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    if now is None:
        now = datetime.now(UTC)
    elif now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    issued_at = int(now.timestamp())
    claims: dict[str, Any] = {
        "sub": user_id,
        "role": role.value,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + int(ttl.total_seconds()),
        "jti": jti if jti is not None else uuid.uuid4().hex,
    }
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")


def _check_hs256_secret(secret: str) -> None:
    encoded = secret.encode()
    if len(encoded) < MIN_HS256_SECRET_BYTES:
        raise ValueError(f"the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes long")
    if encoded.lstrip().startswith((b"-----BEGIN", b"ssh-", b"ecdsa-sha2-")):
        # A key used as an HMAC secret is exactly the algorithm-confusion mistake.
        raise ValueError("the HS256 secret looks like a PEM/SSH key; use public_key_pem for keys")


def _load_public_key(pem: str) -> _PublicKey:
    data = pem.strip().encode()
    try:
        if data.startswith(b"-----BEGIN CERTIFICATE-----"):
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError("public_key_pem is not a PEM public key or certificate") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_KEY_BITS:
            raise ValueError(f"RSA public key must be at least {MIN_RSA_KEY_BITS} bits")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key
    raise ValueError(f"unsupported public key type {type(key).__name__}")


def _algorithms_for(key: _PublicKey) -> tuple[str, ...]:
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHM_BY_CURVE.get(type(key.curve))
        if algorithm is None:
            raise ValueError(f"unsupported EC curve {key.curve.name}")
        return (algorithm,)
    return ("EdDSA",)


def _reason_for(exc: jwt.PyJWTError) -> str:
    for error_type, reason in _REASON_BY_ERROR:
        if isinstance(exc, error_type):
            return reason
    return "malformed"


def _timestamp(claims: dict[str, Any], name: str) -> datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise InvalidToken("malformed", f"claim {name!r} is not a usable timestamp") from exc


def _principal_from_claims(claims: dict[str, Any]) -> Principal:
    subject = claims["sub"]
    if not is_valid_user_id(subject):
        raise InvalidToken("bad_subject", "sub is not a valid user id")
    role_claim = claims.get("role", Role.MEMBER.value)
    if not isinstance(role_claim, str) or role_claim not in _ROLE_VALUES:
        raise InvalidToken("bad_role", f"role {role_claim!r:.40} is not one of {sorted(_ROLE_VALUES)}")
    jti = claims.get("jti")
    return Principal(
        user_id=subject,
        role=Role(role_claim),
        jti=jti if isinstance(jti, str) else None,
        issued_at=_timestamp(claims, "iat"),
        expires_at=_timestamp(claims, "exp"),
    )
