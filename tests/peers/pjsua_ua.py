"""A pjsua2 (PJSIP) user agent for the signaling interop tests.

It registers USER with the registrar at REGISTRAR (host:port) over TRANSPORT, then
either calls TARGET (mode `call`) or answers the first incoming call (mode `answer`).
It plays PLAY (a WAV file) into the call with PCMU (or PJ_CODEC) and SDES-SRTP (mandatory), records
what it hears into RECORD, and hangs up HOLD seconds after media is active (mode
`call`) or waits for the other side to hang up (mode `answer`). One line per event
on stdout: `listening <host:port>`, `registered`, `incoming <From>`, `confirmed`,
`media-active`, `disconnected <code>`, `timeout`.

PJ_ADDR (default 127.0.0.1) is the address it binds and advertises for SIP and
media, and PJ_CODEC (default PCMU/8000) the one codec it enables.

REGISTRAR `direct:host:port` skips registration and sends requests through that
address (a trunk); `direct:-` has no server at all (a peer a trunk calls). With
PJ_AUTH_USER and PJ_AUTH_PASS set, pjsua answers digest challenges with them.

usage: pjsua_ua.py MODE TRANSPORT REGISTRAR USER TARGET PLAY RECORD HOLD TIMEOUT
  MODE       call | answer
  TRANSPORT  udp | tcp | tls
"""

import sys
import time

import pjsua2 as pj

mode, transport, registrar, user, target, play, record, hold, timeout = sys.argv[1:10]
hold, timeout = float(hold), float(timeout)

state = {"done": False, "media_at": None, "call": None}


def say(line):
    print(line, flush=True)


class Call(pj.Call):
    def __init__(self, acc, call_id=pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.player = None
        self.recorder = None

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            say("confirmed")
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            # Finish the recording now (the WAV header is written when it closes).
            self.player = None
            self.recorder = None
            state["done"] = True
            say(f"disconnected {info.lastStatusCode}")

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for i, mi in enumerate(info.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                if self.player is not None:
                    continue
                media = self.getAudioMedia(i)
                self.player = pj.AudioMediaPlayer()
                self.player.createPlayer(play, 0)
                self.player.startTransmit(media)
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(record)
                media.startTransmit(self.recorder)
                state["media_at"] = time.time()
                say("media-active")


class Account(pj.Account):
    def onRegState(self, prm):
        if prm.code == 200 and self.getInfo().regIsActive:
            say("registered")

    def onIncomingCall(self, prm):
        call = Call(self, prm.callId)
        state["call"] = call
        say(f"incoming {call.getInfo().remoteUri}")
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)


ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
import os

cfg.logConfig.level = int(os.environ.get("PJ_LOG", "1"))
cfg.logConfig.consoleLevel = int(os.environ.get("PJ_LOG", "1"))
cfg.medConfig.clockRate = 8000
cfg.medConfig.sndClockRate = 8000
cfg.medConfig.noVad = True
cfg.medConfig.ecTailLen = 0
cfg.uaConfig.maxCalls = 2
ep.libInit(cfg)
tcfg = pj.TransportConfig()
tcfg.port = 0
addr = os.environ.get("PJ_ADDR", "127.0.0.1")
tcfg.boundAddress = addr
tcfg.publicAddress = addr
if transport == "tls":
    tcfg.tlsConfig.verifyServer = False
    tcfg.tlsConfig.certFile = os.environ.get("PJ_TLS_CERT", "")
    tcfg.tlsConfig.privKeyFile = os.environ.get("PJ_TLS_KEY", "")
kind = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}[transport]
tid = ep.transportCreate(kind, tcfg)
say(f"listening {ep.transportGetInfo(tid).localName}")
ep.libStart()
ep.audDevManager().setNullDev()
for c in ep.codecEnum2():
    ep.codecSetPriority(c.codecId, 255 if c.codecId.startswith(os.environ.get("PJ_CODEC", "PCMU/8000")) else 0)

param = "" if transport == "udp" else f";transport={transport}"
acfg = pj.AccountConfig()
acfg.idUri = f"sip:{user}@{addr}"
direct = registrar.startswith("direct:")
if direct:
    # No registration: call straight to a server listening at REGISTRAR (a trunk).
    registrar = registrar[len("direct:"):]
else:
    acfg.regConfig.registrarUri = f"sip:{registrar}{param}"
if registrar != "-":
    acfg.sipConfig.proxies.append(f"sip:{registrar}{param};lr")
if os.environ.get("PJ_AUTH_USER"):
    acfg.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", os.environ["PJ_AUTH_USER"], 0, os.environ.get("PJ_AUTH_PASS", ""))
    )
acfg.mediaConfig.transportConfig.boundAddress = addr
acfg.mediaConfig.transportConfig.publicAddress = addr
acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
acfg.mediaConfig.srtpSecureSignaling = 0
acfg.natConfig.contactRewriteUse = 0
acfg.natConfig.viaRewriteUse = 0
acfg.natConfig.sdpNatRewriteUse = 0
acc = Account()
acc.create(acfg)

deadline = time.time() + timeout
while not direct and not acc.getInfo().regIsActive and time.time() < deadline:
    ep.libHandleEvents(10)
if direct:
    say("registered")

if mode == "call":
    # Wait until the test says the callee is registered (a line on stdin).
    sys.stdin.readline()
    call = Call(acc)
    state["call"] = call
    call.makeCall(target, pj.CallOpParam(True))

while not state["done"] and time.time() < deadline:
    ep.libHandleEvents(10)
    if mode == "call" and state["media_at"] and time.time() - state["media_at"] > hold:
        state["media_at"] = None
        state["call"].hangup(pj.CallOpParam())
if not state["done"]:
    say("timeout")
    if state["call"] is not None:
        state["call"].player = None
        state["call"].recorder = None
# Leave without running pjsua2's destructors: destroying a Call object after its call
# ended trips an assertion in PJSUA.
sys.stdout.flush()
os._exit(0 if state["done"] else 1)
