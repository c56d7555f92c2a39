"""Harness for the zeep SOAP client tests: a real konnektord, clients
generated from the official gematik WSDLs, raw responses checked against
the services' XSDs.

    k = Konnektor.start(overrides={"soap": {"services_client_auth": "required"}})
    try:
        r = k.call("EventService", "GetCards", Context=k.context())
    finally:
        k.stop()

Environment (exported by `make check`, see Makefile.am): top_srcdir,
top_builddir; the schemas are $top_srcdir/../shared/api-telematik unless
API_TELEMATIK names another tree. KONN_TEST_DEBUG=1 keeps the temp dir
and prints konnektord's log.
"""
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport

SRC = os.path.abspath(os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.path.abspath(os.environ.get("top_builddir", SRC))
API = os.path.abspath(os.environ.get("API_TELEMATIK", os.path.join(SRC, "..", "shared", "api-telematik")))
KONNEKTORD = os.path.join(BUILD, "konnektord")
KT_CTL = os.path.join(BUILD, "kt-ctl")
PKI = os.path.join(BUILD, "pki")
CA_BUNDLE = os.path.join(PKI, "ca-bundle.pem")
CARDS = os.path.join(SRC, "conf", "cards")
DEBUG = bool(os.environ.get("KONN_TEST_DEBUG"))
# konnektord built with ASan starts and answers several times slower
SLOW = 3 if os.environ.get("ASAN_OPTIONS") else 1

NS = {
    "soap": "http://schemas.xmlsoap.org/soap/envelope/",
    "GERROR": "http://ws.gematik.de/tel/error/v2.0",
    "SDS": "http://ws.gematik.de/conn/ServiceDirectory/v3.1",
    "SI": "http://ws.gematik.de/conn/ServiceInformation/v2.0",
    "PI": "http://ws.gematik.de/int/version/ProductInformation/v1.1",
}

SMCB_ICCSN = "80276883110000168650"
PRUEFKARTE_KVNR = "P100000005"


class Service:
    """One SOAP service: its WSDL, binding and the one XSD its messages
    are validated against (one compiled schema per service: CardService.xsd
    and CardService_v8_1_3.xsd share a namespace, so a combined schema set
    would silently keep only one of them)."""

    def __init__(self, name, wsdl, binding, xsd, required=False):
        self.name = name
        self.wsdl = os.path.join(API, "conn", wsdl)
        self.binding = binding
        self.xsd = os.path.join(API, "conn", xsd)
        # a required service fails instead of skipping when it answers
        # "not implemented"
        self.required = required
        self._schema = None
        self._ns = None

    @property
    def schema(self):
        if self._schema is None:
            # the xmldsig/xenc schemas carry a DOCTYPE with internal entities
            parser = etree.XMLParser(no_network=True, resolve_entities=True, load_dtd=False)
            self._schema = etree.XMLSchema(etree.parse(self.xsd, parser))
        return self._schema

    @property
    def wsdl_namespace(self):
        """The WSDL targetNamespace: the TargetNamespace connector.sds names."""
        if self._ns is None:
            self._ns = etree.parse(self.wsdl).getroot().get("targetNamespace")
        return self._ns


SERVICES = {
    s.name: s
    for s in (
        Service("EventService", "EventService.wsdl",
                "{http://ws.gematik.de/conn/EventService/WSDL/v7.2}EventServiceBinding",
                "EventService.xsd", required=True),
        Service("CardService", "CardService_v8_1_2.wsdl",
                "{http://ws.gematik.de/conn/CardService/WSDL/v8.1}CardServiceBinding",
                "CardService_v8_1_3.xsd"),
        Service("CardTerminalService", "CardTerminalService.wsdl",
                "{http://ws.gematik.de/conn/CardTerminalService/WSDL/v1.1}CardTerminalServiceBinding",
                "CardTerminalService.xsd"),
        Service("CertificateService", "CertificateService_v6_0_1.wsdl",
                "{http://ws.gematik.de/conn/CertificateService/WSDL/v6.0}CertificateServiceBinding",
                "CertificateService_v6_0_2.xsd"),
        # ExternalAuthenticate lives in the SignatureService v7.4 namespace;
        # the WSDL imports SignatureService.xsd (7.4.2), so do we
        Service("AuthSignatureService", "AuthSignatureService_v7_4_1.wsdl",
                "{http://ws.gematik.de/conn/AuthSignatureService/WSDL/v7.4}AuthSignatureServiceBinding",
                "SignatureService.xsd"),
    )
}
SDS_XSD = os.path.join(API, "conn", "ServiceDirectory.xsd")


class GematikFault(Exception):
    """A SOAP fault carrying GERROR:Error. code is the last Trace's Code
    (the one a PVS shows), codes all of them."""

    def __init__(self, service, operation, http_status, faultcode, text, codes, detail_xml):
        self.service, self.operation = service, operation
        self.http_status, self.faultcode, self.text = http_status, faultcode, text
        self.codes = codes
        self.code = codes[-1] if codes else None
        self.detail_xml = detail_xml
        self.headers = {}  # the HTTP response headers (set by Konnektor.call_proxy)
        super().__init__("%s.%s: HTTP %s %s gematik %s: %s" % (service, operation, http_status, faultcode,
                                                              codes, text))


class SchemaError(AssertionError):
    pass


class _RecordingTransport(Transport):
    """Keeps the raw bytes of the last request and response of this
    thread, so that each can be validated exactly as it went over the
    wire."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.last = threading.local()

    def post(self, address, message, headers):
        self.last.request = message
        self.last.response = None
        r = super().post(address, message, headers)
        self.last.response = r
        return r


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns something truthy; that value, or an
    AssertionError naming `what` after timeout seconds."""
    end = time.monotonic() + timeout * SLOW
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except (GematikFault, requests.RequestException) as e:
            last = e
        if time.monotonic() >= end:
            raise AssertionError("timed out waiting for %s%s" % (what, " (last: %s)" % last if last else ""))
        time.sleep(interval)


def _ini(sections):
    out = []
    for name, keys in sections.items():
        out.append("[%s]" % name)
        for k, v in keys.items():
            if v is None:
                continue
            if isinstance(v, bool):
                v = "yes" if v else "no"
            elif isinstance(v, (list, tuple)):
                v = ", ".join(v)
            out.append("%s = %s" % (k, v))
        out.append("")
    return "\n".join(out)


class Konnektor:
    """A konnektord process with a configuration of its own in a temp dir.

    The practice (as in the demo, conf/konnektor.conf): Mandant1 with CS1 and
    the workplaces AP1 (terminal KT1) and AP2 (terminal KT2, its
    Remote-PIN-KT, and KT1 as remote terminal); the SMC-B (conf/cards/smcb.card) in KT1 slot 4 is
    managed for Mandant1. Mandant2 with CS2 and AP3 exists to provoke the
    "not assigned" errors. KT1's PIN pad is interactive (kt-ctl pin), KT2
    types 123456 by itself.
    """

    def __init__(self, overrides=None, extra=""):
        self.overrides = overrides or {}
        self.extra = extra
        self.proc = None
        self.tmp = None
        self.log_path = None
        self.exit_status = None
        self._clients = {}
        self._sds = None

    # ---- configuration ------------------------------------------------------------

    def sections(self):
        self.kt_ports = {"KT1": free_port(), "KT2": free_port()}
        self.port = free_port()
        s = {
            "core": {"name": "zeeptest", "test_pki": True},
            "log": {"level": "info", "target": "stderr"},
            "ct": {"auto_pair": True},
            'emulated_terminal "KT1"': {"name": "Praxis-KT-1", "port": self.kt_ports["KT1"],
                                        "mac": "02-00-00-00-00-01", "pin": "interactive",
                                        "slot4": os.path.join(CARDS, "smcb.card")},
            'emulated_terminal "KT2"': {"name": "Praxis-KT-2", "port": self.kt_ports["KT2"],
                                        "mac": "02-00-00-00-00-02"},
            'terminal "KT1"': {"host": "127.0.0.1", "port": self.kt_ports["KT1"], "name": "Praxis-KT-1",
                               "mac": "02-00-00-00-00-01"},
            'terminal "KT2"': {"host": "127.0.0.1", "port": self.kt_ports["KT2"], "name": "Praxis-KT-2",
                               "mac": "02-00-00-00-00-02"},
            'mandant "Mandant1"': {"clientsystems": "CS1", "workplaces": "AP1, AP2", "smcb": SMCB_ICCSN},
            'mandant "Mandant2"': {"clientsystems": "CS2", "workplaces": "AP3"},
            'clientsystem "CS1"': {"name": "Demo-PVS"},
            'clientsystem "CS2"': {"name": "Other-PVS"},
            'workplace "AP1"': {"terminals": "KT1"},
            'workplace "AP2"': {"terminals": "KT2", "remote_terminals": "KT1", "remote_pin_terminal": "KT2"},
            'workplace "AP3"': {},
            "soap": {"enabled": True, "listen": "127.0.0.1:%d" % self.port, "schema_dir": API},
        }
        for sec, keys in self.overrides.items():
            if keys is None:
                s.pop(sec, None)
            else:
                s.setdefault(sec, {}).update(keys)
        return s

    # ---- life cycle ---------------------------------------------------------------

    @classmethod
    def start(cls, overrides=None, extra="", attempts=3):
        """Start konnektord with the default practice plus overrides
        ({section: {key: value}}; a value None drops the key, a section
        None the section) and extra configuration text; return when
        READY=1 came and connector.sds answers. Ports are picked free;
        a start that loses a port race is retried."""
        err = None
        for _ in range(attempts):
            k = cls(overrides, extra)
            try:
                k._start()
                return k
            except Exception as e:  # noqa: BLE001 - retried, then raised
                err = e
                k.stop(check=False)
        raise err

    def _start(self):
        self.tmp = tempfile.mkdtemp(prefix="konnektor-zeep.")
        state = os.path.join(self.tmp, "state")
        os.mkdir(state, 0o700)
        # the build's test PKI stands in for the first-start generation
        os.symlink(PKI, os.path.join(state, "pki"))
        self.state = state
        self.conf = os.path.join(self.tmp, "konnektor.conf")
        with open(self.conf, "w") as f:
            f.write(_ini(self.sections()) + "\n" + self.extra)
        notify_path = os.path.join(self.tmp, "notify")
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(notify_path)
        self.log_path = os.path.join(self.tmp, "konnektord.log")
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([KONNEKTORD, "--foreground", "--config", self.conf, "--state-dir", state],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + 20 * SLOW
        self._notify.settimeout(0.1)
        while True:
            try:
                if b"READY=1" in self._notify.recv(4096):
                    break
            except socket.timeout:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("konnektord exited with %s before READY=1:\n%s" % (self.proc.returncode,
                                                                                     self.log_tail()))
            if time.monotonic() > end:
                raise RuntimeError("konnektord sent no READY=1:\n" + self.log_tail())
        self.base = "https://127.0.0.1:%d" % self.port
        self.session = self.new_session()
        wait_for(lambda: self.session.get(self.base + "/connector.sds", timeout=5).status_code == 200, 10,
                 "connector.sds")

    def stop(self, check=True):
        """SIGTERM, wait; SIGKILL after 20 s. With check, a non-zero exit
        (a sanitizer report, a crash) raises AssertionError with the log."""
        for c in self._clients.values():
            c.transport.session.close()
        self._clients = {}
        for c in getattr(self, "_callers", []):
            c.close()
        self._callers = []
        if getattr(self, "session", None):
            self.session.close()
        status = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(20 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                status = "killed after SIGTERM timeout"
        elif self.proc:
            status = self.proc.returncode
        self.exit_status = status
        tail = self.log_tail() if self.proc else ""
        if getattr(self, "_notify", None):
            self._notify.close()
        if DEBUG and self.log_path:
            print("---- konnektord log (%s) ----\n%s" % (self.tmp, tail))
        if self.tmp and not DEBUG:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if check and self.proc and status != 0:
            raise AssertionError("konnektord did not stop cleanly (exit %s):\n%s" % (status, tail))

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def log_tail(self, lines=60):
        return "\n".join(self.log().splitlines()[-lines:])

    # ---- HTTP and SOAP clients ------------------------------------------------------

    def new_session(self, cert=None, auth=None, verify=CA_BUNDLE):
        """A requests session verifying the server against the test PKI.
        cert: (chain, key) for a client certificate; auth: (user, password)
        for HTTP Basic. The environment's CA bundle and proxies are
        ignored (trust_env)."""
        s = requests.Session()
        s.trust_env = False
        s.verify = verify
        if cert:
            s.cert = cert
        if auth:
            s.auth = auth
        return s

    def sds(self, refresh=False):
        """connector.sds, fetched over TLS and validated against
        ServiceDirectory.xsd; returns the lxml root."""
        if self._sds is None or refresh:
            r = self.session.get(self.base + "/connector.sds", timeout=10)
            assert r.status_code == 200, "GET /connector.sds: HTTP %d" % r.status_code
            root = etree.fromstring(r.content)
            schema = etree.XMLSchema(etree.parse(SDS_XSD))
            if not schema.validate(root):
                raise SchemaError("connector.sds does not validate: %s" % schema.error_log)
            self._sds = root
        return self._sds

    def endpoint(self, service):
        """The EndpointTLS that connector.sds gives for the service's WSDL
        namespace, or None if the directory does not list it."""
        svc = SERVICES[service]
        for v in self.sds().iterfind("SI:ServiceInformation/SI:Service[@Name='%s']/SI:Versions/SI:Version" % service,
                                     NS):
            if v.get("TargetNamespace") == svc.wsdl_namespace:
                ep = v.find("SI:EndpointTLS", NS)
                if ep is not None:
                    return ep.get("Location")
        return None

    def client(self, service, session=None):
        """A zeep service proxy for the service, addressed as connector.sds
        says. With a session (client certificate, HTTP Basic) a client of
        its own is made each time."""
        if session is None and service in self._clients:
            return self._clients[service]
        svc = SERVICES[service]
        address = self.endpoint(service)
        if address is None:
            raise unittest.SkipTest("%s is not announced in connector.sds" % service)
        transport = _RecordingTransport(session=session or self.new_session(), timeout=30 * SLOW,
                                        operation_timeout=60 * SLOW)
        # forbid_entities=False: the xmldsig schema declares internal entities
        client = zeep.Client(svc.wsdl, transport=transport, settings=zeep.Settings(forbid_entities=False))
        proxy = client.create_service(svc.binding, address)
        proxy.transport = transport
        proxy.zeep_client = client
        if session is None:
            self._clients[service] = proxy
        return proxy

    def call(self, service, operation, session=None, **args):
        """Call service.operation(**args) with zeep; validate the raw
        request and response bodies against the service's XSD; return
        zeep's result object. A SOAP fault raises GematikFault (validated
        too). A service not yet implemented (gematik 4001 / HTTP 501)
        skips the test, unless the service is required."""
        return self.call_proxy(self.client(service, session), service, operation, **args)

    def call_proxy(self, proxy, service, operation, **args):
        """call() through a given zeep proxy (one of client() or of a
        Caller). A GematikFault carries the HTTP response headers too
        (headers: WWW-Authenticate of a 401)."""
        svc = SERVICES[service]
        fault = None
        try:
            result = getattr(proxy, operation)(**args)
        except zeep.exceptions.Fault as f:
            fault = f
        last = proxy.transport.last
        validate_body(svc, last.request, "request %s.%s" % (service, operation))
        resp = last.response
        if fault is None:
            validate_body(svc, resp.content, "response %s.%s" % (service, operation))
            return result
        codes, text, detail = parse_fault(svc, resp.content, "%s.%s" % (service, operation))
        gf = GematikFault(service, operation, resp.status_code, fault.code, fault.message, codes, detail)
        gf.headers = resp.headers
        if not svc.required and (resp.status_code == 501 or (gf.code == 4001 and "implemented" in (text or ""))):
            raise unittest.SkipTest("%s.%s not implemented by konnektord yet (gematik %s, HTTP %d)"
                                    % (service, operation, gf.code, resp.status_code))
        raise gf

    # ---- the practice ----------------------------------------------------------------

    @staticmethod
    def context(mandant="Mandant1", clientsystem="CS1", workplace="AP1", user=None):
        ctx = {"MandantId": mandant, "ClientSystemId": clientsystem, "WorkplaceId": workplace}
        if user:
            ctx["UserId"] = user
        return ctx

    def kt_ctl(self, terminal, *words, check=True):
        sock = os.path.join(self.state, "run", "%s.sock" % terminal)
        r = subprocess.run([KT_CTL, sock] + [str(w) for w in words], capture_output=True, text=True, timeout=15)
        if check and r.returncode != 0:
            raise AssertionError("kt-ctl %s %s: exit %d: %s%s" % (terminal, " ".join(map(str, words)),
                                                                  r.returncode, r.stdout, r.stderr))
        return r

    def cards(self, **args):
        r = self.call("EventService", "GetCards", Context=self.context(), **args)
        return list(r.Cards.Card) if r.Cards is not None else []

    def wait_card(self, ct, slot, present=True, timeout=10):
        """The card in ct/slot as GetCards shows it (or None once gone)."""
        def find():
            for c in self.cards(**{"mandant-wide": True}):
                if c.CtId == ct and c.SlotId == slot:
                    return c
            return None
        if present:
            return wait_for(find, timeout, "a card in %s slot %d" % (ct, slot))
        wait_for(lambda: find() is None, timeout, "%s slot %d to be empty" % (ct, slot))
        return None

    def insert(self, ct, slot, card):
        """Put conf/cards/<card> into ct/slot with kt-ctl; return the card
        as GetCards reports it once recognised."""
        self.kt_ctl(ct, "insert", slot, os.path.join(CARDS, card))
        return self.wait_card(ct, slot)

    def remove(self, ct, slot):
        self.kt_ctl(ct, "remove", slot)
        self.wait_card(ct, slot, present=False)

    def smcb(self):
        return self.wait_card("KT1", 4)

    def enter_pin(self, terminal, digits, while_alive, timeout=15):
        """Type digits (one PIN, or a list: old and new PIN for a change)
        on the terminal's PIN pad as soon as it asks (kt-ctl pin answers
        ERR while no PIN entry is pending). Stops early when while_alive()
        turns false (the call ended without asking)."""
        end = time.monotonic() + timeout * SLOW
        for pin in [digits] if isinstance(digits, str) else digits:
            while True:
                if time.monotonic() > end or not while_alive():
                    return False
                if self.kt_ctl(terminal, "pin", pin, check=False).returncode == 0:
                    break
                time.sleep(0.05)
        return True

    def call_with_pin(self, terminal, digits, service, operation, **args):
        """call() in a thread while digits are typed at terminal (see
        enter_pin)."""
        box = {}

        def run():
            try:
                box["result"] = self.call(service, operation, **args)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                box["error"] = e
        t = threading.Thread(target=run)
        t.start()
        entered = self.enter_pin(terminal, digits, t.is_alive)
        t.join(60 * SLOW)
        if "error" in box:
            raise box["error"]
        assert entered, "%s.%s returned without asking for a PIN at %s" % (service, operation, terminal)
        return box["result"]

    # ---- client systems with credentials (security levels) ---------------------------

    def caller(self, session=None, plain=None):
        """A Caller: the calls of one client system's connection (see
        there); closed with the Konnektor."""
        c = Caller(self, session, plain)
        if not hasattr(self, "_callers"):
            self._callers = []
        self._callers.append(c)
        return c

    def export_client_cert(self, clientsystem, algo="rsa", reload=True):
        """konnektord --export-client-cert for the Clientsystem into the temp
        dir (PKCS#12 with a random password), converted to PEM for requests;
        returns (chain, key) for new_session(cert=...). The certificate is
        registered in the state store; with reload a running konnektord is
        sent SIGHUP to pick it up (the caller waits until it works)."""
        d = tempfile.mkdtemp(prefix="cert-%s." % clientsystem, dir=self.tmp)
        pwfile, p12 = os.path.join(d, "p12-password"), os.path.join(d, "client.p12")
        with open(pwfile, "w") as f:
            f.write(base64.b64encode(os.urandom(18)).decode() + "\n")
        r = subprocess.run([KONNEKTORD, "--config", self.conf, "--state-dir", self.state, "--export-client-cert",
                            clientsystem, "--out", p12, "--algo", algo, "--password-file", pwfile],
                           capture_output=True, text=True, timeout=60 * SLOW)
        if r.returncode != 0:
            raise AssertionError("konnektord --export-client-cert %s: exit %d: %s%s" % (clientsystem, r.returncode,
                                                                                      r.stdout, r.stderr))
        chain, key = os.path.join(d, "chain.pem"), os.path.join(d, "key.pem")
        pem = b""
        for what in ("-clcerts", "-cacerts"):  # the leaf first
            rc, out, err = openssl("pkcs12", "-in", p12, "-passin", "file:" + pwfile, what, "-nokeys")
            assert rc == 0, "openssl pkcs12 %s: %s" % (what, err)
            pem += out.encode()
        with open(chain, "wb") as f:
            f.write(pem)
        rc, out, err = openssl("pkcs12", "-in", p12, "-passin", "file:" + pwfile, "-nocerts", "-nodes")
        assert rc == 0, "openssl pkcs12 -nocerts: %s" % err
        with open(key, "w") as f:
            f.write(out)
        os.chmod(key, 0o600)
        if reload and self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
        return chain, key


class Caller:
    """The calls of one client system's connection: its requests session
    (no credentials, HTTP Basic, a client certificate; Konnektor.new_session)
    and, with plain = the [soap] plain_listen address, plain HTTP to the
    same paths (security level 1). One zeep client per service, made on
    first use; every call validated as Konnektor.call does.

        c = k.caller(k.new_session(auth=("pvs", password)))
        c.call("EventService", "GetCards", Context=k.context(clientsystem="CS-BASIC"))
    """

    def __init__(self, k, session=None, plain=None):
        self.k = k
        self.session = session or k.new_session()
        self.plain = plain
        self._proxies = {}

    def address(self, service):
        """The service's endpoint as connector.sds names it, moved to
        http://plain when this is a plain-HTTP caller."""
        address = self.k.endpoint(service)
        if address is None:
            raise unittest.SkipTest("%s is not announced in connector.sds" % service)
        if self.plain:
            address = re.sub(r"^https://[^/]+", "http://" + self.plain, address)
        return address

    def client(self, service):
        if service not in self._proxies:
            svc = SERVICES[service]
            transport = _RecordingTransport(session=self.session, timeout=30 * SLOW, operation_timeout=60 * SLOW)
            client = zeep.Client(svc.wsdl, transport=transport, settings=zeep.Settings(forbid_entities=False))
            proxy = client.create_service(svc.binding, self.address(service))
            proxy.transport = transport
            proxy.zeep_client = client
            self._proxies[service] = proxy
        return self._proxies[service]

    def call(self, service, operation, **args):
        return self.k.call_proxy(self.client(service), service, operation, **args)

    def last_response(self, service):
        """The requests.Response of this caller's last call of the service."""
        return self.client(service).transport.last.response

    def call_with_pin(self, terminal, digits, service, operation, optional=False, **args):
        """call() in a thread while digits are typed at the terminal's pad
        (Konnektor.enter_pin). optional: the Konnektor may answer without
        asking (a PIN already verified in this card session)."""
        box = {}

        def run():
            try:
                box["result"] = self.call(service, operation, **args)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                box["error"] = e
        t = threading.Thread(target=run)
        t.start()
        entered = self.k.enter_pin(terminal, digits, t.is_alive)
        t.join(60 * SLOW)
        if "error" in box:
            raise box["error"]
        assert entered or optional, "%s.%s returned without asking for a PIN at %s" % (service, operation, terminal)
        return box["result"]

    def close(self):
        self.session.close()
        self._proxies = {}


_password_hashes = {}


def hash_password(password):
    """konnektord --hash-password of the password (policy: 20 characters of
    all four classes), as [clientsystem] password_hash wants it; made once
    per password and process (each costs an scrypt run)."""
    if password not in _password_hashes:
        r = subprocess.run([KONNEKTORD, "--hash-password"], input=password + "\n", capture_output=True, text=True,
                           timeout=60 * SLOW)
        if r.returncode != 0:
            raise AssertionError("konnektord --hash-password: exit %d: %s" % (r.returncode, r.stderr))
        _password_hashes[password] = r.stdout.strip()
    return _password_hashes[password]


def _body_child(raw, what):
    try:
        env = etree.fromstring(raw)
    except etree.XMLSyntaxError as e:
        raise SchemaError("%s is not XML: %s" % (what, e))
    body = env.find("soap:Body", NS)
    if body is None or len(body) != 1:
        raise SchemaError("%s: no SOAP 1.1 Body with exactly one element" % what)
    return body[0]


def _validate(schema, elem, what):
    doc = etree.ElementTree(etree.fromstring(etree.tostring(elem)))
    if not schema.validate(doc):
        raise SchemaError("%s does not validate against its XSD: %s\n%s"
                          % (what, schema.error_log, etree.tostring(elem).decode()[:2000]))


def validate_body(svc, raw, what):
    _validate(svc.schema, _body_child(raw, what), what)


def parse_fault(svc, raw, what):
    """(codes, last ErrorText, detail) of a SOAP fault whose GERROR:Error
    must validate against the service's schema (it imports
    TelematikError.xsd)."""
    fault = _body_child(raw, "fault of " + what)
    if fault.tag != "{%s}Fault" % NS["soap"]:
        raise SchemaError("%s: error response without soap:Fault" % what)
    err = fault.find("detail/GERROR:Error", NS)
    if err is None:
        raise SchemaError("%s: soap:Fault without detail/GERROR:Error" % what)
    _validate(svc.schema, err, "GERROR:Error of " + what)
    codes = [int(c.text) for c in err.iterfind("GERROR:Trace/GERROR:Code", NS)]
    texts = [t.text for t in err.iterfind("GERROR:Trace/GERROR:ErrorText", NS)]
    return codes, texts[-1] if texts else None, etree.tostring(err).decode()


def der_from_b64(b):
    return b if isinstance(b, bytes) else base64.b64decode(b)


def openssl(*args, input=None):
    r = subprocess.run(["openssl"] + list(args), input=input, capture_output=True, timeout=30)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


class KonnektorTestCase(unittest.TestCase):
    """One konnektord per test class (started in setUpClass, always
    stopped in tearDownClass). Subclasses set OVERRIDES / EXTRA."""

    OVERRIDES = None
    EXTRA = ""
    k = None

    @classmethod
    def setUpClass(cls):
        cls.k = Konnektor.start(cls.OVERRIDES, cls.EXTRA)

    @classmethod
    def tearDownClass(cls):
        if cls.k:
            k, cls.k = cls.k, None
            k.stop()

    def assertFault(self, code, fn, *a, **kw):
        """fn(*a, **kw) must raise a GematikFault whose last code is code."""
        with self.assertRaises(GematikFault) as cm:
            fn(*a, **kw)
        self.assertEqual(cm.exception.code, code, str(cm.exception))
        return cm.exception

    def assertRaisesFault(self, fn, *a, **kw):
        """fn(*a, **kw) must raise a GematikFault; returns it."""
        with self.assertRaises(GematikFault) as cm:
            fn(*a, **kw)
        return cm.exception

    def call(self, service, operation, **args):
        return self.k.call(service, operation, **args)


def match(pattern, text):
    return re.search(pattern, text or "") is not None
