package probes

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/commucat/commucat/probes/ooni"
)

// WriteTable writes outs as a table for people, one line per probe:
// target, probe, result, blocking, failure (with the failed operation)
// and details.
func WriteTable(w io.Writer, outs []Outcome) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tPROBE\tRESULT\tBLOCKING\tFAILURE\tDETAILS")
	for _, o := range outs {
		result, blocking, failure, details := "skipped", "-", "-", o.Skipped
		if o.Skipped == "" && o.Result.Keys != nil {
			tk := o.Result.Keys.Base()
			result = o.Result.State.String()
			blocking = tk.Blocking.String()
			if f := tk.FailureString(); f != "" {
				failure = f
				if op := ooni.Deref(tk.FailedOperation); op != "" {
					failure += " (" + op + ")"
				}
			}
			details = o.Result.Details
		}
		if details == "" {
			details = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(o.Input), cell(o.Probe), result, blocking, cell(failure), cell(details))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("probes: write table: %w", err)
	}
	return nil
}

// cell keeps a value on one line and out of the column separators.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' || r < ' ' {
			return ' '
		}
		return r
	}, s)
}
