// Package censor holds the rule primitives of the testnet's censor: pure,
// root-free functions over packet bytes and per-flow byte streams that the
// testnet's flow table calls and that censor profiles (YAML) compose. Each
// primitive follows a published measurement of a real censor:
//
//   - SNI of TLS over TCP (ReassembleClientHello, ParseClientHello,
//     ClientHello.ServerName). The GFW resets TLS connections whose
//     ClientHello names a blocked host, on every port, and then blocks the
//     3-tuple for a while (Bock et al., "Even Censors Have a Backup", FOCI
//     2021; Rambert et al., WWW 2021). Censors differ in reassembly: the
//     limit of ReassembleClientHello models one that reads only the first
//     segment (pass that segment's length) or reassembles up to N bytes.
//     Russia's TSPU also matches the SNI, and then drops or throttles the
//     flow (Xue et al., "TSPU: Russia's Decentralized Censorship System",
//     IMC 2022).
//   - SNI of QUIC v1 (OpenInitial, QUICHelloAssembler, QUICClientHello):
//     since April 2024 the GFW decrypts client Initial packets with the
//     RFC 9001 initial keys and blocks by the SNI, but does not reassemble
//     a ClientHello split over datagrams (GFW Report et al., "Exposing and
//     Circumventing SNI-based QUIC Censorship of the Great Firewall of
//     China", USENIX Security 2025).
//   - TLS fingerprints (ClientHello.JA3, ClientHello.JA4): allowlists or
//     blocklists of client implementations, as censors have applied to
//     TLS libraries (JA3: Salesforce; JA4: FoxIO's specification).
//   - Fully encrypted traffic (FET, FETRule): Algorithm 1 of Wu et al.,
//     "How the Great Firewall of China Detects and Blocks Fully Encrypted
//     Traffic" (USENIX Security 2023), with its blocking probability and
//     residual 3-tuple block as parameters and the random draw from a
//     seeded PRNG the caller passes in.
//   - Protocol allowlisting (ClassifyTCP, ClassifyUDP): Iran's protocol
//     filter lets a flow on its ports live only if the first two client
//     data packets look like HTTP, TLS or DNS (Bock et al., "Detecting and
//     Evading Censorship-in-Depth: A Case Study of Iran's Protocol
//     Filter", FOCI 2020).
//   - HTTP Host and keyword matching (ParseHTTPRequest, HTTPRule): the GFW
//     looks for blocked keywords in the request line's path and in the Host
//     header of the first request (Rambert et al., "Chinese Wall or Swiss
//     Cheese?", WWW 2021).
//   - Injection (TCPState.Forge, ForgeDNSAnswer, ForgeNXDOMAIN,
//     ReplyUDP): RST, RST+ACK and FIN segments toward either end with
//     sequence numbers taken from the observed flow, as the GFW and the
//     TSPU send them, and forged DNS answers that echo the query's ID and
//     question, as the GFW's DNS injector does.
//
// The primitives decide and keep no state. The flow engine (Engine, built
// from a YAML Profile) composes them: it keeps the flow table, residual
// blocks, idle expiry and the JSON action log, and an active Prober checks
// suspected servers. Parsers of outside bytes never panic, check
// every length before use and cap what they buffer. Every function here is
// safe for concurrent use unless its doc says otherwise.
package censor
