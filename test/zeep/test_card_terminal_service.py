"""CardTerminalService 1.1 through zeep: RequestCard (a card already in
the slot, a card put in while the call waits, a timeout), EjectCard (by
handle and by slot). Each test skips while konnektord answers "not
implemented" (gematik 4001 / HTTP 501)."""
import os
import threading
import time

from konn import CARDS, PRUEFKARTE_KVNR, SLOW, SMCB_ICCSN, KonnektorTestCase


class CardTerminalService(KonnektorTestCase):

    def request_card(self, ct, slot, **args):
        return self.call("CardTerminalService", "RequestCard", Context=self.k.context(),
                         Slot={"CtId": ct, "SlotId": slot}, **args)

    def test_request_card_already_inserted(self):
        r = self.request_card("KT1", 4, DisplayMsg="Bitte SMC-B stecken", TimeOut=5)
        self.assertEqual(r.Status.Result, "OK")
        self.assertTrue(r.AlreadyInserted)
        self.assertEqual(r.Card.Iccsn, SMCB_ICCSN)
        self.assertEqual(r.Card.CardType, "SMC-B")
        self.assertEqual(r.Card.CardHandle, self.k.smcb().CardHandle)

    def test_request_card_inserted_while_waiting(self):
        """RequestCard waits; the patient's eGK goes into KT1 slot 1 two
        tenths of a second later; the answer carries it."""
        box = {}

        def run():
            try:
                box["r"] = self.request_card("KT1", 1, CardType="EGK", DisplayMsg="Bitte eGK stecken", TimeOut=20)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                box["e"] = e
        t = threading.Thread(target=run)
        t.start()
        try:
            time.sleep(0.2 * SLOW)
            if t.is_alive():
                self.k.kt_ctl("KT1", "insert", 1, os.path.join(CARDS, "egk-pruefkarte.card"))
            t.join(30 * SLOW)
            if "e" in box:
                raise box["e"]
            r = box["r"]
            self.assertEqual(r.Status.Result, "OK")
            self.assertFalse(r.AlreadyInserted)
            self.assertEqual(r.Card.CardType, "EGK")
            self.assertEqual(r.Card.Kvnr, PRUEFKARTE_KVNR)
            # the terminal showed the message
            shown = self.k.kt_ctl("KT1", "display").stdout
            self.assertIn("Bitte eGK stecken", shown)
        finally:
            t.join(30 * SLOW)
            self.k.kt_ctl("KT1", "remove", 1, check=False)
            self.k.wait_card("KT1", 1, present=False)

    def test_request_card_timeout(self):
        t0 = time.monotonic()
        f = self.assertRaisesFault(self.request_card, "KT1", 2, TimeOut=1)
        self.assertLess(time.monotonic() - t0, 10 * SLOW)
        # no card within TimeOut is a fault with a Konnektor code (4xxx)
        self.assertTrue(4000 <= f.code < 5000, str(f))

    def test_eject_card_by_handle(self):
        egk = self.k.insert("KT1", 1, "egk-pruefkarte.card")
        try:
            r = self.call("CardTerminalService", "EjectCard", Context=self.k.context(), CardHandle=egk.CardHandle,
                          DisplayMsg="Bitte Karte entnehmen", TimeOut=5000)
            self.assertEqual(r.Result, "OK")  # EjectCardResponse is just CONN:Status
            # ejected: GetCards no longer shows it, its handle is invalid
            self.k.wait_card("KT1", 1, present=False)
            f = self.assertRaisesFault(self.call, "CardTerminalService", "EjectCard", Context=self.k.context(),
                                       CardHandle=egk.CardHandle)
            self.assertIn(f.code, (4008, 4047), str(f))
        finally:
            self.k.kt_ctl("KT1", "remove", 1, check=False)

    def test_eject_card_by_slot(self):
        self.k.insert("KT1", 2, "egk-pruefkarte.card")
        try:
            r = self.call("CardTerminalService", "EjectCard", Context=self.k.context(),
                          Slot={"CtId": "KT1", "SlotId": 2})
            self.assertEqual(r.Result, "OK")  # EjectCardResponse is just CONN:Status
            self.k.wait_card("KT1", 2, present=False)
        finally:
            self.k.kt_ctl("KT1", "remove", 2, check=False)

    def test_faults(self):
        # KT2 is not a terminal of AP1
        self.assertFault(4012, self.request_card, "KT2", 1, TimeOut=1)
        self.assertFault(4007, self.request_card, "NoSuchKT", 1, TimeOut=1)
        self.assertFault(4004, self.call, "CardTerminalService", "RequestCard",
                         Context=self.k.context(mandant="NoSuchMandant"), Slot={"CtId": "KT1", "SlotId": 4})
