"""CertificateService 6.0 through zeep: ReadCardCertificate (the SMC-B's
C.AUT in RSA and ECC, chaining to the test PKI), VerifyCertificate (VALID
for the card's certificate, INVALID for a self-signed one),
CheckCertificateExpiration. Each test skips while konnektord answers
"not implemented" (gematik 4001 / HTTP 501)."""
import datetime
import os
import tempfile

from konn import CA_BUNDLE, SMCB_ICCSN, KonnektorTestCase, openssl


def pem(der):
    rc, out, err = openssl("x509", "-inform", "DER", "-outform", "PEM", input=der)
    assert rc == 0, "not an X.509 certificate: " + err
    return out


class CertificateService(KonnektorTestCase):

    def read_aut(self, crypt=None, handle=None):
        args = {"Crypt": crypt} if crypt else {}
        r = self.call("CertificateService", "ReadCardCertificate", CardHandle=handle or self.k.smcb().CardHandle,
                      Context=self.k.context(), CertRefList={"CertRef": ["C.AUT"]}, **args)
        self.assertEqual(r.Status.Result, "OK")
        infos = r.X509DataInfoList.X509DataInfo
        self.assertEqual([i.CertRef for i in infos], ["C.AUT"])
        return infos[0].X509Data

    def test_read_card_certificate(self):
        """The SMC-B's C.AUT, as RSA and as ECC: DER that chains to the test
        PKI, subject and issuer as the response names them."""
        for crypt, algo in (("RSA", "rsaEncryption"), ("ECC", "id-ecPublicKey")):
            x = self.read_aut(crypt)
            cert = pem(x.X509Certificate)
            with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
                f.write(cert)
                f.flush()
                rc, out, err = openssl("verify", "-CAfile", CA_BUNDLE, "-purpose", "any", f.name)
                self.assertEqual(rc, 0, "C.AUT (%s) does not chain to the test PKI: %s%s" % (crypt, out, err))
                rc, text, _ = openssl("x509", "-in", f.name, "-noout", "-text")
            self.assertIn(algo, text, crypt)
            self.assertTrue(x.X509SubjectName, crypt)
            self.assertTrue(x.X509IssuerSerial.X509IssuerName, crypt)
            self.assertGreater(int(x.X509IssuerSerial.X509SerialNumber), 0, crypt)
        # default Crypt is RSA (CertificateService 6.0)
        self.assertEqual(self.read_aut().X509Certificate, self.read_aut("RSA").X509Certificate)

    def test_verify_certificate(self):
        x = self.read_aut("ECC")
        r = self.call("CertificateService", "VerifyCertificate", Context=self.k.context(),
                      X509Certificate=x.X509Certificate)
        self.assertEqual(r.Status.Result, "OK")
        self.assertEqual(r.VerificationStatus.VerificationResult, "VALID")
        self.assertTrue(r.RoleList and r.RoleList.Role, "no role for an SMC-B certificate")

        # a self-signed certificate no TSL anchor knows
        with tempfile.TemporaryDirectory() as d:
            rc, _, err = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                 "-nodes", "-keyout", os.path.join(d, "k.pem"), "-out", os.path.join(d, "c.der"),
                                 "-outform", "DER", "-subj", "/CN=Not a TI certificate", "-days", "30")
            self.assertEqual(rc, 0, err)
            with open(os.path.join(d, "c.der"), "rb") as f:
                foreign = f.read()
        r = self.call("CertificateService", "VerifyCertificate", Context=self.k.context(), X509Certificate=foreign)
        self.assertEqual(r.VerificationStatus.VerificationResult, "INVALID")

    def test_check_certificate_expiration(self):
        smcb = self.k.smcb()
        r = self.call("CertificateService", "CheckCertificateExpiration", CardHandle=smcb.CardHandle,
                      Context=self.k.context())
        self.assertEqual(r.Status.Result, "OK")
        exp = [e for e in r.CertificateExpiration if e.ICCSN == SMCB_ICCSN]
        self.assertTrue(exp, "no expiration for the SMC-B")
        for e in exp:
            self.assertEqual(e.CtID, "KT1")
            self.assertEqual(e.CardHandle, smcb.CardHandle)
            self.assertGreater(e.validity, datetime.date.today())
        if smcb.CertificateExpirationDate:
            self.assertIn(smcb.CertificateExpirationDate, [e.validity for e in exp])
        # without a CardHandle: every card of the workplace's terminals
        r = self.call("CertificateService", "CheckCertificateExpiration", Context=self.k.context())
        self.assertIn(SMCB_ICCSN, [e.ICCSN for e in r.CertificateExpiration])

    def test_faults(self):
        self.assertFault(4047, self.call, "CertificateService", "ReadCardCertificate", CardHandle="H-no-such-card",
                         Context=self.k.context(), CertRefList={"CertRef": ["C.AUT"]})
        self.assertFault(4004, self.call, "CertificateService", "ReadCardCertificate",
                         CardHandle=self.k.smcb().CardHandle, Context=self.k.context(mandant="NoSuchMandant"),
                         CertRefList={"CertRef": ["C.AUT"]})
        # an eGK is not for ReadCardCertificate (CertificateService 6.0)
        egk = self.k.insert("KT1", 1, "egk-pruefkarte.card")
        try:
            f = self.assertRaisesFault(self.call, "CertificateService", "ReadCardCertificate",
                                       CardHandle=egk.CardHandle, Context=self.k.context(),
                                       CertRefList={"CertRef": ["C.AUT"]})
            self.assertIn(f.code, (4051, 4209), str(f))
        finally:
            self.k.remove("KT1", 1)
