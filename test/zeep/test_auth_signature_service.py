"""AuthSignatureService 7.4 through zeep: ExternalAuthenticate with the
SMC-B's C.AUT key after PIN.SMC was verified at KT1; the signature is
checked with the certificate ReadCardCertificate returns. Skips while
konnektord answers "not implemented" (gematik 4001 / HTTP 501) for
ExternalAuthenticate or for the VerifyPin / ReadCardCertificate calls it
builds on."""
import hashlib
import os
import tempfile

from konn import KonnektorTestCase, openssl
from test_certificate_service import pem

ECDSA = "urn:bsi:tr:03111:ecdsa"
RSA = "urn:ietf:rfc:3447"


class AuthSignatureService(KonnektorTestCase):

    def setUp(self):
        self.h = self.k.smcb().CardHandle

    def unlock_smcb(self):
        """PIN.SMC verified (typed at KT1 unless it already is)."""
        r = self.call("CardService", "GetPinStatus", Context=self.k.context(), CardHandle=self.h, PinTyp="PIN.SMC")
        if r.PinStatus == "VERIFIED":
            return
        r = self.k.call_with_pin("KT1", "123456", "CardService", "VerifyPin", Context=self.k.context(),
                                 CardHandle=self.h, PinTyp="PIN.SMC")
        self.assertEqual(r.PinResult, "OK")

    def aut_cert(self, crypt):
        r = self.call("CertificateService", "ReadCardCertificate", CardHandle=self.h, Context=self.k.context(),
                      CertRefList={"CertRef": ["C.AUT"]}, Crypt=crypt)
        return pem(r.X509DataInfoList.X509DataInfo[0].X509Data.X509Certificate)

    def external_authenticate(self, digest, sig_type=None, **ctx):
        opt = {"OptionalInputs": {"SignatureType": sig_type}} if sig_type else {}
        return self.call("AuthSignatureService", "ExternalAuthenticate", CardHandle=self.h,
                         Context=self.k.context(**ctx),
                         BinaryString={"Base64Data": {"_value_1": digest, "MimeType": "application/octet-stream"}},
                         **opt)

    def verify(self, cert_pem, digest, sig, *pkeyopts):
        with tempfile.TemporaryDirectory() as d:
            paths = {n: os.path.join(d, n) for n in ("cert.pem", "pub.pem", "digest", "sig")}
            for n, data in (("cert.pem", cert_pem.encode()), ("digest", digest), ("sig", sig)):
                with open(paths[n], "wb") as f:
                    f.write(data)
            rc, _, err = openssl("x509", "-in", paths["cert.pem"], "-pubkey", "-noout", "-out", paths["pub.pem"])
            self.assertEqual(rc, 0, err)
            args = ["pkeyutl", "-verify", "-pubin", "-inkey", paths["pub.pem"], "-in", paths["digest"],
                    "-sigfile", paths["sig"]]
            for o in pkeyopts:
                args += ["-pkeyopt", o]
            rc, out, err = openssl(*args)
            self.assertEqual(rc, 0, "signature does not verify with C.AUT: %s%s" % (out, err))

    def test_external_authenticate_ecdsa(self):
        digest = hashlib.sha256(b"challenge of an IdP, 2024").digest()
        self.unlock_smcb()
        r = self.external_authenticate(digest, ECDSA)
        self.assertEqual(r.Status.Result, "OK")
        sig = r.SignatureObject.Base64Signature._value_1
        cert = self.aut_cert("ECC")
        # the Konnektor returns the DER ECDSA-Sig-Value (card.h: clients such
        # as the ePA ones convert it to r || s for JWS themselves)
        self.assertEqual(sig[0], 0x30, "ECDSA signature is a DER SEQUENCE { r, s }")
        self.assertEqual(sig[1], len(sig) - 2, "DER length covers the whole signature")
        self.verify(cert, digest, sig, "digest:sha256")

    def test_external_authenticate_rsa_pss(self):
        digest = hashlib.sha256(b"another challenge").digest()
        self.unlock_smcb()
        r = self.external_authenticate(digest, RSA)
        self.assertEqual(r.Status.Result, "OK")
        sig = r.SignatureObject.Base64Signature._value_1
        cert = self.aut_cert("RSA")
        # RSASSA-PSS is the default scheme (SignatureSchemes absent)
        self.verify(cert, digest, sig, "digest:sha256", "rsa_padding_mode:pss", "rsa_pss_saltlen:-2")

    def test_faults(self):
        digest = hashlib.sha256(b"x").digest()
        self.assertFault(4004, self.external_authenticate, digest, ECDSA, mandant="NoSuchMandant")
        self.h = "H-no-such-card"
        self.assertFault(4047, self.external_authenticate, digest, ECDSA)


class AuthSignatureServiceLocked(KonnektorTestCase):
    """Without PIN.SMC verified the SMC-B's AUT key is locked: 4085."""

    def test_smcb_not_unlocked(self):
        h = self.k.smcb().CardHandle
        self.assertFault(4085, self.call, "AuthSignatureService", "ExternalAuthenticate", CardHandle=h,
                         Context=self.k.context(), OptionalInputs={"SignatureType": ECDSA},
                         BinaryString={"Base64Data": {"_value_1": hashlib.sha256(b"x").digest()}})
