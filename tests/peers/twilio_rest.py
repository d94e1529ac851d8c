#!/usr/bin/env python3
"""Twilio's own Python library (PyPI `twilio`) against the Dialtone server's REST API.

Usage: twilio_rest.py BASE_URL ACCOUNT_SID AUTH_TOKEN CALL_SID
The API domain's base URL is set to the Dialtone server; then it lists calls (one per
page, so that the paging links are followed), sends a user-defined message to the call
CALL_SID, and fetches a call that does not exist. Prints one JSON object.
"""
import json
import sys

from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

base, account_sid, auth_token, call_sid = sys.argv[1:5]
client = Client(account_sid, auth_token)
client.api.base_url = base

out = {}
calls = client.calls.list(page_size=1, limit=20)
out["calls"] = [
    {
        "sid": c.sid,
        "parent_call_sid": c.parent_call_sid,
        "status": c.status,
        "direction": c.direction,
        "from": getattr(c, "from_", None) or getattr(c, "_from", None),
        "to": c.to,
        "start_time": c.start_time.isoformat() if hasattr(c.start_time, "isoformat") else repr(c.start_time),
        "uri": c.uri,
    }
    for c in calls
]
one = client.calls(call_sid).fetch()
out["fetched"] = {"sid": one.sid, "status": one.status, "date_created": one.date_created.isoformat()}
message = client.calls(call_sid).user_defined_messages.create(content=json.dumps({"from": "twilio-python"}))
out["message"] = {
    "sid": message.sid,
    "call_sid": message.call_sid,
    "account_sid": message.account_sid,
    "date_created": message.date_created.isoformat() if hasattr(message.date_created, "isoformat") else repr(message.date_created),
}
try:
    client.calls("CA" + "0" * 32).fetch()
    out["missing"] = None
except TwilioRestException as e:
    out["missing"] = {"status": e.status, "code": e.code, "msg": e.msg}
try:
    client.calls(call_sid).user_defined_messages.create(content="not json")
    out["bad_message"] = None
except TwilioRestException as e:
    out["bad_message"] = {"status": e.status, "code": e.code}
print(json.dumps(out), flush=True)
