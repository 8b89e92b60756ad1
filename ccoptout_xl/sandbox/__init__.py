"""A local stand-in for Constant Contact's V3 contacts and campaign reports API, for tests, the demo and benchmarks.

    from ccoptout_xl.sandbox import AccountSpec, Fault, Sandbox

    with Sandbox(AccountSpec(contacts=2000, seed=1)) as sb:
        requests.get(f"{sb.base_url}/contacts", headers={"Authorization": f"Bearer {sb.token}"})

``sb.token`` is an access token of the sandbox's own OAuth 2.0 authorization server at ``sb.auth_url``
(device flow, authorization code with PKCE, refresh; see ``sb.oauth`` and oauth.py), which is the only
issuer the API accepts besides an explicit ``Sandbox(token=...)``.

``sb.account.opt_out(count=25)``, ``sb.account.resubscribe(ids)`` and ``sb.account.delete(ids)`` change
the served account (in a private copy: other sandboxes on the same spec are unaffected) for tests of
incremental sync; ``opt_out(..., at=old, backdated=True)`` is an opt-out that arrives now with an old date.
``sb.account.pick("active" | "unsubscribed" | "any_not_deleted", n, rng)`` draws contacts at random,
deterministically, and ``sb.account.optouts_truth()`` lists every contact that carries an opt-out.

Email campaigns (campaigns.py, campaign_api.py): the summaries report, ``GET /emails``, ``/emails/{id}``, an
activity's send history and opt-outs report, all needing the ``campaign_data`` scope, which ``sb.token`` lacks by
default (a sign-in from before campaign reports): ``Sandbox(..., token_scopes=oauth.SCOPES)`` gives it every scope,
``sb.oauth.access_token("contact_data campaign_data")`` any mix. ``sb.account.campaigns()``, ``campaign_truth()``
(the activity each opt-out came through, or None) and ``campaign_cases()`` are the ground truth;
``sb.account.opt_out(..., campaign_activity_id=...)`` is an opt-out through an email.

Runtime code uses the standard library only.
"""

from .accounts import GENERATOR_VERSION, Account, AccountSpec
from .campaigns import ActivityFact, CampaignFact
from .hooks import Fault, RequestRecord
from .oauth import OAuthServer, TokenRequest
from .server import Sandbox
from .settings import MAX_CONTACTS, SettingError, check_server_settings

__all__ = [
    "GENERATOR_VERSION",
    "MAX_CONTACTS",
    "Account",
    "AccountSpec",
    "ActivityFact",
    "CampaignFact",
    "Fault",
    "OAuthServer",
    "RequestRecord",
    "Sandbox",
    "SettingError",
    "TokenRequest",
    "check_server_settings",
]
