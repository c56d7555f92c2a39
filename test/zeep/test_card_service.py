"""CardService 8.1 through zeep: GetPinStatus, VerifyPin with the PIN
typed on KT1's pad (kt-ctl pin), ChangePin from the transport PIN,
faults. Each test skips while konnektord answers "not implemented"
(gematik 4001 / HTTP 501)."""
import os

from konn import CARDS, PRUEFKARTE_KVNR, KonnektorTestCase

PIN_STATUS = {"VERIFIED", "TRANSPORT_PIN", "EMPTY_PIN", "BLOCKED", "VERIFIABLE", "DISABLED"}


class CardService(KonnektorTestCase):
    """The SMC-B of conf/cards/smcb.card in KT1 slot 4: PIN.SMC is 123456,
    three tries."""

    def pin_status(self, handle, pin_typ, **ctx):
        r = self.call("CardService", "GetPinStatus", Context=self.k.context(**ctx), CardHandle=handle,
                      PinTyp=pin_typ)
        self.assertEqual(r.Status.Result, "OK")
        return r

    def verify(self, digits, handle, pin_typ="PIN.SMC", terminal="KT1", **ctx):
        return self.k.call_with_pin(terminal, digits, "CardService", "VerifyPin", Context=self.k.context(**ctx),
                                    CardHandle=handle, PinTyp=pin_typ)

    def test_verify_pin_at_terminal(self):
        """A wrong PIN typed on the pad: PinResult REJECTED, one try less;
        the right one: OK, and GetPinStatus says VERIFIED."""
        h = self.k.smcb().CardHandle
        r = self.pin_status(h, "PIN.SMC")
        self.assertEqual(r.PinStatus, "VERIFIABLE")
        self.assertEqual(r.LeftTries, 3)

        r = self.verify("111111", h)
        # a wrong PIN is no fault (gemILF_PS 4.1.5.1)
        self.assertEqual(r.Status.Result, "OK")
        self.assertEqual(r.PinResult, "REJECTED")
        self.assertEqual(r.LeftTries, 2)
        r = self.pin_status(h, "PIN.SMC")
        self.assertEqual((r.PinStatus, r.LeftTries), ("VERIFIABLE", 2))

        r = self.verify("123456", h)
        self.assertEqual((r.Status.Result, r.PinResult), ("OK", "OK"))
        r = self.pin_status(h, "PIN.SMC")
        self.assertEqual(r.PinStatus, "VERIFIED")

    def test_pin_status_egk(self):
        egk = self.k.insert("KT1", 1, "egk-pruefkarte.card")
        try:
            self.assertEqual(egk.Kvnr, PRUEFKARTE_KVNR)
            r = self.pin_status(egk.CardHandle, "PIN.CH")
            self.assertEqual(r.PinStatus, "VERIFIABLE")
            self.assertEqual(r.LeftTries, 3)
            # MRPIN.home refers to PIN.CH and is enabled
            r = self.pin_status(egk.CardHandle, "MRPIN.home")
            self.assertIn(r.PinStatus, PIN_STATUS)
        finally:
            self.k.remove("KT1", 1)

    def test_remote_terminal(self):
        """AP2 works at KT2 (its Remote-PIN-KT) with KT1 as remote terminal:
        the SMC-B in KT1 is reachable from AP2 for its status; entering its
        PIN would take the remote-PIN procedure, which konnektord answers
        with 4053."""
        h = self.k.smcb().CardHandle
        r = self.pin_status(h, "PIN.SMC", workplace="AP2")
        self.assertIn(r.PinStatus, PIN_STATUS)
        self.assertFault(4053, self.call, "CardService", "VerifyPin", Context=self.k.context(workplace="AP2"),
                         CardHandle=h, PinTyp="PIN.SMC")

    def test_faults(self):
        h = self.k.smcb().CardHandle
        ctx = self.k.context
        self.assertFault(4004, self.call, "CardService", "GetPinStatus", Context=ctx(mandant="NoSuchMandant"),
                         CardHandle=h, PinTyp="PIN.SMC")
        # a handle that never existed
        self.assertFault(4047, self.call, "CardService", "GetPinStatus", Context=ctx(), CardHandle="H-no-such-card",
                         PinTyp="PIN.SMC")
        # an SMC-B has no PIN.QES
        self.assertFault(4072, self.call, "CardService", "GetPinStatus", Context=ctx(), CardHandle=h,
                         PinTyp="PIN.QES")
        # AP3 belongs to Mandant2, which does not manage this SMC-B nor
        # work at KT1
        f = self.assertRaisesFault(self.call, "CardService", "GetPinStatus", Context=ctx("Mandant2", "CS2", "AP3"),
                                   CardHandle=h, PinTyp="PIN.SMC")
        self.assertIn(f.code, (4009, 4012), str(f))


class CardServiceUnmanagedSmcb(KonnektorTestCase):
    """Mandant1 manages no SMC-B: using the one in KT1 is error 4009."""

    OVERRIDES = {'mandant "Mandant1"': {"smcb": None}}

    def test_smcb_not_managed(self):
        h = self.k.smcb().CardHandle
        self.assertFault(4009, self.call, "CardService", "GetPinStatus", Context=self.k.context(), CardHandle=h,
                         PinTyp="PIN.SMC")


class CardServiceTransportPin(KonnektorTestCase):
    """An SMC-B with PIN.SMC in transport state (transport PIN 54321) in
    KT1 slot 4: GetPinStatus says TRANSPORT_PIN; ChangePin with the old
    and the new PIN typed on KT1's pad sets it."""

    OVERRIDES = {'emulated_terminal "KT1"': {"slot4": os.path.join(CARDS, "smcb-transport-pin.card")}}

    def test_change_transport_pin(self):
        h = self.k.smcb().CardHandle
        r = self.call("CardService", "GetPinStatus", Context=self.k.context(), CardHandle=h, PinTyp="PIN.SMC")
        self.assertEqual(r.PinStatus, "TRANSPORT_PIN")

        r = self.k.call_with_pin("KT1", ["54321", "123456"], "CardService", "ChangePin", Context=self.k.context(),
                                 CardHandle=h, PinTyp="PIN.SMC")
        self.assertEqual((r.Status.Result, r.PinResult), ("OK", "OK"))
        r = self.call("CardService", "GetPinStatus", Context=self.k.context(), CardHandle=h, PinTyp="PIN.SMC")
        self.assertIn(r.PinStatus, ("VERIFIABLE", "VERIFIED"))
        self.assertNotEqual(r.PinStatus, "TRANSPORT_PIN")
