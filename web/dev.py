"""Development login (AUTH_DEV_LOGIN=true, set by `make run`): a signed token for any user id.

With it off the route answers 404 NOT_FOUND like an unknown route.
"""

from __future__ import annotations

from flask import Blueprint, Response
from spectree import Response as Resp

from models.errors import NotFound
from web.api import respond, settings, spec
from web.auth import public, sign
from web.schemas import Problem
from web.schemas.identity import DevLoginIn, DevLoginOut

bp = Blueprint("dev", __name__)
DEV_TOKEN_TTL = 3600


@bp.post("/dev/login")
@public
@spec.validate(json=DevLoginIn, resp=Resp(HTTP_200=DevLoginOut, HTTP_400=Problem, HTTP_404=Problem), tags=["identity"])
def login(json: DevLoginIn) -> Response:
    """Sign in as `userId` without a password: development only (AUTH_DEV_LOGIN=true, set by `make run`,
    never by the compose files); 404 otherwise."""
    if not settings().auth_dev_login:
        raise NotFound("no such route (the development login is off)")
    token = sign(settings(), json.userId, DEV_TOKEN_TTL)
    return respond(DevLoginOut(accessToken=token, tokenType="Bearer", expiresIn=DEV_TOKEN_TTL))
