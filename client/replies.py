"""What a site's error replies may say.

Flower turns an exception raised in a ClientApp into an error reply carrying `str(exception)`,
which can hold a data value, a date, an id or a local path (a DataValidationError names the file,
row and value). This outermost mod catches every exception first: the server gets the error's
class and a random reference (or, for a policy refusal, its fixed sentence), and the full
message stays at the site: its log, and `errors.log` (0600) in the site's state directory.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import traceback
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode

from client.node_config import STATE_DIR_KEY

log = logging.getLogger(__name__)


class SiteRefusal(RuntimeError):
    """The site refuses a message under its policy. `str()` is a fixed sentence safe to send to
    the server: it names the rule, never a data value, id, date or path. `policy_key` names the
    site policy's key that refused it, for the site's own log ("" where no key did: a message
    that does not read)."""

    def __init__(self, sentence: str, *, policy_key: str = "") -> None:
        super().__init__(sentence)
        self.policy_key = policy_key


def public_reason(exc: BaseException, reference: str) -> str:
    if isinstance(exc, SiteRefusal):
        return f"refused by the site's policy: {exc.args[0]} (site reference {reference})"
    return f"{type(exc).__name__} at the site (site reference {reference}; details stay in the site's log)"


def write_site_error(context: Context, reference: str, exc: BaseException, asked: str = "a message") -> None:
    """The full error, for the site's own operators only; a policy refusal is routine, and one
    line says what was asked and which policy key refused it."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if isinstance(exc, SiteRefusal):
        key = f" (policy key {exc.policy_key})" if exc.policy_key else ""
        line = f"refused {asked}: {exc.args[0]}{key} [reference {reference}]"
        log.warning("%s", line)
        text = f"{stamp} {line}\n"
    else:
        log.error("site reference %s: %s", reference, exc, exc_info=exc)
        text = f"{stamp} reference {reference}\n" + "".join(traceback.format_exception(exc)) + "\n"
    state_dir = context.node_config.get(STATE_DIR_KEY)
    if not state_dir:
        return
    path = Path(str(state_dir)) / "errors.log"
    try:  # the error reply must leave whatever happens here: a failure to log is logged, not raised
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, text.encode())
        finally:
            os.close(descriptor)
    except OSError as failure:
        log.error("site reference %s: could not write errors.log (%s)", reference, failure)


def errors_stay_at_the_site(msg: Message, context: Context, call_next) -> Message:
    """Flower mod: any exception below becomes an error reply that carries no site data."""
    try:
        return call_next(msg, context)
    except Exception as exc:  # noqa: BLE001 - every error leaves through here
        reference = secrets.token_hex(6)
        asked = f"{msg.metadata.message_type} of Flower run {msg.metadata.run_id}"
        write_site_error(context, reference, exc, asked)
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=public_reason(exc, reference)), reply_to=msg
        )
