package censor

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/commucat/commucat/configs"
	"github.com/commucat/commucat/testnet/packet"
	utls "github.com/refraction-networking/utls"
	"golang.org/x/net/dns/dnsmessage"
)

// flows crafts traffic through an engine.
type flows func(t *testing.T, e *testEngine)

// tlsFlow opens a connection to dst and sends hello as its first data.
func tlsFlow(t *testing.T, e *testEngine, src, dst netip.AddrPort, hello []byte) *conn {
	t.Helper()
	c := newConn(t, e, src, dst)
	c.handshake()
	c.data(Client, hello)
	return c
}

// serverSends makes the server of c send n bytes in 1000-byte segments.
func serverSends(c *conn, n int) {
	for ; n > 0; n -= 1000 {
		c.data(Server, make([]byte, min(n, 1000)))
	}
}

// TestShippedProfiles loads every shipped profile and runs, for each,
// traffic its key rules must block (and which rules must fire) and
// traffic they must let alone.
func TestShippedProfiles(t *testing.T) {
	goHello := func(t *testing.T, name string) []byte { return captureGoHello(t, name, []string{"h2", "http/1.1"}) }
	random := randomPayload(t, 300)
	dnsQuery := packQuery(t, 3, "ok.example.", dnsmessage.TypeA, true)
	quiet := func(t *testing.T, e *testEngine) {
		c := tlsFlow(t, e, cli(cliPort), srv443, goHello(t, "www.example.com"))
		serverSends(c, 5000)
		udp(t, e, Outbound, cli(cliPort), resolv, dnsQuery, t0)
	}
	tests := map[string]struct {
		fires   []string // rules that must fire on `blocked`
		blocked flows
		allowed flows
		check   func(t *testing.T, p *Profile)
	}{
		"wan-clean": {
			allowed: func(t *testing.T, e *testEngine) {
				quiet(t, e)
				tlsFlow(t, e, cli(cliPort+1), srv443, random)
			},
			check: func(t *testing.T, p *Profile) {
				if len(p.Rules) != 0 || p.Link != nil {
					t.Errorf("wan-clean has rules or link impairments: %+v", p)
				}
			},
		},
		"wan-mobile-lossy": {
			allowed: quiet,
			check: func(t *testing.T, p *Profile) {
				l := p.Link
				if len(p.Rules) != 0 || l == nil || l.Up.Rate != 250000 || l.Down.Rate != 1000000 || l.Up.Burst == nil || l.Down.Jitter == 0 {
					t.Errorf("link = %+v", l)
				}
			},
		},
		"gfw-fet": {
			fires: []string{"fet"},
			blocked: func(t *testing.T, e *testEngine) {
				for i := range 60 {
					tlsFlow(t, e, cli(cliPort), netip.AddrPortFrom(srvIP, uint16(1000+i)), random)
				}
			},
			allowed: func(t *testing.T, e *testEngine) {
				for i := range 30 {
					tlsFlow(t, e, cli(cliPort), netip.AddrPortFrom(srvIP, uint16(1000+i)), goHello(t, "www.example.com"))
					tlsFlow(t, e, cli(cliPort), netip.AddrPortFrom(srvIP, uint16(2000+i)), []byte("SSH-2.0-OpenSSH_9.6\r\n"))
				}
			},
		},
		"gfw-sni": {
			fires: []string{"sni", "http", "dns"},
			blocked: func(t *testing.T, e *testEngine) {
				wantAction(t, "hello", tlsFlow(t, e, cli(cliPort), srv443, nil).data(Client, goHello(t, "www.blocked.example")), Drop)
				c := newConn(t, e, cli(cliPort+1), netip.AddrPortFrom(srvIP, 80))
				c.handshake()
				wantAction(t, "http", c.data(Client, []byte("GET / HTTP/1.1\r\nHost: torproject.org\r\n\r\n")), Drop)
				if v := udp(t, e, Outbound, cli(cliPort), resolv, packQuery(t, 3, "www.google.com.", dnsmessage.TypeA, true), t0); len(v.Inject) != 1 {
					t.Errorf("dns: %+v", v)
				}
			},
			allowed: quiet,
		},
		"gfw-quic-sni": {
			fires: []string{"quic-sni"},
			blocked: func(t *testing.T, e *testEngine) {
				wantAction(t, "initial", udp(t, e, Outbound, cli(cliPort), srv443, quicInitial(t, "blocked.example"), t0), Drop)
			},
			allowed: func(t *testing.T, e *testEngine) {
				udp(t, e, Outbound, cli(cliPort), srv443, readHex(t, "rfc9001-a2-protected.hex"), t0)
				udp(t, e, Outbound, cli(cliPort+1), srv443, quicInitial(t, "www.example.com"), t0)
				quiet(t, e)
			},
		},
		"gfw-tlsfp": {
			fires: []string{"tls-fingerprint"},
			blocked: func(t *testing.T, e *testEngine) {
				wantAction(t, "go hello", tlsFlow(t, e, cli(cliPort), srv443, nil).data(Client, goHello(t, "www.example.com")), Drop)
			},
			allowed: func(t *testing.T, e *testEngine) {
				for i, id := range []utls.ClientHelloID{utls.HelloChrome_Auto, utls.HelloFirefox_Auto, utls.HelloSafari_Auto, utls.HelloEdge_Auto, utls.HelloIOS_Auto, utls.HelloChrome_120, utls.HelloChrome_131} {
					wantAction(t, id.Str(), tlsFlow(t, e, cli(cliPort+uint16(i)), srv443, nil).data(Client, helloOf(t, id, "www.example.com")), Pass)
				}
			},
		},
		"gfw-prober": {
			fires: []string{"suspect-fet"},
			blocked: func(t *testing.T, e *testEngine) {
				tlsFlow(t, e, cli(cliPort), srv443, random)
				if len(e.Suspects()) != 1 {
					t.Errorf("%d suspects queued", len(e.Suspects()))
				}
			},
			allowed: quiet,
			check: func(t *testing.T, p *Profile) {
				if p.Prober == nil || !slices.Equal(p.Prober.Lengths, DefaultProbeLengths) {
					t.Errorf("prober = %+v", p.Prober)
				}
			},
		},
		"iran-protocol-filter": {
			fires: []string{"protocol-filter"},
			blocked: func(t *testing.T, e *testEngine) {
				c := tlsFlow(t, e, cli(cliPort), srv443, random[:100])
				wantAction(t, "second packet", c.data(Client, random[100:]), Drop)
			},
			allowed: func(t *testing.T, e *testEngine) {
				quiet(t, e)
				c := tlsFlow(t, e, cli(cliPort+1), netip.AddrPortFrom(srvIP, 80), []byte("POST /upload HTTP/1.1\r\n"))
				c.data(Client, random)
				c = tlsFlow(t, e, cli(cliPort+2), netip.AddrPortFrom(srvIP, 22), random)
				c.data(Client, random)
			},
		},
		"tspu-16k": {
			fires: []string{"freeze-16k"},
			blocked: func(t *testing.T, e *testEngine) {
				serverSends(tlsFlow(t, e, cli(cliPort), srv443, goHello(t, "www.example.com")), 21000)
			},
			allowed: func(t *testing.T, e *testEngine) {
				serverSends(tlsFlow(t, e, cli(cliPort), srv443, goHello(t, "www.example.com")), 16000)
				serverSends(tlsFlow(t, e, cli(cliPort+1), netip.AddrPortFrom(srvIP, 80), []byte("GET / HTTP/1.1\r\n\r\n")), 40000)
			},
		},
		"udp-block": {
			fires: []string{"udp"},
			blocked: func(t *testing.T, e *testEngine) {
				wantAction(t, "quic", udp(t, e, Outbound, cli(cliPort), srv443, readHex(t, "rfc9001-a2-protected.hex"), t0), Drop)
				wantAction(t, "kcp-like", udp(t, e, Outbound, cli(cliPort+1), netip.AddrPortFrom(srvIP, 4000), random, t0), Drop)
			},
			allowed: quiet,
		},
		"throttle-and-kill": {
			fires: []string{"throttle-sni", "throttle-unknown", "kill-old"},
			blocked: func(t *testing.T, e *testEngine) {
				c := tlsFlow(t, e, cli(cliPort), srv443, goHello(t, "twitter.com"))
				if v := c.data(Server, make([]byte, 1000)); v.Delay == 0 && v.Action != Drop {
					t.Errorf("throttled flow: %+v", v)
				}
				// Unknown protocols are judged on two data packets.
				tlsFlow(t, e, cli(cliPort+1), srv443, random).data(Client, random)
				old := tlsFlow(t, e, cli(cliPort+2), srv443, goHello(t, "www.example.com"))
				// Keep it active: an idle flow expires after flows.idle.
				old.now = t0.Add(60 * time.Second)
				old.send(Client, packet.ACK, nil)
				old.now = t0.Add(121 * time.Second)
				if v := old.send(Client, packet.ACK, nil); v.Action != Drop || len(v.Inject) != 2 {
					t.Errorf("old flow: %+v", v)
				}
			},
			allowed: func(t *testing.T, e *testEngine) {
				c := tlsFlow(t, e, cli(cliPort), srv443, goHello(t, "www.example.com"))
				if v := c.data(Server, make([]byte, 1000)); v.Delay != 0 || v.Action != Pass {
					t.Errorf("free flow: %+v", v)
				}
			},
		},
	}
	citation := regexp.MustCompile(`(?s)^#.*(19|20)\d\d`)
	names := configs.CensorProfileNames()
	wantNames := []string{"gfw-fet", "gfw-prober", "gfw-quic-sni", "gfw-sni", "gfw-tlsfp", "iran-protocol-filter", "throttle-and-kill", "tspu-16k", "udp-block", "wan-clean", "wan-mobile-lossy"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("shipped profiles %v, want %v", names, wantNames)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			tt, ok := tests[name]
			if !ok {
				t.Fatalf("no test for shipped profile %s", name)
			}
			raw, _ := configs.CensorProfileYAML(name)
			if name != "wan-clean" && !citation.Match(raw) {
				t.Errorf("%s does not open with a comment citing a measurement", name)
			}
			p := shipped(t, name)
			if p.Name != name {
				t.Errorf("profile name %q in file %s.yaml", p.Name, name)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
			if tt.blocked != nil {
				e := newTestEngine(t, p, 1)
				tt.blocked(t, e)
				var fired []string
				for _, ev := range e.events(t) {
					if !slices.Contains(fired, ev.Rule) {
						fired = append(fired, ev.Rule)
					}
				}
				for _, r := range tt.fires {
					if !slices.Contains(fired, r) {
						t.Errorf("rule %s did not fire (fired: %s)", r, strings.Join(fired, ", "))
					}
				}
			}
			e := newTestEngine(t, p, 1)
			tt.allowed(t, e)
			if evs := e.events(t); len(evs) > 0 {
				t.Errorf("allowed traffic was censored: %+v", evs)
			}
		})
	}
}

// TestGoHelloJA4NotAllowed derives the JA4 of a real crypto/tls
// ClientHello and checks that gfw-tlsfp's allowlist leaves it out, with
// and without ALPN, while it lists every utls browser preset.
func TestGoHelloJA4NotAllowed(t *testing.T) {
	p := shipped(t, "gfw-tlsfp")
	allowed := p.Rules[0].Match.TLSFingerprint.JA4
	for _, alpn := range [][]string{nil, {"h2", "http/1.1"}, {"http/1.1"}} {
		h, err := ClientHelloFromStream(captureGoHello(t, "www.example.com", alpn), 0)
		if err != nil {
			t.Fatal(err)
		}
		ja4 := h.JA4(JA4TCP)
		t.Logf("crypto/tls, ALPN %v: JA4 %s", alpn, ja4)
		if slices.Contains(allowed, ja4) {
			t.Errorf("Go's JA4 %s is allowlisted", ja4)
		}
	}
	for _, id := range []utls.ClientHelloID{utls.HelloChrome_Auto, utls.HelloFirefox_Auto, utls.HelloSafari_Auto, utls.HelloEdge_Auto, utls.HelloIOS_Auto} {
		h, err := ClientHelloFromStream(helloOf(t, id, "www.example.com"), 0)
		if err != nil {
			t.Fatal(err)
		}
		ja4 := h.JA4(JA4TCP)
		h1 := strings.Replace(ja4, "h2_", "h1_", 1)
		if !slices.Contains(allowed, ja4) || !slices.Contains(allowed, h1) {
			t.Errorf("%s: JA4 %s (or %s) not allowlisted", id.Str(), ja4, h1)
		}
	}
}
