"""`shouwang cloud provision --site ID`: the cloud broker's accounts and roles, one per site.

A gateway's account is named by its site id: it may publish only on `site/{id}/up/#` and read
only `site/{id}/down/#`, so a gateway can neither speak for another estate nor confirm, close
or read another estate's alerts. Each cloud worker role has an account of its own that may do
only that role's job (`ROLES`): ingest reads every uplink and writes only confirmations, each
downlink writes only its own kind and reads nothing. The site's broker password and evidence
upload token are written to files for the gateway (never printed, never kept beside the cloud's
config once copied), the workers' passwords to a file per account; the cloud keeps only their
hashes, all in one file of Mosquitto's dynamic-security plugin, read when the broker starts.
docs/provisioning.md says how to install them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cloud.config import BrokerAccount, BrokerAccounts, Role
from cloud.evidence import hash_token
from shouwang.broker_accounts import (
    ADMIN_ACCOUNT,
    DYNSEC_FILE,
    AccountRole,
    Accounts,
    Acl,
    ProvisionError,
    check_name,
    may_read,
    may_write,
    new_password,
    old_files_replaced,
    read_secret,
    verify_password,
    write_private,
)
from shouwang.broker_control import add_apply_arguments, apply_or_restart
from shouwang.protocol import SHARE_GROUP

# role (cloud.yaml `broker_accounts`) → its account on the cloud broker (cloud/server.py)
ROLES: dict[Role, str] = {
    "ingest": "shouwang-ingest",
    "alert_downlink": "shouwang-alert-downlink",
    "watchlist_downlink": "shouwang-watchlist-downlink",
}
# The account every worker shared before: removed from the files when provisioning again.
SHARED_ACCOUNT = "shouwang-cloud"
SHARED_PASSWORD_FILE = "cloud.password"
SITE_TOKENS_FILE = "site-tokens.yaml"
SITE_BROKER_PASSWORD = "cloud-broker.password"
SITE_EVIDENCE_TOKEN = "evidence.token"

# What each worker role's account may do (cloud/server.py); the rest is refused, a
# subscription at the SUBACK. Ingest reads every site's uplink, directly (alerts) and through
# the shared subscription of its `data` stream (Mosquitto 2.0.11 checks a `$share/GROUP/...`
# filter whole, so the group is part of the ACL), and confirms. Each downlink writes its own
# kind and reads nothing.
WORKER_ROLES: dict[str, AccountRole] = {
    ROLES["ingest"]: AccountRole("cloud ingest: every uplink, and its confirmations", [
        *may_read("site/+/up/#"), Acl("subscribePattern", f"$share/{SHARE_GROUP}/site/+/up/#"),
        *may_write("site/+/down/ack")]),
    ROLES["alert_downlink"]: AccountRole(
        "cloud alert downlink: each change to a site's alerts", may_write("site/+/down/alert")),
    ROLES["watchlist_downlink"]: AccountRole(
        "cloud watchlist downlink: each site's signed watchlists",
        may_write("site/+/down/watchlist")),
}


def role_of(account: str) -> AccountRole:
    """A worker role's, or else a site's: its gateway speaks only for its own site (its last
    will, `gateway_offline`, included) and hears only its own downlink."""
    return WORKER_ROLES.get(account) or AccountRole(
        f"site {account}'s gateway",
        [*may_write(f"site/{account}/up/#"), *may_read(f"site/{account}/down/#")])


@dataclass
class Provisioned:
    """What one `provision` run changed, for the operator."""

    site_issued: bool  # the site got a new password and evidence token
    workers_issued: list[str] = field(default_factory=list)  # worker accounts made or renewed
    shared_removed: bool = False  # the old shared worker account was taken out
    # An older release's password file and ACL, carried into the plugin's file and removed.
    old_files: list[Path] = field(default_factory=list)
    # For `--apply`: whether the admin account is new (the broker cannot know it yet) and the
    # running broker's commands.
    admin_issued: bool = False
    changes: list[dict[str, object]] = field(default_factory=list)


def worker_password_file(directory: Path, account: str) -> Path:
    return directory / f"{account}.password"


def worker_accounts(directory: Path) -> BrokerAccounts:
    """The workers' accounts as `cloud.yaml`'s `broker_accounts` names them."""
    return BrokerAccounts(**{
        role: BrokerAccount(username=account,
                            password_file=worker_password_file(directory, account))
        for role, account in ROLES.items()
    })


def site_dir(directory: Path, site: str) -> Path:
    """The gateway's credentials, to be copied to the gateway and then removed here."""
    return directory / "sites" / site


def provision(directory: Path, site: str, *, rotate: bool = False,
              broker_user: str | None = None, admin: bool = False) -> Provisioned:
    """Add (or with `rotate`, renew) `site`'s account and token; each worker role's account
    that is missing or does not match its password file is (re)issued. With `admin`, also
    the account `--apply` uses, and the commands for a running broker (`done.changes`)."""
    check_name(site, "site id")
    _not_a_service_account(site)
    passwords = Accounts.load(directory)
    done = Provisioned(False, _workers_accounts(directory, passwords),
                       _drop_shared_account(directory, passwords))
    tokens = _load_tokens(directory / SITE_TOKENS_FILE)
    issued = rotate or site not in passwords.hashes or site not in tokens
    if issued:
        bundle = site_dir(directory, site)
        write_private(bundle / SITE_BROKER_PASSWORD, passwords.issue(site) + "\n")
        token = new_password()
        write_private(bundle / SITE_EVIDENCE_TOKEN, token + "\n")
        tokens[site] = hash_token(token)
    done.admin_issued = admin and passwords.keep_admin()
    done.changes = passwords.changes(role_of)
    done.old_files = passwords.save(role_of, broker_user)
    write_private(directory / SITE_TOKENS_FILE, yaml.safe_dump(tokens, sort_keys=True))
    if done.shared_removed:  # only once the broker's files no longer name it
        (directory / SHARED_PASSWORD_FILE).unlink(missing_ok=True)
    done.site_issued = issued
    return done


@dataclass
class Revoked:
    """What one `revoke` did, for the operator."""

    found: bool  # the site had an account or a token
    old_files: list[Path]
    admin_issued: bool
    changes: list[dict[str, object]]


def revoke(directory: Path, site: str, admin: bool = False) -> Revoked:
    """Remove a site's broker account and evidence token (a lost or stolen gateway). The
    broker turns the gateway away once restarted (or told, `changes`), which also drops its
    live connection."""
    if site in ROLES.values() or site == ADMIN_ACCOUNT:
        raise ProvisionError(f"{site!r} is a service account, not a site"
                             if site == ADMIN_ACCOUNT else
                             f"{site!r} is a cloud worker account, not a site")
    passwords = Accounts.load(directory)
    tokens = _load_tokens(directory / SITE_TOKENS_FILE)
    found = passwords.hashes.pop(site, None) is not None
    found = tokens.pop(site, None) is not None or found
    admin_issued = admin and passwords.keep_admin()
    changes = passwords.changes(role_of)
    old_files = passwords.save(role_of)
    write_private(directory / SITE_TOKENS_FILE, yaml.safe_dump(tokens, sort_keys=True))
    return Revoked(found, old_files, admin_issued, changes)


def _not_a_service_account(site: str) -> None:
    if site == ADMIN_ACCOUNT:
        raise ProvisionError(f"site id {site!r} is the broker's admin account name")
    if site in ROLES.values() or site == SHARED_ACCOUNT:
        raise ProvisionError(f"site id {site!r} is a cloud worker account name")


def _workers_accounts(directory: Path, passwords: Accounts) -> list[str]:
    """Issue each role's account that is missing, or whose file does not hold its password
    (lost, edited); the accounts issued."""
    issued = []
    for account in ROLES.values():
        path = worker_password_file(directory, account)
        current, known = read_secret(path), passwords.hashes.get(account)
        if current is None or known is None or not verify_password(current, known):
            write_private(path, passwords.issue(account) + "\n")
            issued.append(account)
    return issued


def _drop_shared_account(directory: Path, passwords: Accounts) -> bool:
    found = passwords.hashes.pop(SHARED_ACCOUNT, None) is not None
    return found or (directory / SHARED_PASSWORD_FILE).exists()


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
        help="write the cloud broker's accounts (its dynamic-security file) with one for the site, "
        "and the site's evidence token (docs/provisioning.md)",
    )
    p.add_argument("--site", required=True, help="site (gateway) id")
    p.add_argument("--dir", type=Path, required=True,
                   help=f"where the broker's `{DYNSEC_FILE}`, the workers' `ROLE.password` "
                   "files, "
                   "`site-tokens.yaml` and `sites/ID/` go (e.g. /etc/shouwang/cloud-broker)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--rotate", action="store_true",
                      help="issue a new broker password and evidence token for the site")
    what.add_argument("--revoke", action="store_true",
                      help="remove the site's broker account and evidence token")
    p.add_argument("--broker-user", default=None, metavar="USER",
                   help=f"give `{DYNSEC_FILE}` to the user Mosquitto runs as (Debian: "
                   "mosquitto); later runs keep the owner")
    add_apply_arguments(p)
    p.set_defaults(fn=cmd_provision)


def cmd_provision(args: argparse.Namespace) -> int:
    directory = args.dir.resolve()
    try:
        if args.revoke:
            revoked = revoke(directory, args.site, admin=args.apply)
            applied = apply_or_restart(args, directory, revoked.admin_issued, revoked.changes)
            print(f"{old_files_replaced(revoked.old_files)}"
                  f"site {args.site}: {'revoked' if revoked.found else 'had no account'}; "
                  f"{applied} (either drops its live connection and turns it away). The "
                  "running cloud refuses the site's evidence token from its next upload (no "
                  "restart).")
            return 0 if revoked.found else 1
        done = provision(directory, args.site, rotate=args.rotate,
                         broker_user=args.broker_user, admin=args.apply)
        applied = apply_or_restart(args, directory, done.admin_issued, done.changes)
    except ProvisionError as err:
        print(f"shouwang: {err}", file=sys.stderr)
        return 2
    bundle = site_dir(directory, args.site)
    if done.site_issued:
        print(
            f"site {args.site}: cloud broker username={args.site}; its password and evidence "
            f"token are in {bundle}/ ({SITE_BROKER_PASSWORD}, {SITE_EVIDENCE_TOKEN}, mode "
            "0600).\nCopy them to the gateway (its site file: cloud_broker.password_file, "
            "evidence.token_file), then delete them here."
        )
    else:
        print(f"site {args.site}: already provisioned (--rotate issues new credentials)")
    for account in done.workers_issued:
        print(f"cloud workers: new account {account}, password in "
              f"{worker_password_file(directory, account)} (mode 0600)")
    if done.shared_removed:
        print(f"cloud workers: removed the workers' shared account {SHARED_ACCOUNT} (and "
              f"{SHARED_PASSWORD_FILE}): give cloud.yaml the broker_accounts below before "
              "restarting the broker, or the workers are refused when they reconnect.")
    accounts = "".join(
        f"\n  {role}: {{username: {account}, password_file: "
        f"{worker_password_file(directory, account)}}}" for role, account in ROLES.items())
    print(
        f"{old_files_replaced(done.old_files)}"
        f"Broker accounts: {directory / DYNSEC_FILE} ({applied}).\nIn cloud.yaml:\n"
        f"broker_accounts:{accounts}"
        f"\nevidence: {{site_tokens_file: {directory / SITE_TOKENS_FILE}}}"
    )
    return 0
