"""`--apply`: a running Mosquitto told of account changes over its dynamic-security topic.

The plugin reads its file only when the broker starts; without a restart, what `shouwang edge|
cloud provision` wrote reaches the broker as the plugin's own commands, sent by the
`shouwang-admin` account on the loopback listener. A deleted account's connections are dropped
at once. docs/provisioning.md says when to use it.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from shouwang.broker_accounts import (
    ADMIN_ACCOUNT,
    ADMIN_PASSWORD_FILE,
    CONTROL_TOPIC,
    ProvisionError,
    read_secret,
)


def apply_changes(port: int, password: str, commands: list[dict[str, object]],
                  host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Send `commands` in one request and check every answer; a refusal or no answer raises
    ProvisionError naming the command and what to do instead."""
    if not commands:
        return
    where = f"the broker at {host}:{port}"
    answered = threading.Event()
    state: dict[str, object] = {}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{ADMIN_ACCOUNT}-apply",
                         protocol=paho.MQTTv5)
    client.username_pw_set(ADMIN_ACCOUNT, password)

    def on_connect(client: paho.Client, userdata: object, flags: object,
                   reason_code: ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            state["refused"] = f"refused {ADMIN_ACCOUNT}: {reason_code}"
            answered.set()
            return
        client.subscribe(f"{CONTROL_TOPIC}/response", 1)

    def on_subscribe(client: paho.Client, userdata: object, mid: int,
                     reason_codes: list[ReasonCode], properties: object) -> None:
        # The answer goes only to a subscriber: ask once the broker confirmed it.
        if reason_codes[0].is_failure:
            state["refused"] = f"refused {ADMIN_ACCOUNT} its answers: {reason_codes[0]}"
            answered.set()
            return
        client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        state["responses"] = json.loads(message.payload).get("responses", [])
        answered.set()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message = on_message
    try:
        client.connect(host, port)
    except OSError as err:
        raise ProvisionError(f"{where}: cannot connect ({err}); restart it instead: "
                             "systemctl restart mosquitto") from err
    client.loop_start()
    try:
        if not answered.wait(timeout):
            raise ProvisionError(f"{where} did not answer within {timeout:g} s; restart it "
                                 "instead: systemctl restart mosquitto")
    finally:
        client.disconnect()
        client.loop_stop()
    if "refused" in state:
        raise ProvisionError(f"{where} {state['refused']}: restart it once, so that it reads "
                             "the accounts file with that account")
    responses = state["responses"]
    assert isinstance(responses, list)
    failed = [f"{command['command']} {command.get('username') or command.get('rolename')}: "
              f"{response['error']}"
              for command, response in zip(commands, responses, strict=False)
              if "error" in response]
    if failed or len(responses) != len(commands):
        raise ProvisionError(
            f"{where} refused {'; '.join(failed) or 'some commands'} (the file is written; "
            "restart it to read it whole: systemctl restart mosquitto)"
        )


def add_apply_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--apply", action="store_true",
        help=f"also change the running broker now, as {ADMIN_ACCOUNT} on its loopback "
        "listener, instead of a restart; the first --apply makes that account (password in "
        f"{ADMIN_PASSWORD_FILE}), which the broker learns at one last restart")
    parser.add_argument("--broker-port", type=int, default=1883, metavar="PORT",
                        help="the broker's loopback listener, for --apply (default 1883)")


def apply_or_restart(args: argparse.Namespace, directory: Path, admin_issued: bool,
                     commands: list[dict[str, object]]) -> str:
    """Apply `commands` when `--apply` can; what the operator is to do, for the output."""
    restart = "restart the broker, which reads it only when it starts: systemctl restart mosquitto"
    if not args.apply:
        return restart
    if admin_issued:
        return (f"{ADMIN_ACCOUNT} has a new password: restart the broker this once (systemctl "
                "restart mosquitto); later --apply runs change the running broker")
    password = read_secret(directory / ADMIN_PASSWORD_FILE)
    assert password is not None  # keep_admin wrote it
    apply_changes(args.broker_port, password, commands)
    return (f"applied to the running broker at 127.0.0.1:{args.broker_port}: "
            f"{len(commands)} command(s), no restart")
