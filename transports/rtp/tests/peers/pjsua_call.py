"""A pjsua2 (PJSIP) peer for the media interop tests.

It calls TARGET from 127.0.0.1, plays PLAY (a WAV file) into the call and records what
it hears into RECORD, with only CODEC enabled and SDES-SRTP as SRTP says, then waits
for the other side to hang up (or TIMEOUT seconds). It prints one line per event:
`media-active`, `disconnected <code>`, `timeout`.

usage: pjsua_call.py TARGET PLAY RECORD CODEC SRTP CLOCK_RATE TIMEOUT
  CODEC       a pjsua codec id prefix, e.g. PCMU/8000 or G722/16000
  SRTP        mandatory | optional | disabled
  CLOCK_RATE  the conference bridge rate (the recording's rate)
"""

import sys
import time

import pjsua2 as pj

target, play, record, codec, srtp, clock, timeout = sys.argv[1:8]
clock, timeout = int(clock), float(timeout)

state = {"done": False, "code": None}


class Call(pj.Call):
    def __init__(self, acc):
        super().__init__(acc)
        self.player = None
        self.recorder = None

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            state["done"] = True
            state["code"] = info.lastStatusCode
            print(f"disconnected {info.lastStatusCode}", flush=True)

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for i, mi in enumerate(info.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                media = self.getAudioMedia(i)
                self.player = pj.AudioMediaPlayer()
                self.player.createPlayer(play, pj.PJMEDIA_FILE_NO_LOOP)
                self.player.startTransmit(media)
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(record)
                media.startTransmit(self.recorder)
                print("media-active", flush=True)


ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.logConfig.level = 1
cfg.logConfig.consoleLevel = 1
cfg.medConfig.clockRate = clock
cfg.medConfig.sndClockRate = clock
# measure the codec and the network, not PJSIP's own processing
cfg.medConfig.noVad = True
cfg.medConfig.ecTailLen = 0
cfg.uaConfig.maxCalls = 1
ep.libInit(cfg)
tcfg = pj.TransportConfig()
tcfg.port = 0
tcfg.boundAddress = "127.0.0.1"
tcfg.publicAddress = "127.0.0.1"
ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
ep.libStart()
ep.audDevManager().setNullDev()

for c in ep.codecEnum2():
    ep.codecSetPriority(c.codecId, 255 if c.codecId.startswith(codec) else 0)

acfg = pj.AccountConfig()
acfg.idUri = "sip:pjsua@127.0.0.1"
acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
acfg.mediaConfig.srtpUse = {
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "disabled": pj.PJMEDIA_SRTP_DISABLED,
}[srtp]
acfg.mediaConfig.srtpSecureSignaling = 0
acc = pj.Account()
acc.create(acfg)

call = Call(acc)
call.makeCall(target, pj.CallOpParam(True))
deadline = time.time() + timeout
while not state["done"] and time.time() < deadline:
    ep.libHandleEvents(10)
if not state["done"]:
    print("timeout", flush=True)
# release the media objects before the library goes
call.player = None
call.recorder = None
del call
ep.libDestroy()
sys.exit(0 if state["done"] else 1)
