package metrics

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// contentType is the Prometheus text exposition format this package writes.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

// Metric types, as on TYPE lines.
const (
	gaugeType     = "gauge"
	counterType   = "counter"
	histogramType = "histogram"
)

// family is one metric family of a scrape: its HELP and TYPE lines and its
// series.
type family struct {
	name, typ, help string
	series          []series
}

// series is one label set of a family. labels are name/value pairs, names
// in alphabetical order. A histogram series has hist set and no value.
type series struct {
	labels []string
	value  float64
	hist   *histogram
}

// add appends a series with value v; labels are name/value pairs.
func (f *family) add(v float64, labels ...string) {
	f.series = append(f.series, series{labels: labels, value: v})
}

// writeText renders fams in the text format: families sorted by name, each
// once with its HELP and TYPE, its series sorted by label values. Families
// without series are left out, as a vector nobody has used yet.
func writeText(buf *bytes.Buffer, fams []*family) {
	slices.SortStableFunc(fams, func(a, b *family) int { return strings.Compare(a.name, b.name) })
	for _, f := range fams {
		if len(f.series) == 0 {
			continue
		}
		slices.SortStableFunc(f.series, func(a, b series) int { return slices.Compare(a.labels, b.labels) })
		buf.WriteString("# HELP ")
		buf.WriteString(f.name)
		buf.WriteByte(' ')
		helpEscaper.WriteString(buf, f.help)
		buf.WriteString("\n# TYPE ")
		buf.WriteString(f.name)
		buf.WriteByte(' ')
		buf.WriteString(f.typ)
		buf.WriteByte('\n')
		for _, s := range f.series {
			if s.hist == nil {
				writeSample(buf, f.name, "", s.labels, "", s.value)
				continue
			}
			h := s.hist
			var cumulative uint64
			for i, le := range bucketLabels {
				cumulative += h.counts[i]
				writeSample(buf, f.name, "_bucket", s.labels, le, float64(cumulative))
			}
			writeSample(buf, f.name, "_bucket", s.labels, "+Inf", float64(h.count))
			writeSample(buf, f.name, "_sum", s.labels, "", h.sum)
			writeSample(buf, f.name, "_count", s.labels, "", float64(h.count))
		}
	}
}

// bucketLabels are the le label values of buckets, formatted once.
var bucketLabels = func() []string {
	out := make([]string, len(buckets))
	for i, b := range buckets {
		out[i] = formatFloat(b)
	}
	return out
}()

// writeSample writes one line: name+suffix{labels,le="le"} value, without
// the le label when le is empty. It writes piece by piece: a scrape comes
// every few seconds for the pod's life, and its garbage is idle memory.
func writeSample(buf *bytes.Buffer, name, suffix string, labels []string, le string, v float64) {
	buf.WriteString(name)
	buf.WriteString(suffix)
	if len(labels) > 0 || le != "" {
		sep := byte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			buf.WriteByte(sep)
			sep = ','
			buf.WriteString(labels[i])
			buf.WriteString(`="`)
			writeLabelValue(buf, labels[i+1])
			buf.WriteByte('"')
		}
		if le != "" {
			buf.WriteByte(sep)
			buf.WriteString(`le="`)
			buf.WriteString(le)
			buf.WriteByte('"')
		}
		buf.WriteByte('}')
	}
	buf.WriteByte(' ')
	buf.WriteString(formatFloat(v))
	buf.WriteByte('\n')
}

var (
	// helpEscaper escapes HELP text: backslash and newline.
	helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	// labelEscaper escapes label values: backslash, double quote, newline.
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
)

// writeLabelValue writes v escaped for a label value. Invalid UTF-8 (a
// package header can hold anything) becomes U+FFFD: a scraper rejects the
// whole scrape for one bad byte.
func writeLabelValue(buf *bytes.Buffer, v string) {
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, string(utf8.RuneError))
	}
	labelEscaper.WriteString(buf, v)
}

// formatFloat writes v as the format wants it: shortest form, and +Inf,
// -Inf, NaN spelt so.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
