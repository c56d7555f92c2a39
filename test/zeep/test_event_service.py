"""EventService 7.2 through zeep: connector.sds, GetCardTerminals,
GetCards, GetResourceInformation, Subscribe, GetSubscription,
RenewSubscriptions, Unsubscribe; CETP delivery of CARD/INSERTED to a
receiver of this test; access faults with their gematik codes."""
import datetime
import socket
import struct
import threading
import time

from lxml import etree

from konn import NS, PRUEFKARTE_KVNR, SMCB_ICCSN, KonnektorTestCase, wait_for

EVT = "http://ws.gematik.de/conn/EventService/v7.2"


class CetpReceiver:
    """A client system's CETP listener: accepts the Konnektor's
    connections and collects the EVT:Event documents of the frames
    ("CETP", 4-byte big-endian length, XML)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.events = []
        self.errors = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def event_to(self):
        return "cetp://127.0.0.1:%d" % self.port

    def _run(self):
        conns = []
        while self.running:
            try:
                c, _ = self.sock.accept()
                c.settimeout(0.2)
                conns.append([c, b""])
            except socket.timeout:
                pass
            for entry in list(conns):
                c, buf = entry
                try:
                    data = c.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    data = b""
                if not data:
                    c.close()
                    conns.remove(entry)
                    continue
                buf += data
                while len(buf) >= 8:
                    if buf[:4] != b"CETP":
                        self.errors.append("frame without CETP marker: %r" % buf[:16])
                        buf = b""
                        break
                    (n,) = struct.unpack(">I", buf[4:8])
                    if len(buf) < 8 + n:
                        break
                    self.events.append(etree.fromstring(buf[8:8 + n]))
                    buf = buf[8 + n:]
                entry[1] = buf
        for c, _ in conns:
            c.close()

    def params(self, ev):
        return {p.findtext("{%s}Key" % EVT): p.findtext("{%s}Value" % EVT)
                for p in ev.iterfind("{%s}Message/{%s}Parameter" % (EVT, EVT))}

    def wait_topic(self, topic, timeout=10):
        def find():
            for ev in self.events:
                if ev.findtext("{%s}Topic" % EVT) == topic:
                    return [ev]
            return None
        return wait_for(find, timeout, "a CETP event %s" % topic)[0]

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


class EventService(KonnektorTestCase):

    def test_connector_sds(self):
        sds = self.k.sds(refresh=True)  # validated against ServiceDirectory.xsd
        self.assertEqual(sds.findtext("PI:ProductInformation/PI:ProductTypeInformation/PI:ProductType", namespaces=NS),
                         "Konnektor")
        self.assertEqual(sds.findtext("SDS:TLSMandatory", namespaces=NS), "true")
        ep = self.k.endpoint("EventService")
        self.assertIsNotNone(ep, "connector.sds lists no EventService 7.2")
        self.assertTrue(ep.startswith("https://127.0.0.1:%d/" % self.k.port), ep)
        for name in ("CardService", "CardTerminalService", "CertificateService", "AuthSignatureService"):
            self.assertIsNotNone(self.k.endpoint(name), "connector.sds lists no %s" % name)

    def test_get_card_terminals(self):
        r = self.call("EventService", "GetCardTerminals", Context=self.k.context())
        self.assertEqual(r.Status.Result, "OK")
        cts = {ct.CtId: ct for ct in r.CardTerminals.CardTerminal}
        # AP1 sees its own terminal only
        self.assertEqual(set(cts), {"KT1"})
        kt1 = cts["KT1"]
        self.assertEqual(kt1.Name, "Praxis-KT-1")
        self.assertEqual(kt1.MacAddress, "02-00-00-00-00-01")
        self.assertTrue(kt1.Connected)
        self.assertEqual(kt1.Slots, 4)
        self.assertIn("AP1", kt1.WorkplaceIds.WorkplaceId)
        # mandant-wide: every terminal of Mandant1's workplaces
        r = self.call("EventService", "GetCardTerminals", Context=self.k.context(), **{"mandant-wide": True})
        self.assertEqual({ct.CtId for ct in r.CardTerminals.CardTerminal}, {"KT1", "KT2"})
        kt2 = [ct for ct in r.CardTerminals.CardTerminal if ct.CtId == "KT2"][0]
        self.assertEqual(kt2.Name, "Praxis-KT-2")
        self.assertIn("AP2", kt2.WorkplaceIds.WorkplaceId)

    def test_get_cards_smcb(self):
        smcb = self.k.smcb()
        self.assertEqual(smcb.CardType, "SMC-B")
        self.assertEqual(smcb.Iccsn, SMCB_ICCSN)
        self.assertEqual((smcb.CtId, smcb.SlotId), ("KT1", 4))
        self.assertTrue(smcb.CardHandle)
        # filters: by slot, by card type
        cards = self.k.cards(CtId="KT1", SlotId=4)
        self.assertEqual([c.Iccsn for c in cards], [SMCB_ICCSN])
        self.assertEqual([c.CardHandle for c in self.k.cards(CardType="SMC-B")], [smcb.CardHandle])
        self.assertEqual(self.k.cards(CtId="KT1", SlotId=3), [])
        # AP2 works at KT2, which is empty
        r = self.call("EventService", "GetCards", Context=self.k.context(workplace="AP2"), CtId="KT2")
        self.assertTrue(r.Cards is None or not r.Cards.Card)

    def test_pruefkarte_inserted_and_removed(self):
        """kt-ctl insert puts the Prüfkarte eGK into KT1 slot 1; GetCards and
        GetResourceInformation show it with its KVNR; removing it takes it
        away again."""
        egk = self.k.insert("KT1", 1, "egk-pruefkarte.card")
        try:
            self.assertEqual(egk.CardType, "EGK")
            self.assertEqual(egk.Kvnr, PRUEFKARTE_KVNR)
            self.assertEqual(len(egk.Iccsn), 20)
            self.assertTrue(egk.CardHolderName)
            # CardVersion from EF.ATR (COS) and EF.Version2: a G2.1 eGK
            v = egk.CardVersion
            self.assertEqual((v.COSVersion.Major, v.COSVersion.Minor, v.COSVersion.Revision), (4, 3, 0))
            self.assertEqual((v.ObjectSystemVersion.Major, v.ObjectSystemVersion.Minor), (4, 5))
            now = datetime.datetime.now(datetime.timezone.utc)
            self.assertLess(abs((now - egk.InsertTime).total_seconds()), 120)
            egks = self.k.cards(CardType="EGK")
            self.assertEqual([c.Kvnr for c in egks], [PRUEFKARTE_KVNR])

            r = self.call("EventService", "GetResourceInformation", Context=self.k.context(),
                          CardHandle=egk.CardHandle)
            self.assertEqual(r.Status.Result, "OK")
            self.assertEqual(r.Card.Kvnr, PRUEFKARTE_KVNR)
            self.assertEqual(r.Card.Iccsn, egk.Iccsn)
            r = self.call("EventService", "GetResourceInformation", Context=self.k.context(), Iccsn=egk.Iccsn)
            self.assertEqual(r.Card.CardHandle, egk.CardHandle)
        finally:
            self.k.remove("KT1", 1)
        self.assertEqual(self.k.cards(CardType="EGK"), [])
        # the handle died with the card
        with self.assertRaises(Exception):
            self.call("EventService", "GetResourceInformation", Context=self.k.context(), CardHandle=egk.CardHandle)

    def test_get_resource_information(self):
        r = self.call("EventService", "GetResourceInformation", Context=self.k.context(), CtId="KT1")
        self.assertEqual(r.Status.Result, "OK")
        self.assertEqual(r.CardTerminal.CtId, "KT1")
        self.assertTrue(r.CardTerminal.Connected)
        r = self.call("EventService", "GetResourceInformation", Context=self.k.context(), CtId="KT1", SlotId=4)
        self.assertEqual(r.Card.Iccsn, SMCB_ICCSN)
        r = self.call("EventService", "GetResourceInformation", Context=self.k.context())
        self.assertEqual(r.Status.Result, "OK")
        self.assertIsNotNone(r.Connector, "GetResourceInformation without CONN:Connector")
        self.assertIn(r.Connector.VPNTIStatus.ConnectionStatus, ("Online", "Offline"))

    def test_subscriptions(self):
        """Subscribe, GetSubscription, RenewSubscriptions, Unsubscribe, and a
        CETP CARD/INSERTED at the subscriber's receiver in between."""
        rx = CetpReceiver()
        ctx = self.k.context()
        try:
            r = self.call("EventService", "Subscribe", Context=ctx,
                          Subscription={"EventTo": rx.event_to, "Topic": "CARD"})
            self.assertEqual(r.Status.Result, "OK")
            sid = r.SubscriptionID
            self.assertTrue(sid)
            left = (r.TerminationTime - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
            self.assertGreater(left, 3600, "subscription lives less than an hour")

            r = self.call("EventService", "GetSubscription", Context=ctx, SubscriptionID=sid)
            subs = r.Subscriptions.Subscription
            self.assertEqual([(s.SubscriptionID, s.EventTo, s.Topic) for s in subs], [(sid, rx.event_to, "CARD")])
            r = self.call("EventService", "GetSubscription", Context=ctx, **{"mandant-wide": True})
            self.assertIn(sid, [s.SubscriptionID for s in r.Subscriptions.Subscription])

            egk = self.k.insert("KT1", 2, "egk-pruefkarte.card")
            try:
                ev = rx.wait_topic("CARD/INSERTED")
                p = rx.params(ev)
                self.assertEqual(ev.findtext("{%s}SubscriptionID" % EVT), sid)
                self.assertEqual(p.get("KVNR"), PRUEFKARTE_KVNR)
                self.assertEqual(p.get("CardHandle"), egk.CardHandle)
                self.assertEqual((p.get("CtID"), p.get("SlotID")), ("KT1", "2"))
            finally:
                self.k.remove("KT1", 2)
            rx.wait_topic("CARD/REMOVED")
            self.assertEqual(rx.errors, [])

            time.sleep(1.1)  # so that a renewal moves the termination time
            r = self.call("EventService", "RenewSubscriptions", Context=ctx, SubscriptionID=[sid])
            self.assertEqual(r.Status.Result, "OK")
            ren = r.SubscribeRenewals.SubscriptionRenewal
            self.assertEqual([x.SubscriptionID for x in ren], [sid])
            self.assertGreater((ren[0].TerminationTime - datetime.datetime.now(datetime.timezone.utc))
                               .total_seconds(), 3600)

            # zeep unwraps a response of one element: UnsubscribeResponse is
            # just CONN:Status
            r = self.call("EventService", "Unsubscribe", Context=ctx, SubscriptionID=sid)
            self.assertEqual(r.Result, "OK")
            r = self.call("EventService", "GetSubscription", Context=ctx, **{"mandant-wide": True})
            self.assertNotIn(sid, [s.SubscriptionID for s in (r.Subscriptions.Subscription if r.Subscriptions
                                                                else [])])
            # gone: renewing or unsubscribing it again is a fault
            self.assertFault(4000, self.call, "EventService", "Unsubscribe", Context=ctx, SubscriptionID=sid)

            # Unsubscribe by EventTo drops every subscription to that receiver
            for topic in ("CARD", "CT"):
                self.call("EventService", "Subscribe", Context=ctx,
                          Subscription={"EventTo": rx.event_to, "Topic": topic})
            r = self.call("EventService", "Unsubscribe", Context=ctx, EventTo=rx.event_to)
            self.assertEqual(r.Result, "OK")
            r = self.call("EventService", "GetSubscription", Context=ctx, **{"mandant-wide": True})
            self.assertFalse(r.Subscriptions and [s for s in r.Subscriptions.Subscription
                                                  if s.EventTo == rx.event_to])
        finally:
            rx.close()

    def test_subscribe_bad_event_to(self):
        self.assertFault(4000, self.call, "EventService", "Subscribe", Context=self.k.context(),
                         Subscription={"EventTo": "cetp://", "Topic": "CARD"})

    def test_access_faults(self):
        call = self.call
        ctx = self.k.context
        f = self.assertFault(4004, call, "EventService", "GetCards", Context=ctx(mandant="NoSuchMandant"))
        self.assertEqual(f.http_status, 500)
        self.assertRegex(f.faultcode, r"(^|:)(Client|Server)$")
        self.assertFault(4005, call, "EventService", "GetCards", Context=ctx(clientsystem="NoSuchCS"))
        self.assertFault(4006, call, "EventService", "GetCardTerminals", Context=ctx(workplace="NoSuchAP"))
        self.assertFault(4010, call, "EventService", "GetCards", Context=ctx(clientsystem="CS2"))
        self.assertFault(4011, call, "EventService", "GetCards", Context=ctx(workplace="AP3"))
        self.assertFault(4007, call, "EventService", "GetCards", Context=ctx(), CtId="NoSuchKT")
        self.assertFault(4012, call, "EventService", "GetCards", Context=ctx(), CtId="KT2")
        self.assertFault(4021, call, "EventService", "GetCards", Context=ctx(mandant=""))
        # the same for the subscription calls
        self.assertFault(4004, call, "EventService", "GetSubscription", Context=ctx(mandant="NoSuchMandant"))
