"""Security levels of the client-system interface (gemILF_PS 4.1.1) with
zeep: each class starts its own konnektord with [soap] overrides
(Konnektor.start(overrides=...)) and calls EventService.GetCards with
sessions made by Konnektor.new_session(cert=..., auth=...).

Level 2 (TLS, server authentication) is the default of the other test
modules. Level 4 here uses [soap] services_client_auth = required with a
certificate of the test PKI; the per-client-system settings (HTTP Basic,
client certificates of a client system) add their classes beside these.
"""
import os

import requests

from konn import PKI, KonnektorTestCase, wait_for


class Level2ServerAuthentication(KonnektorTestCase):

    def test_server_certificate_checked(self):
        # a client that trusts only the system's CAs refuses the test PKI
        s = self.k.new_session(verify=True)
        with self.assertRaises(requests.exceptions.SSLError):
            s.get(self.k.base + "/connector.sds", timeout=10)
        cards = self.k.cards()
        self.assertTrue(cards)

    def test_plain_http_on_tls_port_refused(self):
        try:
            r = self.k.new_session().get("http://127.0.0.1:%d/connector.sds" % self.k.port, timeout=10)
        except requests.exceptions.ConnectionError:
            return  # closed or answered with a TLS alert
        self.assertNotEqual(r.status_code, 200)


class Level4ClientCertificate(KonnektorTestCase):
    """connector.sds without, the services only with a client certificate
    (TIP1-A_4963: the directory may have its own level)."""

    OVERRIDES = {"soap": {"sds_client_auth": "none", "services_client_auth": "required"}}
    # any TLS client certificate that chains to [soap] client_ca (the test PKI's
    # ca-bundle.pem by default) stands in for a client system's
    CLIENT_CERT = (os.path.join(PKI, "konnektor-ct-rsa-chain.pem"), os.path.join(PKI, "private", "konnektor-ct-rsa.key"))

    def test_sds_without_certificate(self):
        sds = self.k.sds(refresh=True)
        self.assertEqual(sds.findtext("{http://ws.gematik.de/conn/ServiceDirectory/v3.1}ClientAutMandatory"),
                         "true")

    def test_service_needs_certificate(self):
        try:
            r = self.k.session.post(self.k.endpoint("EventService"), data=b"<x/>",
                                    headers={"Content-Type": "text/xml; charset=UTF-8"}, timeout=10)
        except requests.exceptions.ConnectionError:
            return  # refused in the handshake
        self.assertEqual(r.status_code, 403)

    def test_service_with_certificate(self):
        s = self.k.new_session(cert=self.CLIENT_CERT)

        def cards():
            r = self.k.call("EventService", "GetCards", session=s, Context=self.k.context())
            self.assertEqual(r.Status.Result, "OK")
            return r.Cards.Card if r.Cards is not None else None

        # the SMC-B in KT1 slot 4 may still be being recognised right after start
        self.assertTrue(wait_for(cards, 10, "the SMC-B in GetCards"))
