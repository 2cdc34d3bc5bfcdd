"""auth.py's pure rules: which token entries are usable, and what a failed JWT check says."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from memory_service.auth import (
    Authenticator,
    _JwtConfig,
    new_token,
    service_token_entry,
    token_hash,
)
from memory_service.domain.errors import Unauthenticated

ENTRY = {"name": "backend", "sha256": token_hash(new_token()), "scopes": ["memories:read"]}


@pytest.mark.parametrize(
    "profile_ids", [[], [0], [-1], [2**31], ["1"], [1.0], [True], "1", {"1": 1}]
)
def test_profile_ids_must_be_a_non_empty_list_of_integer_ids(profile_ids: object) -> None:
    # `[]` used to be falsy and so meant every profile; "1", 1.0 and True passed int().
    with pytest.raises(ValueError, match="assistant_profile_ids"):
        service_token_entry(ENTRY | {"assistant_profile_ids": profile_ids}, "tokens[0]")


def test_any_failure_while_verifying_a_jwt_is_unauthenticated_with_a_fixed_text() -> None:
    # A key that does not fit the algorithm makes PyJWT raise InvalidKeyError,
    # which is no InvalidTokenError: it used to escape the auth handling and
    # reach the caller as UNKNOWN with its text. Start-up no longer builds such
    # a pair; authenticate() must still hold if some other failure appears.
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(65537, 2048)
    claims = {"sub": str(uuid.uuid4()), "exp": int(time.time()) + 60}
    for key, algorithm, signer in (
        (rsa_key.public_key(), "ES256", ec_key),
        (ec_key.public_key(), "RS256", rsa_key),
    ):
        authenticator = Authenticator({}, _JwtConfig(key, algorithm, None, None))
        token = jwt.encode(claims, signer, algorithm)
        with pytest.raises(Unauthenticated) as caught:
            authenticator.authenticate(f"Bearer {token}")
        assert caught.value.message == "invalid token"
