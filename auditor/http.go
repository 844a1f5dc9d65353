package auditor

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// CheckResponse is the JSON body of /check.
type CheckResponse struct {
	// Report is the last completed report (absent before the first).
	Report *Report `json:"report,omitempty"`
	// Error is set when the most recent audit could not complete; ErrorTime
	// is when that audit started.
	Error     string     `json:"error,omitempty"`
	ErrorTime *time.Time `json:"error_time,omitempty"`
}

// CheckHandler serves /check: the last report, as JSON when the request's
// Accept header mentions json or the query has format=json, as text
// otherwise. The status is 200 when the most recent audit completed and
// found the standby consistent, 409 (Conflict) when it found drift, 503
// when no audit has completed yet or the most recent one failed (the body
// then carries the error and the previous report, if any): a blackbox
// probe alerts on anything but 2xx.
func (a *Auditor) CheckHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var resp CheckResponse
		status := http.StatusOK
		if rep := a.last.Load(); rep != nil {
			resp.Report = rep
			if !rep.Consistent {
				status = http.StatusConflict
			}
		}
		if f := a.lastErr.Load(); f != nil {
			t := f.time.UTC()
			resp.Error, resp.ErrorTime, status = f.err.Error(), &t, http.StatusServiceUnavailable
		} else if resp.Report == nil {
			resp.Error, status = "no audit has completed yet", http.StatusServiceUnavailable
		}
		if r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "json") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(resp) // the client went away
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		if resp.Error != "" {
			if resp.ErrorTime != nil {
				fmt.Fprintf(w, "last audit at %s could not complete: %s\n", resp.ErrorTime.Format(time.RFC3339), resp.Error)
			} else {
				fmt.Fprintf(w, "%s\n", resp.Error)
			}
			if resp.Report != nil {
				fmt.Fprintf(w, "\nprevious report:\n")
			}
		}
		if resp.Report != nil {
			_ = resp.Report.WriteText(w) // the client went away
		}
	})
}
