package gateway

import "testing"

func TestScrubAddr(t *testing.T) {
	for _, tt := range []struct {
		name, msg, addr, want string
	}{
		{"ipv4", "tcp: read: read tcp 10.0.0.1:443->198.51.100.7:50123: i/o timeout", "198.51.100.7:50123",
			"tcp: read: read tcp 10.0.0.1:443->[scrubbed]: i/o timeout"},
		{"ipv4 host alone", "dial 198.51.100.7 refused", "198.51.100.7:50123", "dial [scrubbed] refused"},
		{"ipv4 written mapped", "from ::ffff:198.51.100.7 port 9", "198.51.100.7:50123", "from [scrubbed] port 9"},
		{"ipv6", "read tcp [2001:db8::1]:443->[2001:db8::7]:50123: reset", "[2001:db8::7]:50123",
			"read tcp [2001:db8::1]:443->[scrubbed]: reset"},
		{"ipv6 with zone", "read udp [fe80::7%eth0]:9: x; fe80::7 y", "[fe80::7%eth0]:9", "read udp [scrubbed]: x; [scrubbed] y"},
		{"mapped address, unmapped in the text", "peer 192.0.2.9 gone", "[::ffff:192.0.2.9]:7", "peer [scrubbed] gone"},
		{"not an ip", "pipe: sim-host-3 closed", "sim-host-3", "pipe: [scrubbed] closed"},
		{"nothing to scrub", "handshake: auth failed", "198.51.100.7:50123", "handshake: auth failed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := scrubAddr(tt.msg, tt.addr); got != tt.want {
				t.Errorf("scrubAddr(%q, %q) = %q, want %q", tt.msg, tt.addr, got, tt.want)
			}
		})
	}
}
