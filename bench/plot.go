package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
)

// series is one named sample of a latency distribution.
type series struct {
	name   string
	values []float64
}

// plotSize is the size of a plot in SVG user units.
const (
	plotW, plotH             = 640, 360
	padL, padR, padT, padB   = 64, 16, 32, 48
	innerW, innerH           = plotW - padL - padR, plotH - padT - padB
	legendRow, legendSwatchW = 16, 14
	charW                    = 7 // width of a digit at font-size 12, a little generous
)

// palette is the series colours, in order; enough for every scenario's
// plot, repeated beyond.
var palette = [...]string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"}

// writeCDF writes an SVG plot of the empirical cumulative distribution of
// each series on a logarithmic x axis (latencies span decades: a lookup
// in microseconds, a failover in seconds), labelled with unit. Values ≤ 0
// are left out of the plot: a logarithmic axis has no place for them.
func writeCDF(w io.Writer, title, unit string, ss []series) error {
	lo, hi := math.Inf(1), math.Inf(-1)
	var plotted []series
	for _, s := range ss {
		var vs []float64
		for _, v := range s.values {
			if v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			continue
		}
		slices.Sort(vs)
		lo, hi = min(lo, vs[0]), max(hi, vs[len(vs)-1])
		plotted = append(plotted, series{s.name, vs})
	}
	if len(plotted) == 0 {
		return fmt.Errorf("plot %q: no positive values", title)
	}
	// The axis spans whole decades around the data.
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi == dlo {
		dhi++
	}
	x := func(v float64) float64 { return padL + (math.Log10(v)-dlo)/(dhi-dlo)*innerW }
	y := func(p float64) float64 { return padT + (1-p)*innerH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(title))
	// Grid and ticks: 1, 2 and 5 of every decade; labels on 1 and 5,
	// except where a label would run into the one before it.
	labelEnd := math.Inf(-1) // right edge of the last label drawn
	for d := dlo; d < dhi+0.5; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > dhi+1e-9 {
				break
			}
			xv := x(v)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", xv, padT, xv, padT+innerH)
			label := tickLabel(v)
			half := float64(len(label)) * charW / 2
			if m != 2 && xv-half > labelEnd+charW {
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", xv, padT+innerH+16, label)
				labelEnd = xv + half
			}
		}
	}
	for _, p := range []float64{0, 0.25, 0.5, 0.75, 0.9, 1} {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", padL, y(p), padL+innerW, y(p))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", padL-6, y(p)+4, p)
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", padL, padT, innerW, innerH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s (log scale)</text>`+"\n", padL+innerW/2, plotH-8, html.EscapeString(unit))
	fmt.Fprintf(&b, `<text x="14" y="%d" text-anchor="middle" transform="rotate(-90 14 %d)">fraction ≤ x</text>`+"\n", padT+innerH/2, padT+innerH/2)
	for i, s := range plotted {
		colour := palette[i%len(palette)]
		// A step function: the fraction of values ≤ v jumps at each value.
		var pts strings.Builder
		n := float64(len(s.values))
		fmt.Fprintf(&pts, "%.1f,%.1f", x(s.values[0]), y(0))
		for j, v := range s.values {
			fmt.Fprintf(&pts, " %.1f,%.1f %.1f,%.1f", x(v), y(float64(j)/n), x(v), y(float64(j+1)/n))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", colour, pts.String())
		ly := padT + 10 + i*legendRow
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="3" fill="%s"/>`+"\n", padL+10, ly, legendSwatchW, colour)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s (n=%d)</text>`+"\n", padL+10+legendSwatchW+6, ly+5, html.EscapeString(s.name), len(s.values))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// tickLabel prints an axis value without trailing zeros: 0.5, 20, 1000.
func tickLabel(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.4f", v), "0"), ".")
}
