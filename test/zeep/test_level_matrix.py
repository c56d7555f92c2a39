"""Every operation at every security level (gemILF_PS 4.1.1) with zeep.

One konnektord per level; each calls all operations of EventService (7),
CardService (6), CardTerminalService (RequestCard, EjectCard),
CertificateService (3) and AuthSignatureService (ExternalAuthenticate)
with the credentials of that level's client system, every request and
response validated against the service's XSD (Konnektor.call_proxy):

  1  plain HTTP ([soap] plain_listen)       CS1, auth = none
  2  TLS, server authentication             CS1, auth = none
  3  TLS + HTTP Basic                       CS-BASIC, auth = basic (hash from
                                            konnektord --hash-password)
  4  TLS + client certificate               CS-CERT, auth = certificate (a
                                            certificate from konnektord
                                            --export-client-cert, SIGHUP)

Every konnektord has the same practice: Mandant1 with CS1, CS-BASIC and
CS-BASIC2 (basic, other user and password), CS-CERT (issued certificate)
and CS-CERT2 (certificate = path, a self-signed certificate of the test).
Before each call succeeds, the same call (same arguments) made with
missing or foreign credentials must be refused with gematik error 4204 —
HTTP 401 with WWW-Authenticate: Basic where a Basic client system lacks
valid credentials — and must change nothing (a refused VerifyPin asks for
no PIN, a refused EjectCard ejects nothing, a refused Subscribe subscribes
nothing). test_foreign_credentials adds the cross checks: the credentials
of one client system never authenticate another.
"""
import base64
import hashlib
import os
import shutil
import tempfile
import threading
import time

import requests
from lxml import etree

from konn import (CARDS, PRUEFKARTE_KVNR, SLOW, SMCB_ICCSN, GematikFault, Konnektor, KonnektorTestCase,
                  free_port, hash_password, openssl, wait_for)
from test_certificate_service import pem
from test_event_service import CetpReceiver

ECDSA = "urn:bsi:tr:03111:ecdsa"
BASIC = {"CS-BASIC": ("pvs", "Praxis-Passwort-2026!Ab"),
         "CS-BASIC2": ("pvs-zwei", "Zweites#PVS-Kennwort-42")}
WRONG_PASSWORD = "Praxis-Passwort-2026!Ac"
CLIENT_SYSTEMS = ("CS1", "CS-BASIC", "CS-BASIC2", "CS-CERT", "CS-CERT2")

# every operation the matrix must have called successfully, per level
OPERATIONS = {
    "EventService": {"GetCardTerminals", "GetCards", "GetResourceInformation", "Subscribe", "Unsubscribe",
                     "GetSubscription", "RenewSubscriptions"},
    "CardService": {"VerifyPin", "ChangePin", "UnblockPin", "GetPinStatus", "EnablePin", "DisablePin"},
    "CardTerminalService": {"RequestCard", "EjectCard"},
    "CertificateService": {"ReadCardCertificate", "VerifyCertificate", "CheckCertificateExpiration"},
    "AuthSignatureService": {"ExternalAuthenticate"},
}


def self_signed(d, name):
    """A self-signed P-256 client certificate of a PVS (not from the test
    PKI): (cert, key) paths."""
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    rc, _, err = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", key, "-out", cert, "-subj", "/O=Test-PVS/CN=" + name, "-days", "30")
    assert rc == 0, err
    return cert, key


class _LevelMatrix:
    """The matrix for one level; subclasses (with KonnektorTestCase) set
    LEVEL and CS and make the callers in make_callers()."""

    LEVEL = None
    CS = None               # the client system whose credentials this level uses
    PLAIN = False           # [soap] plain_listen

    @classmethod
    def setUpClass(cls):
        cls.k = None
        cls.dir = tempfile.mkdtemp(prefix="konnektor-levels.")
        try:
            cls.own_cert = self_signed(cls.dir, "cs-cert2")
            cls.plain = "127.0.0.1:%d" % free_port() if cls.PLAIN else None
            cls.k = Konnektor.start(cls.overrides())
            cls.make_callers()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.k:
                k, cls.k = cls.k, None
                k.stop()
        finally:
            shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def overrides(cls):
        o = {
            'mandant "Mandant1"': {"clientsystems": ", ".join(CLIENT_SYSTEMS)},
            'clientsystem "CS-CERT"': {"name": "PVS mit ausgestelltem Zertifikat", "auth": "certificate"},
            'clientsystem "CS-CERT2"': {"name": "PVS mit eigenem Zertifikat", "auth": "certificate",
                                        "certificate": cls.own_cert[0]},
        }
        for cs, (user, pw) in BASIC.items():
            o['clientsystem "%s"' % cs] = {"name": "PVS mit HTTP Basic", "auth": "basic", "username": user,
                                           "password_hash": hash_password(pw)}
        if cls.plain:
            o["soap"] = {"plain_listen": cls.plain}
        return o

    # ---- callers ---------------------------------------------------------------------

    @classmethod
    def basic(cls, cs, password=None, plain=None):
        user, pw = BASIC[cs]
        return cls.k.caller(cls.k.new_session(auth=(user, password or pw)), plain=plain)

    @classmethod
    def make_callers(cls):
        """cls.good: the level's caller; cls.bad: [(what, caller, Context
        client system, basic challenge expected)], each refused with 4204."""
        raise NotImplementedError

    def ctx(self, cs=None):
        return self.k.context(clientsystem=cs or self.CS)

    # ---- the checks --------------------------------------------------------------------

    def assertRefused(self, what, caller, cs, challenge, service, operation, args):
        """caller's call naming cs in the Context is refused: 4204 in a
        schema-valid fault, 401 + WWW-Authenticate: Basic exactly for a
        Basic client system without valid credentials."""
        args = dict(args, Context=self.ctx(cs))
        with self.assertRaises(GematikFault, msg="%s: %s.%s was not refused" % (what, service, operation)) as cm:
            caller.call(service, operation, **args)
        f = cm.exception
        self.assertEqual(f.code, 4204, "%s: %s" % (what, f))
        challenge_header = f.headers.get("WWW-Authenticate", "")
        if challenge:
            self.assertEqual(f.http_status, 401, "%s: %s" % (what, f))
            self.assertRegex(challenge_header, r"^Basic\b", what)
        else:
            self.assertNotEqual(f.http_status, 401, "%s: %s" % (what, f))
            self.assertEqual(challenge_header, "", what)

    def op(self, service, operation, pin=None, pin_optional=False, **args):
        """The same call first with each of the refused credentials, then
        with the level's: returns the result (Status OK checked)."""
        for what, caller, cs, challenge in self.bad:
            self.assertRefused(what, caller, cs, challenge, service, operation, args)
        args["Context"] = self.ctx()
        if pin is None:
            r = self.good.call(service, operation, **args)
        else:
            r = self.good.call_with_pin("KT1", pin, service, operation, optional=pin_optional, **args)
        # Unsubscribe and EjectCard answer with CONN:Status alone, which zeep unwraps
        status = r if service in ("EventService", "CardTerminalService") and operation in (
            "Unsubscribe", "EjectCard") else r.Status
        self.assertEqual(status.Result, "OK", "%s.%s" % (service, operation))
        self.called.setdefault(service, set()).add(operation)
        return r

    def request_card_while_inserting(self):
        """RequestCard for KT1 slot 1 while the eGK goes in."""
        args = dict(Slot={"CtId": "KT1", "SlotId": 1}, CardType="EGK", DisplayMsg="Bitte eGK stecken")
        for what, caller, cs, challenge in self.bad:
            self.assertRefused(what, caller, cs, challenge, "CardTerminalService", "RequestCard",
                               dict(args, TimeOut=1))
        box = {}

        def run():
            try:
                box["r"] = self.op("CardTerminalService", "RequestCard", TimeOut=20, **args)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                box["e"] = e
        save, self.bad = self.bad, []   # refused above, with a short TimeOut
        t = threading.Thread(target=run)
        t.start()
        try:
            time.sleep(0.2 * SLOW)
            self.k.kt_ctl("KT1", "insert", 1, os.path.join(CARDS, "egk-pruefkarte.card"))
            t.join(30 * SLOW)
        finally:
            self.bad = save
        if "e" in box:
            raise box["e"]
        r = box["r"]
        self.assertFalse(r.AlreadyInserted)
        self.assertEqual((r.Card.CardType, r.Card.Kvnr), ("EGK", PRUEFKARTE_KVNR))
        return r.Card.CardHandle

    def verify_signature(self, cert_der, digest, sig):
        with tempfile.TemporaryDirectory(dir=self.dir) as d:
            paths = {n: os.path.join(d, n) for n in ("cert.pem", "pub.pem", "digest", "sig")}
            for n, data in (("cert.pem", pem(cert_der).encode()), ("digest", digest), ("sig", sig)):
                with open(paths[n], "wb") as f:
                    f.write(data)
            rc, _, err = openssl("x509", "-in", paths["cert.pem"], "-pubkey", "-noout", "-out", paths["pub.pem"])
            self.assertEqual(rc, 0, err)
            rc, out, err = openssl("pkeyutl", "-verify", "-pubin", "-inkey", paths["pub.pem"], "-in", paths["digest"],
                                   "-sigfile", paths["sig"], "-pkeyopt", "digest:sha256")
            self.assertEqual(rc, 0, "ExternalAuthenticate: signature does not verify with C.AUT: %s%s" % (out, err))

    # ---- the tests ---------------------------------------------------------------------

    def test_every_operation(self):
        self.called = {}
        smcb = self.k.smcb().CardHandle     # recognised (through CS1, level 2)
        rx = CetpReceiver()
        egk = None
        try:
            # EventService
            r = self.op("EventService", "GetCardTerminals")
            self.assertEqual([ct.CtId for ct in r.CardTerminals.CardTerminal], ["KT1"])
            r = self.op("EventService", "GetCards")
            self.assertIn(SMCB_ICCSN, [c.Iccsn for c in r.Cards.Card])
            r = self.op("EventService", "GetResourceInformation", CtId="KT1", SlotId=4)
            self.assertEqual(r.Card.CardHandle, smcb)
            r = self.op("EventService", "Subscribe", Subscription={"EventTo": rx.event_to, "Topic": "CARD"})
            sid = r.SubscriptionID
            # the refused Subscribe calls subscribed nothing
            r = self.op("EventService", "GetSubscription", **{"mandant-wide": True})
            self.assertEqual([s.SubscriptionID for s in r.Subscriptions.Subscription], [sid])
            r = self.op("EventService", "RenewSubscriptions", SubscriptionID=[sid])
            self.assertEqual([x.SubscriptionID for x in r.SubscribeRenewals.SubscriptionRenewal], [sid])

            # CardTerminalService.RequestCard: the eGK, announced by CETP
            egk = self.request_card_while_inserting()
            ev = rx.wait_topic("CARD/INSERTED")
            self.assertEqual(rx.params(ev).get("CardHandle"), egk)

            # CardService on the SMC-B, then certificates and the signature
            r = self.op("CardService", "GetPinStatus", CardHandle=smcb, PinTyp="PIN.SMC")
            self.assertEqual((r.PinStatus, r.LeftTries), ("VERIFIABLE", 3))  # no refused call asked for a PIN
            r = self.op("CardService", "VerifyPin", pin="123456", CardHandle=smcb, PinTyp="PIN.SMC")
            self.assertEqual(r.PinResult, "OK")
            r = self.op("CertificateService", "ReadCardCertificate", CardHandle=smcb, Crypt="ECC",
                        CertRefList={"CertRef": ["C.AUT"]})
            cert = r.X509DataInfoList.X509DataInfo[0].X509Data.X509Certificate
            r = self.op("CertificateService", "VerifyCertificate", X509Certificate=cert)
            self.assertEqual(r.VerificationStatus.VerificationResult, "VALID")
            r = self.op("CertificateService", "CheckCertificateExpiration", CardHandle=smcb)
            self.assertIn(SMCB_ICCSN, [e.ICCSN for e in r.CertificateExpiration])
            digest = hashlib.sha256(b"Challenge Sicherheitsstufe %d" % self.LEVEL).digest()
            r = self.op("AuthSignatureService", "ExternalAuthenticate", CardHandle=smcb,
                        OptionalInputs={"SignatureType": ECDSA},
                        BinaryString={"Base64Data": {"_value_1": digest, "MimeType": "application/octet-stream"}})
            self.verify_signature(cert, digest, r.SignatureObject.Base64Signature._value_1)

            # CardService on the eGK: PIN.CH 123456, PUK 12345678
            r = self.op("CardService", "ChangePin", pin=["123456", "654321"], CardHandle=egk, PinTyp="PIN.CH")
            self.assertEqual(r.PinResult, "OK")
            r = self.op("CardService", "DisablePin", pin="654321", pin_optional=True, CardHandle=egk,
                        PinTyp="MRPIN.NFD")
            self.assertEqual(r.PinResult, "OK")
            r = self.op("CardService", "GetPinStatus", CardHandle=egk, PinTyp="MRPIN.NFD")
            self.assertEqual(r.PinStatus, "DISABLED")
            r = self.op("CardService", "EnablePin", pin="654321", pin_optional=True, CardHandle=egk,
                        PinTyp="MRPIN.NFD")
            self.assertEqual(r.PinResult, "OK")
            r = self.op("CardService", "GetPinStatus", CardHandle=egk, PinTyp="MRPIN.NFD")
            self.assertNotEqual(r.PinStatus, "DISABLED")
            # PUK and a new PIN (back to 123456) typed on the pad
            r = self.op("CardService", "UnblockPin", pin=["12345678", "123456"], CardHandle=egk, PinTyp="PIN.CH",
                        SetNewPin=True)
            self.assertEqual(r.PinResult, "OK")

            # CardTerminalService.EjectCard: refused calls ejected nothing
            self.op("CardTerminalService", "EjectCard", CardHandle=egk, DisplayMsg="Bitte Karte entnehmen",
                    TimeOut=5000)
            self.k.wait_card("KT1", 1, present=False)
            egk = None
            rx.wait_topic("CARD/REMOVED")

            self.op("EventService", "Unsubscribe", SubscriptionID=sid)
            self.assertEqual(rx.errors, [])
        finally:
            rx.close()
            if egk:
                self.k.kt_ctl("KT1", "remove", 1, check=False)
        self.assertEqual(self.called, OPERATIONS)


class Level1PlainHttp(_LevelMatrix, KonnektorTestCase):
    """Level 1: plain HTTP at [soap] plain_listen, CS1 (auth = none). Basic
    and certificate client systems are refused there even with their
    right credentials (no password in clear text, no certificate)."""

    LEVEL = 1
    CS = "CS1"
    PLAIN = True

    @classmethod
    def make_callers(cls):
        cls.good = cls.k.caller(plain=cls.plain)
        cls.bad = [
            ("CS-BASIC with its right password over plain HTTP", cls.basic("CS-BASIC", plain=cls.plain), "CS-BASIC",
             False),
            ("CS-CERT over plain HTTP", cls.k.caller(plain=cls.plain), "CS-CERT", False),
        ]

    def test_foreign_credentials(self):
        # the level-1 client system needs nothing but its id, also over TLS
        r = self.k.caller().call("EventService", "GetCards", Context=self.ctx())
        self.assertEqual(r.Status.Result, "OK")
        # the plain listener is plain HTTP: a TLS client gets no answer there
        with self.assertRaises(requests.exceptions.SSLError):
            self.k.new_session().get("https://%s/connector.sds" % self.plain, timeout=10)


class Level2ServerAuthentication(_LevelMatrix, KonnektorTestCase):
    """Level 2: TLS with server authentication, CS1 (auth = none). The
    same connection (no credentials) cannot speak for a Basic or
    certificate client system."""

    LEVEL = 2
    CS = "CS1"

    @classmethod
    def make_callers(cls):
        cls.good = cls.k.caller()
        cls.bad = [
            ("CS-BASIC without credentials", cls.good, "CS-BASIC", True),
            ("CS-CERT without a certificate", cls.good, "CS-CERT", False),
        ]

    def test_foreign_credentials(self):
        # auth = none: the id alone; credentials of other client systems
        # neither help nor hurt
        for caller in (self.basic("CS-BASIC"), self.k.caller(self.k.new_session(cert=self.own_cert))):
            r = caller.call("EventService", "GetCards", Context=self.ctx())
            self.assertEqual(r.Status.Result, "OK")


class Level3HttpBasic(_LevelMatrix, KonnektorTestCase):
    """Level 3: TLS + HTTP Basic, CS-BASIC (password hashed by konnektord
    --hash-password)."""

    LEVEL = 3
    CS = "CS-BASIC"

    @classmethod
    def make_callers(cls):
        cls.good = cls.basic("CS-BASIC")
        cls.bad = [
            ("no Authorization header", cls.k.caller(), "CS-BASIC", True),
            ("the user and password of CS-BASIC2", cls.basic("CS-BASIC2"), "CS-BASIC", True),
            ("the client certificate of CS-CERT2", cls.k.caller(cls.k.new_session(cert=cls.own_cert)), "CS-BASIC",
             True),
        ]

    def test_foreign_credentials(self):
        get_cards = lambda caller, cs: caller.call("EventService", "GetCards", Context=self.ctx(cs))  # noqa: E731
        # CS-BASIC2's own credentials work for it, and not CS-BASIC's
        self.assertEqual(get_cards(self.basic("CS-BASIC2"), "CS-BASIC2").Status.Result, "OK")
        self.assertRefused("CS-BASIC's credentials for CS-BASIC2", self.good, "CS-BASIC2", True, "EventService",
                           "GetCards", {})
        # a wrong password (one scrypt run), a malformed header
        self.assertRefused("a wrong password", self.basic("CS-BASIC", WRONG_PASSWORD), "CS-BASIC", True,
                           "EventService", "GetCards", {})
        s = self.k.new_session()
        s.headers["Authorization"] = "Basic " + base64.b64encode(b"pvs").decode()   # no colon
        self.assertRefused("Basic without a colon", self.k.caller(s), "CS-BASIC", True, "EventService", "GetCards",
                           {})
        # Basic credentials are no client certificate
        self.assertRefused("CS-BASIC's credentials for CS-CERT", self.good, "CS-CERT", False, "EventService",
                           "GetCards", {})
        # the challenge: a client that only sends credentials when asked
        # (requests' HTTPBasicAuth does so preemptively; the raw exchange here)
        proxy = self.good.client("EventService")
        body = etree.tostring(proxy.zeep_client.create_message(proxy, "GetCards", Context=self.ctx()))
        r = self.k.new_session().post(self.k.endpoint("EventService"), data=body,
                                      headers={"Content-Type": "text/xml; charset=UTF-8",
                                               "SOAPAction": '"http://ws.gematik.de/conn/EventService/v7.2#GetCards"'},
                                      timeout=10)
        self.assertEqual(r.status_code, 401)
        self.assertRegex(r.headers.get("WWW-Authenticate", ""), r'^Basic realm="[^"]+"')


class Level4ClientCertificate(_LevelMatrix, KonnektorTestCase):
    """Level 4: TLS + client certificate, CS-CERT with the certificate
    konnektord --export-client-cert issued for it (picked up with SIGHUP);
    CS-CERT2 with its own self-signed certificate (certificate = path)."""

    LEVEL = 4
    CS = "CS-CERT"

    @classmethod
    def make_callers(cls):
        cls.issued = cls.k.export_client_cert("CS-CERT")
        cls.good = cls.k.caller(cls.k.new_session(cert=cls.issued))

        def registered():
            try:
                return cls.good.call("EventService", "GetCards", Context=cls.k.context(clientsystem="CS-CERT"))
            except GematikFault as e:
                if e.code != 4204:
                    raise
                return None
        wait_for(registered, 10, "the issued certificate of CS-CERT after SIGHUP")
        cls.bad = [
            ("no client certificate", cls.k.caller(), "CS-CERT", False),
            ("the certificate of CS-CERT2", cls.k.caller(cls.k.new_session(cert=cls.own_cert)), "CS-CERT", False),
            ("the Basic credentials of CS-BASIC", cls.basic("CS-BASIC"), "CS-CERT", False),
        ]

    def test_foreign_credentials(self):
        # CS-CERT2's configured certificate works for it, CS-CERT's does not
        r = self.k.caller(self.k.new_session(cert=self.own_cert)).call("EventService", "GetCards",
                                                                        Context=self.ctx("CS-CERT2"))
        self.assertEqual(r.Status.Result, "OK")
        self.assertRefused("CS-CERT's certificate for CS-CERT2", self.good, "CS-CERT2", False, "EventService",
                           "GetCards", {})
        # a certificate is no Basic credential
        self.assertRefused("CS-CERT's certificate for CS-BASIC", self.good, "CS-BASIC", True, "EventService",
                           "GetCards", {})
        # the issued certificate: from the Konnektor's component CA, for CS-CERT
        rc, text, err = openssl("x509", "-in", self.issued[0], "-noout", "-subject", "-issuer")
        self.assertEqual(rc, 0, err)
        self.assertIn("CS-CERT", text)
