// Package ops is the gateway's operations endpoint: /livez, /readyz and
// /metrics (Prometheus) on an HTTP listener that operators keep private
// (loopback by default). Errors are RFC 9457 problem details.
//
// A Server is started once with Run and stops when Run's context ends.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/commucat/commucat/core/gateway"
)

// Config configures a Server.
type Config struct {
	// Addr is the address to listen on, such as 127.0.0.1:9464.
	Addr string
	// Ready reports whether the gateway can serve (storage reachable,
	// listeners up); nil means always ready.
	Ready func(ctx context.Context) error
	// Stats snapshots the gateway for /metrics; nil exports only the Go
	// runtime and process metrics.
	Stats func() gateway.Stats
	// Collectors export more metrics, such as the transport plugins'.
	Collectors []prometheus.Collector
	// Logger; nil discards.
	Logger *slog.Logger
}

// Server serves the operations endpoint.
type Server struct {
	cfg Config
	reg *prometheus.Registry
	log *slog.Logger
	ln  net.Listener
}

// New binds cfg.Addr and returns the Server; Run serves it.
func New(cfg Config) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.Stats != nil {
		reg.MustRegister(&collector{stats: cfg.Stats})
	}
	for _, c := range cfg.Collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ops: metrics: %w", err)
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ops: listen %s: %w", cfg.Addr, err)
	}
	return &Server{cfg: cfg, reg: reg, log: log.With("component", "ops"), ln: ln}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Handler returns the endpoint's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := s.cfg.Ready(ctx); err != nil {
				s.log.Warn("not ready", "err", err)
				problem(w, r, http.StatusServiceUnavailable, "Not ready", err.Error())
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem(w, r, http.StatusNotFound, "Not found", "this endpoint serves /livez, /readyz and /metrics")
	})
	return mux
}

// Run serves until ctx ends, then shuts down within 5 seconds.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		if e := srv.Serve(s.ln); e != nil && !errors.Is(e, http.ErrServerClosed) {
			err = e
		}
	})
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	wg.Wait()
	return err
}

// problem writes an RFC 9457 problem details response.
func problem(w http.ResponseWriter, r *http.Request, status int, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"type":     "about:blank",
		"title":    title,
		"status":   status,
		"detail":   detail,
		"instance": r.URL.Path,
	})
}

var (
	descHandshakes = prometheus.NewDesc("commucat_gateway_handshakes_total", "Connections by the outcome of their first message.", []string{"result"}, nil)
	descSessions   = prometheus.NewDesc("commucat_gateway_sessions", "Live sessions.", nil, nil)
	descPaths      = prometheus.NewDesc("commucat_gateway_paths", "Paths of live sessions, by transport and state.", []string{"transport", "state"}, nil)
	descRTT        = prometheus.NewDesc("commucat_gateway_path_srtt_seconds", "Mean smoothed RTT of live paths, by transport.", []string{"transport"}, nil)
	descLoss       = prometheus.NewDesc("commucat_gateway_path_loss_ratio", "Mean loss estimate of live paths, by transport.", []string{"transport"}, nil)
	descBytes      = prometheus.NewDesc("commucat_gateway_path_bytes", "Bytes carried by live paths, by transport and direction.", []string{"transport", "direction"}, nil)
	descRetrans    = prometheus.NewDesc("commucat_gateway_retransmits", "Frames re-sent by live sessions (after a path died or stalled).", nil, nil)
	descRepaired   = prometheus.NewDesc("commucat_gateway_fec_repaired", "Records repaired by FEC in live sessions.", nil, nil)
	descDatagrams  = prometheus.NewDesc("commucat_gateway_path_datagrams", "Datagrams carried by live paths, by transport and direction (missing: numbers below the highest received that never arrived).", []string{"transport", "direction"}, nil)
	descDgLoss     = prometheus.NewDesc("commucat_gateway_path_datagram_loss_ratio", "Mean datagram loss the clients report for live datagram paths, by transport.", []string{"transport"}, nil)
)

// collector exports a gateway.Stats snapshot at each scrape.
type collector struct{ stats func() gateway.Stats }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHandshakes, descSessions, descPaths, descRTT, descLoss, descBytes, descRetrans, descRepaired, descDatagrams, descDgLoss} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for result, v := range map[string]uint64{
		"ok": st.Handshakes, "failed": st.HandshakeFailures, "rate_limited": st.RateLimited,
		"overloaded": st.Overloaded, "path_join": st.Joins,
	} {
		ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.CounterValue, float64(v), result)
	}
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(len(st.Sessions)))
	type agg struct {
		n             int
		rtt, loss     float64
		sent, receive uint64
		dg            int // paths that carry datagrams
		dgLoss        float64
		dgSent        uint64
		dgRecv        uint64
		dgMissing     uint64
	}
	paths := map[[2]string]int{}
	byT := map[string]*agg{}
	var retrans, repaired uint64
	for _, s := range st.Sessions {
		retrans += s.Retransmits
		repaired += s.Repaired
		for _, p := range s.Paths {
			paths[[2]string{p.Transport, p.State.String()}]++
			a := byT[p.Transport]
			if a == nil {
				a = new(agg)
				byT[p.Transport] = a
			}
			a.n++
			a.rtt += p.SRTT.Seconds()
			a.loss += p.Loss
			a.sent += p.BytesSent
			a.receive += p.BytesReceived
			if p.Datagrams {
				a.dg++
				a.dgLoss += p.DatagramLoss
			}
			a.dgSent += p.DatagramsSent
			a.dgRecv += p.DatagramsReceived
			a.dgMissing += p.DatagramsMissing
		}
	}
	for k, n := range paths {
		ch <- prometheus.MustNewConstMetric(descPaths, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for t, a := range byT {
		ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, a.rtt/float64(a.n), t)
		ch <- prometheus.MustNewConstMetric(descLoss, prometheus.GaugeValue, a.loss/float64(a.n), t)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(a.sent), t, "sent")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(a.receive), t, "received")
		if a.dg > 0 || a.dgSent+a.dgRecv > 0 {
			ch <- prometheus.MustNewConstMetric(descDatagrams, prometheus.GaugeValue, float64(a.dgSent), t, "sent")
			ch <- prometheus.MustNewConstMetric(descDatagrams, prometheus.GaugeValue, float64(a.dgRecv), t, "received")
			ch <- prometheus.MustNewConstMetric(descDatagrams, prometheus.GaugeValue, float64(a.dgMissing), t, "missing")
		}
		if a.dg > 0 {
			ch <- prometheus.MustNewConstMetric(descDgLoss, prometheus.GaugeValue, a.dgLoss/float64(a.dg), t)
		}
	}
	ch <- prometheus.MustNewConstMetric(descRetrans, prometheus.GaugeValue, float64(retrans))
	ch <- prometheus.MustNewConstMetric(descRepaired, prometheus.GaugeValue, float64(repaired))
}
