package ooni

import (
	"crypto/tls"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Trace records the network operations of one measurement into the OONI
// arrays of TestKeys, with times as seconds since the measurement started.
// It is safe for concurrent use.
type Trace struct {
	start time.Time
	now   func() time.Time

	mu   sync.Mutex
	txID int64
	keys TestKeys
}

// NewTrace returns a Trace for a measurement that started at start; now
// reads the clock (time.Now if nil).
func NewTrace(start time.Time, now func() time.Time) *Trace {
	if now == nil {
		now = time.Now
	}
	return &Trace{start: start, now: now}
}

// Now reads the trace's clock.
func (tr *Trace) Now() time.Time { return tr.now() }

// Start is when the measurement started.
func (tr *Trace) Start() time.Time { return tr.start }

// Since returns at as seconds since the measurement started, rounded to
// the microsecond.
func (tr *Trace) Since(at time.Time) float64 { return Seconds(at.Sub(tr.start)) }

// Seconds returns d in seconds, rounded to the microsecond.
func Seconds(d time.Duration) float64 {
	return float64(d.Round(time.Microsecond)) / float64(time.Second)
}

// NewTransaction returns a new transaction ID that groups the entries of
// one connection.
func (tr *Trace) NewTransaction() int64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.txID++
	return tr.txID
}

// Keys returns a copy of the arrays recorded so far, each non-nil, and
// the zero values of the other keys.
func (tr *Trace) Keys() TestKeys {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	k := TestKeys{
		Queries:        slices.Clone(tr.keys.Queries),
		TCPConnect:     slices.Clone(tr.keys.TCPConnect),
		TLSHandshakes:  slices.Clone(tr.keys.TLSHandshakes),
		QUICHandshakes: slices.Clone(tr.keys.QUICHandshakes),
		Requests:       slices.Clone(tr.keys.Requests),
		NetworkEvents:  slices.Clone(tr.keys.NetworkEvents),
	}
	k.Queries = nonNil(k.Queries)
	k.TCPConnect = nonNil(k.TCPConnect)
	k.TLSHandshakes = nonNil(k.TLSHandshakes)
	k.QUICHandshakes = nonNil(k.QUICHandshakes)
	k.Requests = nonNil(k.Requests)
	k.NetworkEvents = nonNil(k.NetworkEvents)
	return k
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func tags(t []string) []string {
	if len(t) == 0 {
		return []string{}
	}
	return slices.Clone(t)
}

// TCPConnect records a TCP connect to addr ("ip:port") that began at t0
// and ended now with err, and returns the failure string.
func (tr *Trace) TCPConnect(tx int64, addr string, t0 time.Time, err error, tag ...string) string {
	t := tr.now()
	failure := Classify(err)
	host, port := SplitAddr(addr)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.keys.TCPConnect = append(tr.keys.TCPConnect, TCPConnect{
		IP:   host,
		Port: port,
		Status: TCPConnectStatus{
			Failure: Str(failure),
			Success: err == nil,
		},
		T0:            tr.Since(t0),
		T:             tr.Since(t),
		Tags:          tags(tag),
		TransactionID: tx,
	})
	tr.keys.NetworkEvents = append(tr.keys.NetworkEvents, NetworkEvent{
		Address: addr, Failure: Str(failure), Operation: OpConnect, Proto: "tcp",
		T0: tr.Since(t0), T: tr.Since(t), TransactionID: tx, Tags: tags(tag),
	})
	return failure
}

// Handshake describes one TLS or QUIC handshake for TLSHandshake and
// QUICHandshake.
type Handshake struct {
	Address    string
	ServerName string
	ALPN       []string
	NoVerify   bool
	Start      time.Time
	// State is the connection state after a successful handshake, or nil.
	State *tls.ConnectionState
	Err   error
	Tags  []string
}

func (tr *Trace) handshake(tx int64, network string, h Handshake, failure string) TLSHandshake {
	t := tr.now()
	e := TLSHandshake{
		Network:          network,
		Address:          h.Address,
		Failure:          Str(failure),
		NoTLSVerify:      h.NoVerify,
		PeerCertificates: []BinaryData{},
		ServerName:       h.ServerName,
		T0:               tr.Since(h.Start),
		T:                tr.Since(t),
		Tags:             tags(h.Tags),
		TransactionID:    tx,
	}
	if h.State != nil {
		e.CipherSuite = tls.CipherSuiteName(h.State.CipherSuite)
		e.NegotiatedProtocol = h.State.NegotiatedProtocol
		e.TLSVersion = tlsVersion(h.State.Version)
		for _, c := range h.State.PeerCertificates {
			e.PeerCertificates = append(e.PeerCertificates, BinaryData(c.Raw))
		}
	}
	return e
}

// TLSHandshake records a TLS handshake and returns its failure string.
func (tr *Trace) TLSHandshake(tx int64, h Handshake) string {
	failure := ClassifyTLS(h.Err)
	e := tr.handshake(tx, "tcp", h, failure)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.keys.TLSHandshakes = append(tr.keys.TLSHandshakes, e)
	tr.keys.NetworkEvents = append(tr.keys.NetworkEvents, NetworkEvent{
		Address: h.Address, Failure: Str(failure), Operation: OpTLSHandshake, Proto: "tcp",
		T0: e.T0, T: e.T, TransactionID: tx, Tags: tags(h.Tags),
	})
	return failure
}

// QUICHandshake records a QUIC handshake and returns its failure string.
func (tr *Trace) QUICHandshake(tx int64, h Handshake) string {
	failure := ClassifyQUIC(h.Err)
	e := tr.handshake(tx, "udp", h, failure)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.keys.QUICHandshakes = append(tr.keys.QUICHandshakes, e)
	tr.keys.NetworkEvents = append(tr.keys.NetworkEvents, NetworkEvent{
		Address: h.Address, Failure: Str(failure), Operation: OpQUICHandshake, Proto: "udp",
		T0: e.T0, T: e.T, TransactionID: tx, Tags: tags(h.Tags),
	})
	return failure
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	case 0:
		return ""
	}
	return "TLS_VERSION_UNKNOWN"
}

// Event records a network event: operation op on addr over proto that
// began at t0 and ended now, moving n bytes, with err. It returns the
// failure string, classified by Classify.
func (tr *Trace) Event(tx int64, op, proto, addr string, n int, t0 time.Time, err error, tag ...string) string {
	return tr.EventFailure(tx, op, proto, addr, n, t0, Classify(err), tag...)
}

// EventFailure is Event with a failure string already classified.
func (tr *Trace) EventFailure(tx int64, op, proto, addr string, n int, t0 time.Time, failure string, tag ...string) string {
	t := tr.now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.keys.NetworkEvents = append(tr.keys.NetworkEvents, NetworkEvent{
		Address: addr, Failure: Str(failure), NumBytes: int64(n), Operation: op, Proto: proto,
		T0: tr.Since(t0), T: tr.Since(t), TransactionID: tx, Tags: tags(tag),
	})
	return failure
}

// AddQuery records a DNS lookup. Its T0 and T are set from t0 and now.
func (tr *Trace) AddQuery(tx int64, q Query, t0 time.Time) {
	t := tr.now()
	q.T0, q.T, q.TransactionID = tr.Since(t0), tr.Since(t), tx
	q.Tags = tags(q.Tags)
	if q.Answers == nil {
		q.Answers = []Answer{}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.keys.Queries = append(tr.keys.Queries, q)
}

// RoundTrip describes one HTTP round trip for AddRequest.
type RoundTrip struct {
	Network, Address string
	Request          *http.Request
	Response         *http.Response
	// Body is the start of the response body that was read, and
	// BodyLength how many bytes of it were read in all.
	Body       []byte
	BodyLength int64
	Truncated  bool
	Failure    string
	Start      time.Time
	Tags       []string
}

// AddRequest records an HTTP round trip and its response, if any.
func (tr *Trace) AddRequest(tx int64, rt RoundTrip) {
	t := tr.now()
	e := Request{
		Network:       rt.Network,
		Address:       rt.Address,
		Failure:       Str(rt.Failure),
		T0:            tr.Since(rt.Start),
		T:             tr.Since(t),
		Tags:          tags(rt.Tags),
		TransactionID: tx,
	}
	if r := rt.Request; r != nil {
		e.Request = HTTPRequest{
			HeadersList: headersList(r.Header),
			Headers:     headersMap(r.Header),
			Method:      r.Method,
			Transport:   "tcp",
			URL:         r.URL.String(),
		}
		if r.URL.Scheme == "https" {
			e.ALPN = "http/1.1"
		}
	} else {
		e.Request = HTTPRequest{HeadersList: []Header{}, Headers: map[string]MaybeBinary{}}
	}
	if r := rt.Response; r != nil {
		e.Response = HTTPResponse{
			Body:            MaybeBinary(rt.Body),
			BodyIsTruncated: rt.Truncated,
			BodyLength:      rt.BodyLength,
			Code:            int64(r.StatusCode),
			HeadersList:     headersList(r.Header),
			Headers:         headersMap(r.Header),
		}
		if r.TLS != nil {
			e.ALPN = r.TLS.NegotiatedProtocol
		}
	} else {
		e.Response = HTTPResponse{HeadersList: []Header{}, Headers: map[string]MaybeBinary{}}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.keys.Requests = append(tr.keys.Requests, e)
}

func headersList(h http.Header) []Header {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := []Header{}
	for _, k := range keys {
		for _, v := range h[k] {
			out = append(out, Header{MaybeBinary(k), MaybeBinary(v)})
		}
	}
	return out
}

func headersMap(h http.Header) map[string]MaybeBinary {
	out := make(map[string]MaybeBinary, len(h))
	for k, vs := range h {
		if len(vs) > 0 {
			out[k] = MaybeBinary(vs[0])
		}
	}
	return out
}

// SplitAddr splits "host:port" into the host and the numeric port (0 if
// there is none or it is not a number).
func SplitAddr(addr string) (string, int) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return host, 0
	}
	return host, port
}
