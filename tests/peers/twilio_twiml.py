#!/usr/bin/env python3
"""TwiML documents from Twilio's own builder (PyPI `twilio`), one per verb and noun the
Dialtone server supports; prints them as one JSON object, name to document."""
import json

from twilio.twiml.voice_response import Dial, VoiceResponse

docs = {}

r = VoiceResponse()
d = Dial(caller_id="client:alice", timeout=20, action="/after", method="GET", answer_on_bridge=True)
d.client("bob")
r.append(d)
docs["dial_client"] = str(r)

r = VoiceResponse()
d = Dial()
c = d.client()
c.identity("carol")
c.parameter(name="topic", value="billing")
c.parameter(name="tier", value="gold")
r.append(d)
docs["dial_identity_parameters"] = str(r)

r = VoiceResponse()
d = Dial()
d.number("+15551234567")
d.sip("sip:desk@pbx.example.com")
r.append(d)
docs["dial_number_sip"] = str(r)

r = VoiceResponse()
r.reject(reason="busy")
docs["reject_busy"] = str(r)

r = VoiceResponse()
r.reject()
docs["reject"] = str(r)

r = VoiceResponse()
r.pause(length=2)
r.hangup()
docs["pause_hangup"] = str(r)

print(json.dumps(docs), flush=True)
