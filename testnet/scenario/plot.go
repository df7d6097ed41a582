package scenario

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Draw writes the matrix's pictures into dir, each as SVG and PNG:
// goodput (Mbit/s per transport, grouped by profile) and, with the
// failover scenario, paths (the client router's best and active paths
// over time). It returns the files written.
func (m *Matrix) Draw(dir string) ([]string, error) {
	var files []string
	p, err := m.goodputPlot()
	if err != nil {
		return nil, err
	}
	for _, ext := range []string{"svg", "png"} {
		f := filepath.Join(dir, "goodput."+ext)
		if err := p.Save(vg.Length(max(10, 1.6*float64(len(m.Profiles))))*vg.Inch, 6*vg.Inch, f); err != nil {
			return files, fmt.Errorf("scenario: draw: %w", err)
		}
		files = append(files, f)
	}
	if m.Paths == nil || len(m.Paths.Chats) == 0 {
		return files, nil
	}
	p, err = PathsPlot(m.Paths)
	if err != nil {
		return files, err
	}
	for _, ext := range []string{"svg", "png"} {
		f := filepath.Join(dir, "paths."+ext)
		if err := p.Save(10*vg.Inch, 4*vg.Inch, f); err != nil {
			return files, fmt.Errorf("scenario: draw: %w", err)
		}
		files = append(files, f)
	}
	return files, nil
}

// goodputPlot draws one bar per transport in each profile's group.
func (m *Matrix) goodputPlot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Goodput through the gateway per transport and censor profile (%d × %d B messages)", m.Count, m.Size)
	p.Y.Label.Text = "goodput (Mbit/s)"
	p.Y.Min = 0
	n := len(m.Transports)
	w := vg.Points(max(2, 60/float64(max(n, 1))))
	top := 1.0
	for _, c := range m.Cells {
		top = max(top, c.GoodputMbps)
	}
	p.Y.Max = 1.2 * top // room for the legend
	for i, t := range m.Transports {
		vals := make(plotter.Values, len(m.Profiles))
		for j, pr := range m.Profiles {
			if c, ok := m.Cell(pr, t); ok {
				vals[j] = c.GoodputMbps
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, fmt.Errorf("scenario: draw: %w", err)
		}
		bars.LineStyle.Width = 0
		bars.Color = transportColor(t, i)
		bars.Offset = vg.Length(float64(i)-float64(n-1)/2) * w
		p.Add(bars)
		p.Legend.Add(t, bars)
	}
	p.Legend.Top = true
	p.Legend.Left = false
	p.NominalX(m.Profiles...)
	p.X.Tick.Label.Rotation = math.Pi / 8
	p.X.Tick.Label.XAlign = draw.XRight
	p.Add(plotter.NewGrid())
	return p, nil
}

// transportColor gives each known transport the same color in every
// picture; others take the i-th color of the palette.
func transportColor(t string, i int) color.Color {
	if k := slices.Index(Transports, t); k >= 0 {
		return plotutil.Color(k)
	}
	return plotutil.Color(len(Transports) + i)
}

// PathsPlot draws the path choices of a report's first chat: for each
// transport, a large mark where its path was the best, a small one where
// it was active but not best, and a dashed line at each timeline event.
func PathsPlot(rep *Report) (*plot.Plot, error) {
	if len(rep.Chats) == 0 {
		return nil, fmt.Errorf("scenario: draw: %s has no chat", rep.Scenario)
	}
	c := rep.Chats[0]
	var ts []string
	for _, s := range c.Samples {
		for _, pi := range s.Paths {
			if !slices.Contains(ts, pi.Transport) {
				ts = append(ts, pi.Transport)
			}
		}
	}
	slices.Sort(ts)
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Client router paths over time: %s (large: best path, small: active)", rep.Scenario)
	p.X.Label.Text = "seconds since the start of the run"
	maxT := 0.0
	for i, t := range ts {
		var best, active plotter.XYs
		for _, s := range c.Samples {
			maxT = max(maxT, s.T)
			for _, pi := range s.Paths {
				if pi.Transport != t {
					continue
				}
				switch {
				case pi.Best:
					best = append(best, plotter.XY{X: s.T, Y: float64(i)})
				case pi.State == "active":
					active = append(active, plotter.XY{X: s.T, Y: float64(i)})
				}
			}
		}
		for _, set := range []struct {
			xys    plotter.XYs
			radius vg.Length
		}{{active, vg.Points(1.5)}, {best, vg.Points(4)}} {
			if len(set.xys) == 0 {
				continue
			}
			sc, err := plotter.NewScatter(set.xys)
			if err != nil {
				return nil, fmt.Errorf("scenario: draw: %w", err)
			}
			sc.GlyphStyle.Color = transportColor(t, i)
			sc.GlyphStyle.Radius = set.radius
			sc.GlyphStyle.Shape = draw.CircleGlyph{}
			p.Add(sc)
		}
	}
	for _, e := range rep.Timeline {
		l, err := plotter.NewLine(plotter.XYs{{X: e.At, Y: -0.5}, {X: e.At, Y: float64(len(ts)) - 0.5}})
		if err != nil {
			return nil, fmt.Errorf("scenario: draw: %w", err)
		}
		l.LineStyle.Color = color.Gray{Y: 128}
		l.LineStyle.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(l)
	}
	p.NominalY(ts...)
	p.X.Min, p.X.Max = 0, math.Max(1, maxT)
	p.Add(plotter.NewGrid())
	return p, nil
}
