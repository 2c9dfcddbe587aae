"""Token verification: what is accepted, and every way a token is refused (SPEC section 3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from acl.exceptions import TOKEN_REASONS, AclError, InvalidToken
from acl.principal import Role
from acl.tokens import MAX_TOKEN_LENGTH, TokenConfig, TokenVerifier, issue_token

SECRET = "test-secret-0123456789-abcdefghijklmnop"  # >= 32 bytes, as RFC 7518 requires
OTHER_SECRET = "another-secret-0123456789-abcdefghijkl"

PrivateKey = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
)


# ---------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: object) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def hs256_by_hand(key: bytes, header: dict[str, Any], claims: object) -> str:
    """Sign without PyJWT, which refuses some of the keys these tests need to misuse."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def now() -> datetime:
    return datetime.now(UTC)


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for alice; pass ``name=None`` to drop a claim."""
    issued = int(now().timestamp())
    base: dict[str, Any] = {"sub": "alice", "iat": issued, "nbf": issued, "exp": issued + 3600, "jti": "j-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(secret: str = SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, algorithm="HS256")


def public_pem(private_key: PrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def hs_verifier(**config: Any) -> TokenVerifier:
    return TokenVerifier(TokenConfig(hs256_secret=SECRET, **config))


def reason_of(verifier: TokenVerifier, token: Any) -> str:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    assert info.value.reason in TOKEN_REASONS
    return info.value.reason


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def p384_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


# ---------------------------------------------------------------- HS256 and issue_token


def test_issue_token_roundtrip() -> None:
    issued = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    token = issue_token(SECRET, "alice", ttl=timedelta(minutes=5), jti="abc", now=issued)
    payload = jwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert payload == {
        "sub": "alice",
        "role": "member",
        "iat": int(issued.timestamp()),
        "nbf": int(issued.timestamp()),
        "exp": int(issued.timestamp()) + 300,
        "jti": "abc",
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_issue_and_verify() -> None:
    before = now().replace(microsecond=0)
    token = issue_token(SECRET, "carol", role=Role.CREATOR, ttl=timedelta(hours=2))
    principal = hs_verifier().verify(token)
    assert principal.user_id == "carol"
    assert principal.role is Role.CREATOR
    assert principal.jti is not None and len(principal.jti) == 32  # uuid4 hex
    assert principal.issued_at is not None and principal.expires_at is not None
    assert principal.issued_at.tzinfo is UTC and principal.expires_at.tzinfo is UTC
    assert before <= principal.issued_at <= now()
    assert principal.expires_at - principal.issued_at == timedelta(hours=2)


def test_issued_jtis_are_unique() -> None:
    verifier = hs_verifier()
    jtis = {verifier.verify(issue_token(SECRET, "alice")).jti for _ in range(20)}
    assert len(jtis) == 20


@pytest.mark.parametrize("role", list(Role))
def test_roles_roundtrip(role: Role) -> None:
    assert hs_verifier().verify(issue_token(SECRET, "svc", role=role)).role is role


def test_issue_token_with_audience_and_issuer() -> None:
    token = issue_token(SECRET, "alice", audience="messenger", issuer="https://login.example")
    payload = jwt.decode(token, options={"verify_signature": False})
    assert (payload["aud"], payload["iss"]) == ("messenger", "https://login.example")
    verifier = hs_verifier(audience="messenger", issuer="https://login.example")
    assert verifier.verify(token).user_id == "alice"
    assert reason_of(hs_verifier(audience="other"), token) == "bad_audience"
    assert reason_of(hs_verifier(issuer="other"), token) == "bad_issuer"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((SECRET, "a/b"), {}),
        ((SECRET, ""), {}),
        ((SECRET, "+"), {}),
        ((SECRET, "élodie"), {}),
        ((SECRET, "alice"), {"ttl": timedelta(0)}),
        ((SECRET, "alice"), {"ttl": timedelta(seconds=-1)}),
        ((SECRET, "alice"), {"now": datetime(2030, 1, 1)}),  # noqa: DTZ001 - naive on purpose
        ((SECRET, "alice"), {"role": "admin"}),
        (("short", "alice"), {}),
        (("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n", "alice"), {}),
    ],
)
def test_issue_token_refuses(args: tuple[str, str], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        issue_token(*args, **kwargs)


def test_verify_hs256_minimal_claims() -> None:
    """Only sub and exp are required: role defaults to member, jti and iat are optional."""
    principal = hs_verifier().verify(hs_token(iat=None, nbf=None, jti=None))
    assert principal.user_id == "alice"
    assert principal.role is Role.MEMBER
    assert principal.jti is None
    assert principal.issued_at is None
    assert principal.expires_at is not None


def test_expired() -> None:
    token = issue_token(SECRET, "alice", ttl=timedelta(minutes=5), now=now() - timedelta(hours=1))
    assert reason_of(hs_verifier(), token) == "expired"


def test_leeway_accepts_slightly_expired_tokens() -> None:
    token = hs_token(exp=int(now().timestamp()) - 10)
    assert reason_of(hs_verifier(), token) == "expired"
    assert hs_verifier(leeway_seconds=120).verify(token).user_id == "alice"


def test_nbf_in_future() -> None:
    future = int((now() + timedelta(minutes=10)).timestamp())
    assert reason_of(hs_verifier(), hs_token(nbf=future, iat=None)) == "not_yet_valid"
    assert hs_verifier(leeway_seconds=3600).verify(hs_token(nbf=future, iat=None)).user_id == "alice"


def test_issued_in_future() -> None:
    token = issue_token(SECRET, "alice", now=now() + timedelta(minutes=10))
    assert reason_of(hs_verifier(), token) == "not_yet_valid"


def test_audience() -> None:
    verifier = hs_verifier(audience="messenger")
    assert verifier.verify(hs_token(aud="messenger")).user_id == "alice"
    assert verifier.verify(hs_token(aud=["billing", "messenger"])).user_id == "alice"
    assert reason_of(verifier, hs_token(aud="billing")) == "bad_audience"
    assert reason_of(verifier, hs_token(aud=["billing"])) == "bad_audience"
    assert reason_of(verifier, hs_token()) == "missing_claim"
    # No audience configured: a token naming one is fine.
    assert hs_verifier().verify(hs_token(aud="whatever")).user_id == "alice"


def test_issuer() -> None:
    verifier = hs_verifier(issuer="https://login.example")
    assert verifier.verify(hs_token(iss="https://login.example")).user_id == "alice"
    assert reason_of(verifier, hs_token(iss="https://evil.example")) == "bad_issuer"
    assert reason_of(verifier, hs_token()) == "missing_claim"
    assert hs_verifier().verify(hs_token(iss="anyone")).user_id == "alice"


@pytest.mark.parametrize("claim", ["sub", "exp"])
def test_required_claims(claim: str) -> None:
    dropped: dict[str, Any] = {claim: None}
    assert reason_of(hs_verifier(), hs_token(**dropped)) == "missing_claim"


@pytest.mark.parametrize("sub", ["", "a/b", "+", "#", "..", ".", "x" * 65, "élodie", "alice\n", "al ice"])
def test_bad_subject(sub: str) -> None:
    assert reason_of(hs_verifier(), hs_token(sub=sub)) == "bad_subject"


@pytest.mark.parametrize("sub", [123, ["alice"], {"id": "alice"}, True])
def test_non_string_subject(sub: object) -> None:
    assert reason_of(hs_verifier(), hs_token(sub=sub)) == "bad_subject"


@pytest.mark.parametrize(
    "role", ["admin", "Member", "SERVICE", "", " member", 1, ["member"], {"r": 1}, False]
)
def test_bad_role(role: object) -> None:
    assert reason_of(hs_verifier(), hs_token(role=role)) == "bad_role"


def test_null_role_is_refused() -> None:
    token = jwt.encode({**claims(), "role": None}, SECRET, algorithm="HS256")
    assert reason_of(hs_verifier(), token) == "bad_role"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": "tomorrow"}, "malformed"),
        ({"nbf": "yesterday"}, "malformed"),
        ({"iat": "now"}, "malformed"),
        ({"jti": 42}, "malformed"),
        ({"exp": 10**30}, "malformed"),  # too far for a datetime
    ],
)
def test_malformed_claims(overrides: dict[str, Any], reason: str) -> None:
    assert reason_of(hs_verifier(), hs_token(**overrides)) == reason


def test_payload_must_be_an_object() -> None:
    token = hs256_by_hand(SECRET.encode(), {"alg": "HS256", "typ": "JWT"}, ["sub", "alice"])
    assert reason_of(hs_verifier(), token) == "malformed"


def test_wrong_secret() -> None:
    assert reason_of(hs_verifier(), hs_token(secret=OTHER_SECRET)) == "bad_signature"


def test_tampered_payload_keeps_old_signature() -> None:
    """Raising one's own role by editing the payload must break the signature."""
    token = issue_token(SECRET, "alice")
    header, _, signature = token.split(".")
    forged_claims = jwt.decode(token, SECRET, algorithms=["HS256"]) | {"role": "service"}
    forged = f"{header}.{b64json(forged_claims)}.{signature}"
    assert reason_of(hs_verifier(), forged) == "bad_signature"


def test_tampered_signature() -> None:
    token = issue_token(SECRET, "alice")
    head, _, signature = token.rpartition(".")
    # Flip a character in the middle: the last one may only carry padding bits.
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    forged = f"{head}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"
    assert reason_of(hs_verifier(), forged) == "bad_signature"
    assert reason_of(hs_verifier(), f"{head}.") == "bad_signature"  # signature stripped


# ---------------------------------------------------------------- alg none and algorithm choice


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
def test_alg_none_rejected(alg: str, signature: str, rsa_key: rsa.RSAPrivateKey) -> None:
    token = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims(role='service'))}.{signature}"
    assert reason_of(hs_verifier(), token) == "algorithm_not_allowed"
    rsa_verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(rsa_key)))
    assert reason_of(rsa_verifier, token) == "algorithm_not_allowed"


@pytest.mark.parametrize(
    "header", [{"typ": "JWT"}, {"alg": None}, {"alg": ["HS256"]}, {"alg": ""}, {"alg": "HS512"}]
)
def test_missing_or_odd_alg_rejected(header: dict[str, Any]) -> None:
    token = hs256_by_hand(SECRET.encode(), header, claims())
    assert reason_of(hs_verifier(), token) == "algorithm_not_allowed"


def test_hs256_only_verifier_rejects_asymmetric_tokens(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert reason_of(hs_verifier(), token) == "algorithm_not_allowed"


@pytest.mark.parametrize("strip", [False, True])
def test_algorithm_confusion_rejected(rsa_key: rsa.RSAPrivateKey, strip: bool) -> None:
    """An HS256 token whose HMAC key is the (public) PEM text must never pass."""
    pem = public_pem(rsa_key)
    key = (pem.strip() if strip else pem).encode()
    token = hs256_by_hand(key, {"alg": "HS256", "typ": "JWT"}, claims(role="service"))

    only_key = TokenVerifier(TokenConfig(public_key_pem=pem))
    assert "HS256" not in only_key.algorithms
    assert reason_of(only_key, token) == "algorithm_not_allowed"

    # With both a secret and a key, HS256 is checked against the secret only.
    both = TokenVerifier(TokenConfig(hs256_secret=SECRET, public_key_pem=pem))
    assert reason_of(both, token) == "bad_signature"


def test_pem_as_hs256_secret_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="PEM"):
        TokenVerifier(TokenConfig(hs256_secret=public_pem(rsa_key)))


def test_both_secret_and_key(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(TokenConfig(hs256_secret=SECRET, public_key_pem=public_pem(rsa_key)))
    assert verifier.algorithms == {"HS256", "RS256", "RS384", "RS512", "PS256"}
    assert verifier.verify(hs_token()).user_id == "alice"
    assert verifier.verify(jwt.encode(claims(sub="bob"), rsa_key, algorithm="RS256")).user_id == "bob"


# ---------------------------------------------------------------- asymmetric keys


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256"])
def test_rsa_tokens(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(rsa_key), audience="messenger"))
    token = jwt.encode(claims(role="creator", aud="messenger"), rsa_key, algorithm=alg)
    principal = verifier.verify(token)
    assert (principal.user_id, principal.role, principal.jti) == ("alice", Role.CREATOR, "j-1")


def test_rsa_verifier_algorithms(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(rsa_key)))
    assert verifier.algorithms == {"RS256", "RS384", "RS512", "PS256"}


def test_rsa_wrong_key(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(rsa_key)))
    assert reason_of(verifier, jwt.encode(claims(), other_rsa_key, algorithm="RS256")) == "bad_signature"


def test_rsa_tampered_payload(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(rsa_key)))
    header, _, signature = jwt.encode(claims(), rsa_key, algorithm="RS256").split(".")
    forged = f"{header}.{b64json(claims(sub='bob'))}.{signature}"
    assert reason_of(verifier, forged) == "bad_signature"


def test_rsa_expired(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(rsa_key)))
    token = jwt.encode(claims(exp=int(now().timestamp()) - 60), rsa_key, algorithm="RS256")
    assert reason_of(verifier, token) == "expired"


def test_pkcs1_rsa_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    verifier = TokenVerifier(TokenConfig(public_key_pem=pem.decode()))
    assert verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256")).user_id == "alice"


def test_certificate_pem(rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "login.example")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - timedelta(days=1))
        .not_valid_after(now() + timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    verifier = TokenVerifier(TokenConfig(public_key_pem=pem))
    assert verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256")).user_id == "alice"


def test_es256_tokens(p256_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(p256_key), issuer="login"))
    assert verifier.algorithms == {"ES256"}
    principal = verifier.verify(jwt.encode(claims(iss="login", role="service"), p256_key, algorithm="ES256"))
    assert (principal.user_id, principal.role) == ("alice", Role.SERVICE)
    assert (
        reason_of(verifier, jwt.encode(claims(iss="login"), rsa_key, algorithm="RS256"))
        == "algorithm_not_allowed"
    )
    assert reason_of(verifier, hs_token(iss="login")) == "algorithm_not_allowed"
    other = ec.generate_private_key(ec.SECP256R1())
    assert reason_of(verifier, jwt.encode(claims(iss="login"), other, algorithm="ES256")) == "bad_signature"


def test_es384_tokens(p384_key: ec.EllipticCurvePrivateKey, p256_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(p384_key)))
    assert verifier.algorithms == {"ES384"}
    assert verifier.verify(jwt.encode(claims(), p384_key, algorithm="ES384")).user_id == "alice"
    # The curve fixes the algorithm: a P-384 verifier does not take ES256.
    assert reason_of(verifier, jwt.encode(claims(), p256_key, algorithm="ES256")) == "algorithm_not_allowed"


def test_eddsa_tokens(ed_key: ed25519.Ed25519PrivateKey, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(ed_key)))
    assert verifier.algorithms == {"EdDSA"}
    assert verifier.verify(jwt.encode(claims(sub="bob"), ed_key, algorithm="EdDSA")).user_id == "bob"
    assert reason_of(verifier, jwt.encode(claims(), rsa_key, algorithm="RS256")) == "algorithm_not_allowed"
    other = ed25519.Ed25519PrivateKey.generate()
    assert reason_of(verifier, jwt.encode(claims(), other, algorithm="EdDSA")) == "bad_signature"


def test_ed448_tokens() -> None:
    key = ed448.Ed448PrivateKey.generate()
    verifier = TokenVerifier(TokenConfig(public_key_pem=public_pem(key)))
    assert verifier.verify(jwt.encode(claims(), key, algorithm="EdDSA")).user_id == "alice"


# ---------------------------------------------------------------- garbage


def _deep_header() -> str:
    return f"{b64url(b'[' * 5000)}.{b64json(claims())}.c2ln"


GARBAGE: list[tuple[str, Callable[[], object]]] = [
    ("empty", lambda: ""),
    ("word", lambda: "garbage"),
    ("dots", lambda: "..."),
    ("two parts", lambda: "a.b"),
    ("three junk parts", lambda: "a.b.c"),
    ("four parts", lambda: "a.b.c.d"),
    ("bearer prefix", lambda: "Bearer " + issue_token(SECRET, "alice")),
    ("spaces", lambda: "   "),
    ("unicode", lambda: "ééé.ççç.ààà"),
    ("nul", lambda: "\x00.\x00.\x00"),
    ("header not json", lambda: f"{b64url(b'not json')}.{b64json(claims())}.c2ln"),
    ("header is a list", lambda: f"{b64json(['HS256'])}.{b64json(claims())}.c2ln"),
    ("payload not base64", lambda: f"{b64json({'alg': 'HS256'})}.!!!.c2ln"),
    ("deeply nested header", _deep_header),
    ("too long", lambda: "a" * (MAX_TOKEN_LENGTH + 1)),
    ("none", lambda: None),
    ("bytes", lambda: b"a.b.c"),
    ("int", lambda: 42),
]


@pytest.mark.parametrize("make", [make for _, make in GARBAGE], ids=[name for name, _ in GARBAGE])
def test_garbage_is_malformed(make: Callable[[], object]) -> None:
    token = make()
    for verifier in (hs_verifier(), hs_verifier(audience="messenger", issuer="login")):
        assert reason_of(verifier, token) in {"malformed", "algorithm_not_allowed"}


def test_garbage_reasons_are_specific() -> None:
    assert reason_of(hs_verifier(), "garbage") == "malformed"
    assert reason_of(hs_verifier(), "a.b.c") == "malformed"
    assert reason_of(hs_verifier(), None) == "malformed"
    assert reason_of(hs_verifier(), _deep_header()) == "malformed"


# ---------------------------------------------------------------- errors and configuration


def test_invalid_token_carries_reason_detail_and_cause() -> None:
    token = issue_token(SECRET, "alice", now=now() - timedelta(days=1))
    with pytest.raises(InvalidToken) as info:
        hs_verifier().verify(token)
    error = info.value
    assert isinstance(error, AclError)
    assert error.reason == "expired"
    assert error.detail
    assert isinstance(error.__cause__, jwt.PyJWTError)
    assert token not in str(error)
    assert str(error).startswith("expired")


def test_invalid_token_constructor() -> None:
    error = InvalidToken("bad_role", "role 'admin' is not accepted")
    assert (error.reason, error.detail) == ("bad_role", "role 'admin' is not accepted")
    assert str(error) == "bad_role: role 'admin' is not accepted"


@pytest.mark.parametrize(
    "config",
    [
        TokenConfig(),
        TokenConfig(hs256_secret="too-short"),
        TokenConfig(hs256_secret=""),
        TokenConfig(public_key_pem="not a pem"),
        TokenConfig(public_key_pem=""),
        TokenConfig(hs256_secret=SECRET, leeway_seconds=-1),
    ],
    ids=repr,
)
def test_bad_configuration(config: TokenConfig) -> None:
    with pytest.raises(ValueError):
        TokenVerifier(config)


def test_private_key_pem_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ValueError):
        TokenVerifier(TokenConfig(public_key_pem=pem))


def test_weak_or_unsupported_keys_refused() -> None:
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose
    with pytest.raises(ValueError, match="2048"):
        TokenVerifier(TokenConfig(public_key_pem=public_pem(weak_rsa)))
    secp256k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ValueError, match="curve"):
        TokenVerifier(TokenConfig(public_key_pem=public_pem(secp256k1)))
