// Package scenario runs the real commucat binaries in the test network:
// a scenario file names the hosts and their links, the censor profile, a
// timeline of events, which commucat programs run on which host and what
// must hold at the end; Run brings the network up (testnet/topology),
// runs everything, tears it down and returns a Report (JSON and
// Markdown). Matrix runs every transport against every shipped censor
// profile and draws the results. `commucat testnet` is the command line
// on top of this package.
//
// # Scenario files
//
// Decoding is strict: an unknown key, a value of the wrong kind, a
// duplicate key or a YAML alias is an *Error naming the key's path, such
// as run[2].send.count, and its line. Every key is optional unless
// marked:
//
//	name: failover                 # required
//	description: ...
//	seed: 7                        # links and censor; 0: random, reported
//	duration: 5m                   # cap of the whole run
//	drain: 10s                     # wait for late deliveries at the end
//	hosts:                         # required; host i gets 198.18.0.(i+1)
//	  - name: alice                # required
//	    role: client               # client (default), gateway, cover, resolver, prober
//	    zone: inside               # default: inside for client and prober
//	    up:   {delay: 20ms, jitter: 5ms, loss: 0.01, rate: 10mbit, mtu: 1400}
//	    down: {delay: 20ms}        # as testnet/link.Params; default: the profile's link
//	  - {name: gateway, role: gateway}
//	  - {name: cover, role: cover, names: [www.cover.test]}
//	  - {name: dns, role: resolver, records: {www.cover.test: cover}}
//	  - {name: prober, role: prober}
//	censor:                        # one of profile, file, inline
//	  profile: gfw-fet             # shipped (configs/censors)
//	  file: my-censor.yaml         # relative to the scenario's directory
//	  inline: {name: x, rules: [...]}
//	  seed: 3                      # default: the scenario's seed
//	  off: true                    # start switched off
//	timeline:                      # times from the start of run
//	  - {at: 0s, censor: on}
//	  - {at: 5s, blackhole: {host: gateway, transport: reality}}
//	  - {at: 5s, blackhole: {host: gateway, port: 443, proto: udp}}
//	  - {at: 9s, unblackhole: {host: gateway, transport: reality}}
//	  - {at: 12s, link: {host: alice, dir: up, params: {loss: 0.2}}}
//	setup:                         # in order, each waits for the one before
//	  - gateway: {host: gateway, transports: [reality, quic], ports: {quic: 8443},
//	              params: {reality: {sni: www.cover.test}}}
//	  - register: {host: alice, user: alice}
//	  - listen: {user: bob, count: 0, transport: ""}
//	run:                           # in order; foreground steps are waited for
//	  - listen: {user: bob, at: 1s}
//	  - send: {user: alice, to: bob, count: 3, size: 100, interval: 1s, retries: 2}
//	  - chat: {user: alice, to: bob, count: 50, size: 16384, parallel: 4, for: 30s, stats: 250ms}
//	  - probe: {user: alice, to: bob, transports: [obfs4], attempts: 20, size: 24000, timeout: 6s}
//	  - exec: {host: alice, args: [probe, --target, "{addr:cover}"], exit: 0}
//	expect:
//	  delivered: 50                # at least this many distinct messages
//	  all-delivered: true          # every message the gateway stored arrived
//	  exactly-once: true           # none shown twice
//	  sends-succeed: true          # every message was stored
//	  recover: {after: 5s, within: 10s}
//	  fired: [{rule: fet, transport: obfs4}]
//	  not-fired: [{transport: reality}]
//	  blocked: [obfs4]             # a probe attempt failed
//	  open: [reality]              # every probe attempt passed
//
// # Programs
//
// The gateway program writes a gateway configuration serving the chosen
// transports on the gateway host's address, each on its own port
// (DefaultPorts), with reality's cover site on the cover host, and starts
// `commucat gateway`. register runs `commucat invite` against the
// gateway's state and `commucat register` on the user's host. listen is
// `commucat listen --json`; send is one `commucat send` per message;
// chat is the hidden `commucat testnet chat`, which keeps one session,
// sends its messages with up to parallel in flight, and prints the
// client router's path statistics (core/router Stats) every stats
// interval: the report's path choices over time. probe tries each
// transport alone: a listener and a sender both restricted to it, once or
// until the first failure. exec runs the binary with any arguments
// ({addr:HOST}, {port:TRANSPORT}, {state:USER}, {gateway-state} and {dir}
// are expanded). Every message starts with a tag, "[cc/STEP/N] ", so each
// delivery is matched to its send: that is how delivery, exactly-once
// and recovery times are checked.
//
// # The censor and the report
//
// The censor is a testnet/censor Engine behind the router's Censor hook
// (censor.RouterCensor); its action log is written to censor.jsonl in the
// run's directory, and the report counts its events per rule, action and
// gateway transport (from the flow's server port), which is how tests
// assert what was blocked and why. A profile whose rules hand servers to
// the active prober gets a censor.Prober dialing from the prober host,
// whose packets the censor never inspects. The cover host serves the
// decoy website (HTTPS on 443, HTTP on 80) and the resolver answers A
// queries, both from this process on sockets in their namespaces.
//
// # Clean-up
//
// Run removes everything it created: it stops its programs (SIGTERM,
// then SIGKILL) and the topology's Close removes the namespaces. Before
// creating namespaces it writes a record under RunDir; a run that dies
// leaves the record, and Down removes exactly the namespaces named in the
// records of processes that no longer run. Programs get SIGKILL when the
// process that started them dies.
//
// Everything here needs root and /dev/net/tun; Run and Down say so with
// ErrNotRoot. Run is safe to call from several goroutines, but the
// machine's cores bound how many runs measure anything useful at once.
package scenario
