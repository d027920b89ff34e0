"""Who is looking at the web view, and what the API would let them do.

The same credentials and rules as the API (oci_ref/api/access.py, oci_ref/auth.py):
``basic`` mode checks the ``Authorization: Basic`` header exactly as the API does
(the browser's own prompt supplies it); ``token`` mode accepts a bearer token from
``/token`` as it is, or the user's htpasswd password through Basic, granting what
``/token`` would grant that user (the same ``Access.allowed`` rules). Bad
credentials are a 401 with a Basic challenge, so the browser asks again.
"""

from __future__ import annotations

from dataclasses import dataclass

import falcon.asgi

from oci_ref.api.access import REALM, AccessControl
from oci_ref.auth import ACTIONS, ANONYMOUS, Principal, basic_credentials, bearer_token
from oci_ref.errors import ErrorCode, RegistryError


@dataclass(frozen=True)
class Viewer:
    principal: Principal
    control: AccessControl

    @property
    def user(self) -> str | None:
        """The signed-in user's name, None when anonymous."""
        return None if self.principal.name == ANONYMOUS else self.principal.name

    @property
    def auth_required(self) -> bool:
        return self.control.mode != 'none'

    def allowed(self, repository: str) -> frozenset[str]:
        if self.control.mode == 'none':
            return frozenset(ACTIONS)
        return self.control.access.allowed(self.principal, repository)

    def may(self, action: str, repository: str) -> bool:
        return action in self.allowed(repository)

    def may_pull(self, repository: str) -> bool:
        return self.may('pull', repository)

    @property
    def may_list(self) -> bool:
        """The catalog rules of ``/v2/_catalog`` (what it lists is filtered by pull)."""
        if self.control.mode == 'none':
            return True
        return self.control.access.may_list_catalog(self.principal)


def challenge() -> RegistryError:
    """401 asking the browser for a user name and password."""
    return RegistryError(ErrorCode.UNAUTHORIZED, 'sign in to see this registry',
                         headers={'WWW-Authenticate': f'Basic realm="{REALM}", '
                                                      'charset="UTF-8"'})


async def viewer_of(req: falcon.asgi.Request, control: AccessControl) -> Viewer:
    """The viewer behind a request; raises a 401 challenge for bad credentials."""
    header = req.get_header('Authorization')
    if control.mode == 'none' or not header:
        return Viewer(Principal(ANONYMOUS), control)
    if control.mode == 'basic' or bearer_token(header) is not None:
        # The API's own check (bcrypt runs in its password threads).
        try:
            principal = await control.authenticate(req, None)
        except RegistryError as ex:
            if ex.status == 401:
                raise challenge() from None
            raise
        return Viewer(principal, control)
    # Token mode, Basic credentials: the check ``/token`` makes before issuing
    # (counted against the failed-login budget, bcrypt in the password threads).
    creds = basic_credentials(header)
    if creds is None or not await control.verify(req, creds):
        raise challenge()
    return Viewer(Principal(creds[0], control.access.groups_of(creds[0])), control)
