package main

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/commucat/commucat/plugins"
)

// The transport plugins' metrics on the gateway's /metrics.
var (
	descPluginUp       = prometheus.NewDesc("commucat_plugin_up", "1 if the transport plugin's process runs and answered the scrape's stats call, else 0.", []string{"plugin"}, nil)
	descPluginRestarts = prometheus.NewDesc("commucat_plugin_restarts_total", "Times the gateway restarted the plugin's process.", []string{"plugin"}, nil)
	descPluginFlows    = prometheus.NewDesc("commucat_plugin_open_flows", "Connections open through the plugin, as its process counts them.", []string{"plugin"}, nil)
	descPluginFlowsTot = prometheus.NewDesc("commucat_plugin_flows_total", "Connections through the plugin's current process.", []string{"plugin"}, nil)
	descPluginDials    = prometheus.NewDesc("commucat_plugin_dials_total", "Dials through the plugin's current process.", []string{"plugin"}, nil)
	descPluginDialErrs = prometheus.NewDesc("commucat_plugin_dial_errors_total", "Dials through the plugin's current process that failed.", []string{"plugin"}, nil)
	descPluginAccepts  = prometheus.NewDesc("commucat_plugin_accepts_total", "Connections the plugin's current process accepted.", []string{"plugin"}, nil)
	descPluginBytes    = prometheus.NewDesc("commucat_plugin_bytes_total", "Bytes of finished connections through the plugin's current process, by direction (received: from the network to the gateway).", []string{"plugin", "direction"}, nil)
	descPluginDgrams   = prometheus.NewDesc("commucat_plugin_datagrams_total", "Datagrams through the plugin's current process, by direction (received: from the network to the gateway).", []string{"plugin", "direction"}, nil)
	descRingFlows      = prometheus.NewDesc("commucat_plugin_ring_flows", "Connections through plugins whose bytes go through shared-memory rings now.", nil, nil)
	descRingFlowsLimit = prometheus.NewDesc("commucat_plugin_ring_flows_limit", "How many connections may have rings at once (plugins.yaml ring_flows; 0: off).", nil, nil)
)

// pluginScrapeTimeout bounds the stats calls of one scrape: a plugin that
// does not answer in time is reported down, and holds up nothing else.
const pluginScrapeTimeout = 2 * time.Second

// pluginCollector exports the counters of every plugin of a host,
// asking each plugin at every scrape.
type pluginCollector struct{ h *plugins.Host }

func (c pluginCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPluginUp, descPluginRestarts, descPluginFlows, descPluginFlowsTot, descPluginDials, descPluginDialErrs, descPluginAccepts, descPluginBytes, descPluginDgrams, descRingFlows, descRingFlowsLimit} {
		ch <- d
	}
}

func (c pluginCollector) Collect(ch chan<- prometheus.Metric) {
	names := c.h.Names()
	type result struct {
		st  plugins.Stats
		err error
	}
	results := make([]result, len(names))
	ctx, cancel := context.WithTimeout(context.Background(), pluginScrapeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			st, err := c.h.Stats(ctx, name)
			results[i] = result{st, err}
		})
	}
	wg.Wait()
	metric := func(d *prometheus.Desc, t prometheus.ValueType, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, float64(v), labels...)
	}
	for i, name := range names {
		st, err := results[i].st, results[i].err
		metric(descPluginRestarts, prometheus.CounterValue, uint64(st.Restarts), name)
		if err != nil {
			metric(descPluginUp, prometheus.GaugeValue, 0, name)
			continue
		}
		metric(descPluginUp, prometheus.GaugeValue, 1, name)
		metric(descPluginFlows, prometheus.GaugeValue, st.FlowsOpen, name)
		metric(descPluginFlowsTot, prometheus.CounterValue, st.FlowsTotal, name)
		metric(descPluginDials, prometheus.CounterValue, st.Dials, name)
		metric(descPluginDialErrs, prometheus.CounterValue, st.DialErrors, name)
		metric(descPluginAccepts, prometheus.CounterValue, st.Accepts, name)
		metric(descPluginBytes, prometheus.CounterValue, st.BytesToHost, name, "received")
		metric(descPluginBytes, prometheus.CounterValue, st.BytesFromHost, name, "sent")
		metric(descPluginDgrams, prometheus.CounterValue, st.DatagramsToHost, name, "received")
		metric(descPluginDgrams, prometheus.CounterValue, st.DatagramsFromHost, name, "sent")
	}
	inUse, limit := c.h.RingFlows()
	metric(descRingFlows, prometheus.GaugeValue, uint64(inUse))
	metric(descRingFlowsLimit, prometheus.GaugeValue, uint64(limit))
}
