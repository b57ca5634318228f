"""`shouwang cloud provision --site ID`: the cloud broker's accounts and ACL, one per site.

A gateway's account is named by its site id: it may publish only on `site/{id}/up/#` and read
only `site/{id}/down/#`, so a gateway can neither speak for another estate nor confirm, close
or read another estate's alerts. The cloud workers share one account that reads every site's
uplink and writes every site's downlink. The site's broker password and evidence upload token
are written to files for the gateway (never printed, never kept beside the cloud's config once
copied); the cloud keeps only their hashes. docs/provisioning.md says how to install them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from cloud.evidence import hash_token
from shouwang.broker_accounts import (
    PasswordFile,
    ProvisionError,
    check_name,
    new_password,
    read_secret,
    verify_password,
    write_private,
)

CLOUD_ACCOUNT = "shouwang-cloud"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
CLOUD_PASSWORD_FILE = "cloud.password"
SITE_TOKENS_FILE = "site-tokens.yaml"
SITE_BROKER_PASSWORD = "cloud-broker.password"
SITE_EVIDENCE_TOKEN = "evidence.token"

CLOUD_ACL = f"""\
# Shouwang cloud broker ACL, written by `shouwang cloud provision`; provision again rather
# than edit. Mosquitto refuses whatever is not allowed here: a publish is dropped (MQTT 3.1.1)
# or answered "not authorized" (MQTT 5), a subscription is answered with failure 0x80.

# The cloud workers: every site's uplink (also through $share/cloud/...), every downlink
# (down/ack confirmations, down/alert lifecycle news, config, watchlist, cmd).
user {CLOUD_ACCOUNT}
topic read site/+/up/#
topic write site/+/down/#

# Every other account is one site's gateway, named by its site id (%u): it speaks only for
# its own site (its last will, `gateway_offline`, included) and hears only its own downlink.
pattern write site/%u/up/#
pattern read site/%u/down/#
"""


def site_dir(directory: Path, site: str) -> Path:
    """The gateway's credentials, to be copied to the gateway and then removed here."""
    return directory / "sites" / site


def provision(directory: Path, site: str, *, rotate: bool = False,
              broker_user: str | None = None) -> bool:
    """Add (or with `rotate`, renew) `site`'s account and token; True when anything new was
    issued for the site."""
    check_name(site, "site id")
    if site == CLOUD_ACCOUNT:
        raise ProvisionError(f"site id {CLOUD_ACCOUNT!r} is the cloud workers' account name")
    passwords = PasswordFile.load(directory / PASSWORD_FILE)
    _workers_account(directory, passwords)
    tokens = _load_tokens(directory / SITE_TOKENS_FILE)
    issued = rotate or site not in passwords.hashes or site not in tokens
    if issued:
        bundle = site_dir(directory, site)
        write_private(bundle / SITE_BROKER_PASSWORD, passwords.issue(site) + "\n")
        token = new_password()
        write_private(bundle / SITE_EVIDENCE_TOKEN, token + "\n")
        tokens[site] = hash_token(token)
    passwords.save(broker_user)
    write_private(directory / SITE_TOKENS_FILE, yaml.safe_dump(tokens, sort_keys=True))
    write_private(directory / ACL_FILE, CLOUD_ACL, broker_user)
    return issued


def revoke(directory: Path, site: str) -> bool:
    """Remove a site's broker account and evidence token (a lost or stolen gateway)."""
    passwords = PasswordFile.load(directory / PASSWORD_FILE)
    tokens = _load_tokens(directory / SITE_TOKENS_FILE)
    found = passwords.hashes.pop(site, None) is not None
    found = tokens.pop(site, None) is not None or found
    passwords.save()
    write_private(directory / SITE_TOKENS_FILE, yaml.safe_dump(tokens, sort_keys=True))
    return found


def _workers_account(directory: Path, passwords: PasswordFile) -> None:
    current = read_secret(directory / CLOUD_PASSWORD_FILE)
    known = passwords.hashes.get(CLOUD_ACCOUNT)
    if current is None or known is None or not verify_password(current, known):
        write_private(directory / CLOUD_PASSWORD_FILE, passwords.issue(CLOUD_ACCOUNT) + "\n")


def _load_tokens(path: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(path.read_text()) if path.exists() else {}
    except (OSError, yaml.YAMLError) as err:
        raise ProvisionError(f"{path}: cannot read: {err}") from err
    if not isinstance(data, dict) and data is not None:
        raise ProvisionError(f"{path}: expected a mapping of site id to token hash")
    return {str(k): str(v) for k, v in (data or {}).items()}


def add_parser(cloud: argparse._SubParsersAction) -> None:
    p = cloud.add_parser(
        "provision",
        help="write the cloud broker's password file and ACL with an account for the site, "
        "and the site's evidence token (docs/provisioning.md)",
    )
    p.add_argument("--site", required=True, help="site (gateway) id")
    p.add_argument("--dir", type=Path, required=True,
                   help="where the broker's `passwd` and `acl`, the workers' `cloud.password`, "
                   "`site-tokens.yaml` and `sites/ID/` go (e.g. /etc/shouwang/cloud-broker)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--rotate", action="store_true",
                      help="issue a new broker password and evidence token for the site")
    what.add_argument("--revoke", action="store_true",
                      help="remove the site's broker account and evidence token")
    p.add_argument("--broker-user", default=None, metavar="USER",
                   help="give `passwd` and `acl` to the user Mosquitto runs as (Debian: "
                   "mosquitto); later runs keep the owner")
    p.set_defaults(fn=cmd_provision)


def cmd_provision(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    try:
        if args.revoke:
            found = revoke(directory, args.site)
            print(f"site {args.site}: {'revoked' if found else 'had no account'}; "
                  "reload the broker (systemctl reload mosquitto). The running cloud refuses "
                  "the site's evidence token from its next upload (no restart).")
            return 0 if found else 1
        issued = provision(directory, args.site, rotate=args.rotate,
                           broker_user=args.broker_user)
    except ProvisionError as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return 2
    bundle = site_dir(directory, args.site)
    if issued:
        print(
            f"site {args.site}: cloud broker username={args.site}; its password and evidence "
            f"token are in {bundle}/ ({SITE_BROKER_PASSWORD}, {SITE_EVIDENCE_TOKEN}, mode "
            "0600).\nCopy them to the gateway (its site file: cloud_broker.password_file, "
            "evidence.token_file), then delete them here."
        )
    else:
        print(f"site {args.site}: already provisioned (--rotate issues new credentials)")
    print(
        f"Broker files: {directory / PASSWORD_FILE}, {directory / ACL_FILE} (reload the "
        f"broker: systemctl reload mosquitto).\nIn cloud.yaml: broker: username: "
        f"{CLOUD_ACCOUNT}, password_file: {directory / CLOUD_PASSWORD_FILE}; "
        f"evidence: site_tokens_file: {directory / SITE_TOKENS_FILE}"
    )
    return 0
