import TLSContract
import Testing

/// The contract's rule for a peer's TLS 1.3 KeyUpdates, with the times given: GnuTLS 3.7's (8 in a
/// window of 1 s that opens at the first update after the last window), which the OpenSSL backend applies.
@Suite("PeerKeyUpdateLimit")
struct PeerKeyUpdateLimitTests {
    private let start = ContinuousClock.now

    private func at(milliseconds: Int) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    /// `limit.admit(at:)` at `milliseconds` after the start (a mutating call, so not inside #expect).
    private func admit(_ limit: inout PeerKeyUpdateLimit, _ milliseconds: Int) -> Bool {
        limit.admit(at: at(milliseconds: milliseconds))
    }

    @Test("eight updates in a window are admitted, the ninth is not")
    func ninthRefused() {
        var limit = PeerKeyUpdateLimit()
        for index in 0..<8 { #expect(admit(&limit, index * 100), "update \(index + 1)") }
        #expect(!admit(&limit, 999))
    }

    @Test("the window is counted from its first update, up to and including one second later")
    func windowEdges() {
        var limit = PeerKeyUpdateLimit()
        #expect(admit(&limit, 0))
        for _ in 0..<7 { #expect(admit(&limit, 990)) }
        #expect(!admit(&limit, 1_000), "one second after the first is still its window")

        var next = PeerKeyUpdateLimit()
        for _ in 0..<8 { #expect(admit(&next, 0)) }
        #expect(admit(&next, 1_001), "a new window opens after one second")
        for _ in 0..<7 { #expect(admit(&next, 1_500)) }
        #expect(!admit(&next, 2_000), "the new window counts from 1,001 ms")
    }

    @Test("a steady peer, one update every 130 ms, is never refused")
    func steadyPeer() {
        var limit = PeerKeyUpdateLimit()
        for index in 0..<100 { #expect(admit(&limit, index * 130), "update \(index + 1)") }
    }

    @Test("the refusal's words name the limit")
    func refusalWords() {
        #expect(PeerKeyUpdateLimit.refusal == "the peer updated its keys more than 8 times within a second")
    }
}
